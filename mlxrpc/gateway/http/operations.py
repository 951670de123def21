"""The one list a surface exports: its operations, each a route, its models and its error dialect.

``app.py`` serves them and ``openapi.py`` documents them, from the same rows,
so a route cannot be served undocumented or documented unserved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from .errors import OPENAI, Dialect, Handler

# Statuses any route may answer: a bad key, a request the engine refuses or
# cannot take now, a bug, an engine that is down or slow.
COMMON_ERRORS = (401, 429, 500, 502, 503, 504)
# Statuses of a route that takes a JSON body and runs a model.
BODY_ERRORS = (400, 404, 413, 499, *COMMON_ERRORS)


@dataclass(frozen=True)
class Operation:
    """One route: its handler, request body, answer, and the statuses it may answer with."""

    method: str
    # The served path; a ``{name:regex}`` parameter is documented as ``{name}``.
    path: str
    summary: str
    handler: Handler
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    # With a stream model, ``stream: true`` answers server-sent events, one
    # JSON ``data:`` event per model instance (or an in-band error), then ``data: [DONE]``.
    stream: type[BaseModel] | None = None
    # Or named events (Anthropic, Responses): ``event: TYPE`` + ``data:`` JSON of the
    # model whose ``type`` literals hold TYPE (an in-band error is one of them); no [DONE].
    events: tuple[type[BaseModel], ...] = ()
    status: int = 200
    errors: tuple[int, ...] = COMMON_ERRORS
    # A non-JSON answer, e.g. "text/plain" for /metrics.
    media_type: str = "application/json"
    query: tuple[str, ...] = ()
    # Another status with the response body (a health check's 503).
    also: tuple[int, ...] = ()
    # The error body of the API the route belongs to (Anthropic's routes have their own).
    dialect: Dialect = OPENAI
    # Also served without (or, for a root path, with) the /v1 prefix, for clients
    # that join paths to a base URL with or without it; only the path is documented.
    twin: bool = True

    @property
    def documented_path(self) -> str:
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)

    def paths(self) -> list[str]:
        if not self.twin:
            return [self.path]
        return [self.path, self.path.removeprefix("/v1") if self.path.startswith("/v1/") else "/v1" + self.path]


def add_routes(app: web.Application, operations: list[Operation]) -> None:
    for op in operations:
        for path in op.paths():
            if op.method == "get":  # answers HEAD too
                app.router.add_get(path, op.handler)
            else:
                app.router.add_route(op.method.upper(), path, op.handler)
