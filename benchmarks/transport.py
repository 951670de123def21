"""Transport ceiling: streamed tokens/s the gRPC server and the SSE sidecar can
carry when the engine costs nothing (a stand-in that emits tokens instantly).

The real servicer, gRPC server and sidecar run in-process on loopback; only
the engine is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import grpc

from mlxrpc.engine.handle import RequestHandle
from mlxrpc.engine.registry import LoadedModel, ModelRegistry
from mlxrpc.engine.types import (
    Chunk,
    Finish,
    GenerationRequest,
    ModelDescription,
    ModelKind,
    StopReason,
    Timings,
    Usage,
)
from mlxrpc.metrics import Metrics
from mlxrpc.settings import Settings
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import machine
from .fair import median, rotated, versions

MODEL = "zero"
TOKEN_TEXT = " tok"


class ZeroCostEngine:
    """The part of ``Engine``'s public interface the servicer and server use, with free tokens.

    What the servicer reads is the real thing: a ``ModelRegistry`` holding one
    text model (so unknown names fail as they do in the engine), ``Metrics``,
    and ``generate``, the engine's one seam, streaming ready chunks through a
    real ``RequestHandle``. Only token production is stood in for: a producer
    task plays the engine thread, giving one token to every running request per
    "step", as the real loop does.
    """

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.registry = ModelRegistry()
        self.registry.add(LoadedModel(id=MODEL, source="zero-cost stand-in", kind=ModelKind.TEXT, model=None,
                                      tokenizer=None, config={"vocab_size": 8192}, created=0))
        self._running: list[list] = []
        self._producer: asyncio.Task | None = None

    async def generate(self, request: GenerationRequest, owner: str = "",
                       load_images: object = None) -> AsyncIterator[list[Chunk]]:
        request.request_id = request.request_id or "r"
        handle = RequestHandle(asyncio.get_running_loop(), request.request_id, request.model, owner)
        self._running.append([handle, request.stopping.max_tokens or 16])
        if self._producer is None or self._producer.done():
            self._producer = asyncio.get_running_loop().create_task(self._produce())
        try:
            while chunks := await handle.next_chunks():
                yield chunks
        finally:
            handle.close()

    async def _produce(self) -> None:
        while self._running:
            for entry in list(self._running):
                handle, left = entry
                entry[1] = left - 1
                chunk = Chunk(text=TOKEN_TEXT, token_ids=[42])
                if entry[1] == 0 or handle.finished:
                    chunk.finish = Finish(StopReason.LENGTH, Usage(1, 1), Timings())
                    self._running.remove(entry)
                handle.push(chunk)
            await asyncio.sleep(0)

    def describe_models(self) -> list[ModelDescription]:
        # LoadedModel.describe() reads the weights and tokenizer, which the stand-in has none of.
        return [ModelDescription(MODEL, [], ModelKind.TEXT, "", True, 0, 4096, 8192, "", "", [], True)]

    def stop_accepting(self) -> None:
        pass

    def on_models_changed(self, callback: Callable[[], None]) -> None:
        pass


def serve_zero_cost(port_queue: multiprocessing.Queue) -> None:
    """Child process: the real gRPC server over the zero-cost engine."""
    from mlxrpc.service.server import GrpcServer

    async def main() -> None:
        server = GrpcServer(ZeroCostEngine(), Settings())  # type: ignore[arg-type]
        port_queue.put(await server.start("127.0.0.1", 0))
        await server.mark_ready()
        await server.wait()

    asyncio.run(main())


def serve_sidecar(grpc_port: int, port_queue: multiprocessing.Queue) -> None:
    from mlxrpc.gateway.app import create_app, start_app

    async def main() -> None:
        app = create_app([f"127.0.0.1:{grpc_port}"], 1 << 20)
        _, port = await start_app(app, "127.0.0.1", 0)
        port_queue.put(port)
        await asyncio.Event().wait()

    asyncio.run(main())


async def grpc_load(port: int, streams: int, tokens: int) -> tuple[float, float, int]:
    """(tokens/s, messages/s, tokens produced)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def one() -> tuple[int, int]:
            request = pb.GenerateRequest(model=MODEL, text="x")
            request.stopping.max_tokens = tokens
            sizes = [len(m.token_ids) async for m in stub.StreamGenerate(request)]
            return sum(sizes), len(sizes)

        await one()
        start = time.perf_counter()
        done = await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - start
        produced = sum(t for t, _ in done)
        return produced / elapsed, sum(m for _, m in done) / elapsed, produced


async def sse_load(port: int, streams: int, tokens: int) -> tuple[float, int]:
    """(tokens/s, tokens produced)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            n = 0
            body = {"model": MODEL, "prompt": "x", "max_tokens": tokens, "stream": True}
            async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        n += line.count(TOKEN_TEXT.encode())
            return n

        await one()
        start = time.perf_counter()
        produced = sum(await asyncio.gather(*(one() for _ in range(streams))))
        return produced / (time.perf_counter() - start), produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="gRPC and SSE runs, alternating (median reported)")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue = ctx.Queue()
    engine = ctx.Process(target=serve_zero_cost, args=(ports,), daemon=True)
    engine.start()
    grpc_port = ports.get(timeout=60)
    sidecar = ctx.Process(target=serve_sidecar, args=(grpc_port, ports), daemon=True)
    sidecar.start()
    http_port = ports.get(timeout=60)
    runs: dict[str, list[tuple[float, int]]] = {"gRPC": [], "SSE": []}
    messages: list[float] = []
    try:
        for r in range(args.rounds):
            for surface in rotated(list(runs), r):
                if surface == "gRPC":
                    rate, per_second, produced = asyncio.run(grpc_load(grpc_port, args.streams, args.tokens))
                    messages.append(per_second)
                else:
                    rate, produced = asyncio.run(sse_load(http_port, args.streams, args.tokens))
                runs[surface].append((rate, produced))
    finally:
        engine.terminate()
        sidecar.terminate()
    asked = args.streams * args.tokens
    print(f"# transport ceiling, {args.streams} streams x {args.tokens} tokens, zero-cost engine, "
          f"median of {args.rounds} alternating rounds ({machine()}; {versions()})\n")
    print("| surface | streamed tokens/s (min–max) | target | ratio to target | tokens produced / asked per round |")
    print("|---|---|---|---|---|")
    for surface, label, target in (("gRPC", "gRPC StreamGenerate", 20000), ("SSE", "REST SSE via sidecar", 10000)):
        rates = [rate for rate, _ in runs[surface]]
        counts = sorted({produced for _, produced in runs[surface]})
        flag = "" if counts == [asked] else " **short**"
        print(f"| {label} | {median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f}) | {target:,} "
              f"| {median(rates) / target:.2f} | {'/'.join(map(str, counts))} of {asked}{flag} |")
    print(f"\ngRPC messages/s: {median(messages):,.0f} (a consumer that lags gets the backlog "
          "coalesced into one message, so tokens/s exceeds messages/s under load)")


if __name__ == "__main__":
    main()
