"""The sidecar's gRPC client side: one channel to one or several engines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...v1 import inference_pb2_grpc as pb_grpc


def channel_target(upstreams: list[str]) -> str:
    """One gRPC target for a list of engines.

    A single address (``host:port``, ``unix:path``, ``dns:///name``) is used as
    is; several ``host:port`` addresses become an ``ipv4:``/``ipv6:`` address
    list that gRPC's round_robin policy balances over.
    """
    if not upstreams:
        raise ValueError("at least one upstream engine address is required")
    if len(upstreams) == 1:
        return upstreams[0]
    if any(":" not in u or u.startswith(("unix:", "dns:", "ipv4:", "ipv6:")) for u in upstreams):
        raise ValueError("several upstreams must all be plain host:port addresses")
    scheme = "ipv6" if all(u.startswith("[") for u in upstreams) else "ipv4"
    return f"{scheme}:" + ",".join(upstreams)


@dataclass(frozen=True)
class UpstreamTLS:
    """PEM material to reach engines that serve TLS (with a client cert for mTLS)."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None
    # The gateway flags that read this material again (for worker processes).
    args: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_files(cls, ca: str | None, cert: str | None, key: str | None) -> UpstreamTLS | None:
        if not ca:
            return None
        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        flags = {"--upstream-ca": ca, "--upstream-cert": cert, "--upstream-key": key}
        args = tuple(part for flag, path in flags.items() if path for part in (flag, str(Path(path).resolve())))
        return cls(read(ca), read(cert), read(key), args)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


class Upstream:
    """Stubs over one channel; create inside the event loop that uses them."""

    def __init__(self, upstreams: list[str], max_message_bytes: int,
                 tls: UpstreamTLS | None = None) -> None:
        service_config = {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""},
        }
        target = channel_target(upstreams)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.service_config", json.dumps(service_config)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
        ]
        self.channel = (
            grpc.aio.secure_channel(target, tls.credentials(), options=options)
            if tls is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        self.inference = pb_grpc.InferenceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def serving(self, service: str = "", timeout: float = 2.0) -> bool | None:
        """Whether ``service`` (the engine, or a model id) is serving; None when the engine does not know it."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                            timeout=timeout)
        except grpc.aio.AioRpcError as error:
            return None if service and error.code() == grpc.StatusCode.NOT_FOUND else False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def close(self) -> None:
        await self.channel.close()
