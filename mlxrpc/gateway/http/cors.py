"""CORS for browser clients of the sidecar (off unless origins are configured)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

# Anthropic's SDK sends its key and version headers from browsers too.
ALLOWED_HEADERS = ("Authorization, Content-Type, X-Request-ID, X-Api-Key, Anthropic-Version, Anthropic-Beta, "
                   "Anthropic-Dangerous-Direct-Browser-Access")
# The origin to allow on this request, for handlers that send headers early (SSE).
CORS_ORIGIN = web.RequestKey("cors_origin", str)
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"


def cors_middleware(origins: list[str]) -> Callable:
    """Answers preflights and marks responses for the allowed origins ("*" = any)."""
    allow_any = "*" in origins

    def allowed(origin: str | None) -> str | None:
        if origin is None:
            return None
        return "*" if allow_any else (origin if origin in origins else None)

    @web.middleware
    async def cors(request: web.Request, handler: Callable) -> web.StreamResponse:
        allow = allowed(request.headers.get("Origin"))
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if allow is None:
                return web.Response(status=403)
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": allow,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            })
        if allow is not None:
            # Streaming responses send their headers early: set them before.
            request[CORS_ORIGIN] = allow
        response = await handler(request)
        if allow is not None and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = allow
            response.headers["Vary"] = "Origin"
        return response

    return cors
