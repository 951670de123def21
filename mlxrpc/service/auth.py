"""API keys on the gRPC surface: ``authorization: Bearer KEY`` metadata.

The REST sidecar forwards the client's Authorization header as that metadata,
so the engine is the one place keys are checked. Health and reflection stay
open (probes and grpcurl need them); GetMetrics too unless told otherwise.
Model management needs the admin key.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

OPEN_METHODS = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
METRICS_METHOD = "/mlxrpc.v1.Inference/GetMetrics"
ADMIN_METHODS = ("/mlxrpc.v1.Inference/LoadModel", "/mlxrpc.v1.Inference/UnloadModel")


def bearer(metadata: tuple | None) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return ""


def _matches(token: str, keys: list[str]) -> bool:
    return any(hmac.compare_digest(token.encode(), k.encode()) for k in keys)


def _deny(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def abort(request, context: grpc.aio.ServicerContext):
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, api_keys: list[str], admin_key: str, metrics_open: bool = True) -> None:
        self._admin = [admin_key] if admin_key else []
        # With API keys configured, the admin key works for ordinary calls too.
        self._keys = [k for k in api_keys if k] + self._admin if any(api_keys) else []
        self._metrics_open = metrics_open

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method.startswith(OPEN_METHODS) or (method == METRICS_METHOD and self._metrics_open):
            return await continuation(details)
        token = bearer(details.invocation_metadata)
        if method in ADMIN_METHODS:
            if not self._admin:
                return _deny(grpc.StatusCode.PERMISSION_DENIED,
                             "model management is disabled: start the server with --admin-key")
            if not _matches(token, self._admin):
                return _deny(grpc.StatusCode.PERMISSION_DENIED, "this call needs the admin key")
            return await continuation(details)
        if self._keys and not _matches(token, self._keys):
            return _deny(grpc.StatusCode.UNAUTHENTICATED,
                         "missing or invalid API key (send 'authorization: Bearer KEY')")
        return await continuation(details)
