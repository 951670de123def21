"""The sidecar's composition root: every surface's operations, served and documented.

Each surface package (openai, anthropic, responses, embeddings, tokenize, mcp,
ops) exports its ``OPERATIONS`` once; this module only puts them together,
with the middlewares (CORS, request ids, one per error dialect), the upstream
connection and the drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from .anthropic import routes as anthropic
from .embeddings import routes as embeddings
from .http.context import STREAMS, UPSTREAM, request_ids
from .http.cors import cors_middleware
from .http.errors import OPENAI
from .http.operations import Operation, add_routes
from .http.upstream import Upstream, UpstreamTLS
from .mcp import routes as mcp
from .openai import routes as openai
from .ops import routes as ops
from .responses import routes as responses
from .tokenize import routes as tokenize

OPERATIONS: list[Operation] = [*openai.OPERATIONS, *ops.OPERATIONS, *anthropic.OPERATIONS, *responses.OPERATIONS,
                               *embeddings.OPERATIONS, *tokenize.OPERATIONS, *mcp.OPERATIONS]

# Seconds a stream cut at the end of the grace period gets to send its error event.
CUT_SECONDS = 2.0


def _error_middlewares(operations: list[Operation]) -> list:
    """OpenAI's dialect answers for any route (aiohttp's 404 and 405 too); each
    other dialect, inside it, for its own routes."""
    dialects = {op.dialect for op in operations} - {OPENAI}
    return [OPENAI.middleware()] + [
        dialect.middleware(frozenset(op.handler for op in operations if op.dialect == dialect))
        for dialect in sorted(dialects, key=lambda d: d.body.__name__)]


def create_app(upstreams: list[str], max_body_bytes: int, tls: UpstreamTLS | None = None,
               cors_origins: list[str] | None = None) -> web.Application:
    middlewares = [request_ids, *_error_middlewares(OPERATIONS)]
    if cors_origins:
        middlewares.insert(0, cors_middleware(cors_origins))
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[STREAMS] = set()

    async def connect(app: web.Application) -> AsyncIterator[None]:
        app[UPSTREAM] = Upstream(upstreams, max_body_bytes, tls)
        yield
        await app[UPSTREAM].close()

    app.cleanup_ctx.append(connect)
    add_routes(app, OPERATIONS)
    return app


async def start_app(app: web.Application, host: str, port: int, *, reuse_port: bool = False,
                    grace: float = 30.0) -> tuple[web.AppRunner, int]:
    """Serves ``app``; returns the runner and the bound port (port 0 picks one).

    ``runner.cleanup()`` then drains: in-flight responses get ``grace`` seconds;
    streams still running then end with an in-band error event and [DONE].
    """

    async def cut_streams_after_grace(app: web.Application) -> None:  # the drain has begun
        def cut() -> None:
            for call in list(app[STREAMS]):
                call.cancel()

        asyncio.get_running_loop().call_later(grace, cut)

    app.on_shutdown.append(cut_streams_after_grace)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=grace + CUT_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound

