"""Where a decode step's time goes: MLX compute vs Python around it.

Serves the benchmark model in this process (engine + gRPC server; the REST
sidecar as its own process, as `mlxrpc serve` runs it), streams N requests
over gRPC or REST, and splits the engine thread's wall time per step into:
waiting for MLX (``mx.eval``/``.tolist`` inside mlx-lm's step: the compute),
mlx-lm's own Python (building the step's graph, batch bookkeeping), mlxrpc's
per-token request work (detokenizing, stop strings, parsing, logprobs), the
hand-off of chunks to the event loop, and the rest of the core loop. CPU
seconds per thread (engine, event loop: gRPC + protobuf, other threads: MLX's
and BLAS's workers, the request side) and of the sidecar process come from
/proc. On the CPU backend ``mx.async_eval`` computes much of the step itself,
so "MLX" is the time inside both eval calls.

    python -m benchmarks.profile_step [--streams 1 16] [--tokens 128] [--blas auto|bundled]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import bench_model, machine

PROMPT = "{i}. Write a short story about a robot who learns to paint."


class Clock:
    """Seconds spent in named sections, on the engine thread only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.engine_thread: int | None = None
        self.engine_native: int | None = None

    @contextmanager
    def section(self, name: str):
        if threading.get_ident() != self.engine_thread:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def instrument(clock: Clock) -> None:
    """Wraps the functions whose time the report splits (this process only)."""
    import importlib

    import mlx.core as mx

    generate = importlib.import_module("mlx_lm.generate")  # the package re-exports a function of that name

    from mlxrpc.engine import core, output

    def wrap(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            with clock.section(label):
                return original(*args, **kwargs)

        setattr(owner, name, timed)

    real_eval, real_async_eval = mx.eval, mx.async_eval

    class TimedMx:
        """mlx-lm's `mx` with eval timed: the wait for the step's compute."""

        def __getattr__(self, attr):
            return getattr(mx, attr)

        @staticmethod
        def eval(*args, **kwargs):
            with clock.section("mlx_wait"):
                return real_eval(*args, **kwargs)

        @staticmethod
        def async_eval(*args, **kwargs):
            # On the CPU backend much of the compute runs inside this call.
            with clock.section("mlx_wait"):
                return real_async_eval(*args, **kwargs)

    generate.mx = TimedMx()
    wrap(generate.GenerationBatch, "_step", "mlx_lm_decode_step")
    wrap(generate.PromptProcessingBatch, "prompt", "prefill")
    wrap(core.EngineCore, "_step", "core_step")
    wrap(output.OutputProcessor, "on_token", "request_work")
    wrap(core.EngineCore, "_flush", "hand_off")
    original_run = core.EngineCore._run

    def run(self):
        clock.engine_thread = threading.get_ident()
        clock.engine_native = threading.get_native_id()
        return original_run(self)

    core.EngineCore._run = run


def thread_cpu(engine: int | None, loop: int) -> dict[str, float]:
    """CPU seconds of this process's threads: the engine's, the event loop's, all others."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        native = int(task.name)
        name = "engine" if native == engine else "loop" if native == loop else "other"
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def grpc_round(target: str, streams: int, tokens: int, offset: int) -> tuple[int, list[float]]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def one(i: int) -> tuple[int, float]:
            request = pb.GenerateRequest(model="bench")
            request.chat.messages.add(role="user").content.add(text=PROMPT.format(i=i))
            request.stopping.max_tokens, request.stopping.ignore_eos = tokens, True
            request.sampling.temperature = 0.0
            start, first, n = time.perf_counter(), None, 0
            async for message in stub.StreamGenerate(request):
                first = first or time.perf_counter()
                n += len(message.token_ids)
            return n, (first or start) - start

        done = await asyncio.gather(*(one(offset + i) for i in range(streams)))
    return sum(n for n, _ in done), [t for _, t in done]


async def rest_round(base: str, streams: int, tokens: int, offset: int) -> tuple[int, list[float]]:
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> tuple[int, float]:
            body = {"model": "bench", "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
                    "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True}
            start, first, n = time.perf_counter(), None, 0
            async with session.post(f"{base}/v1/chat/completions", json=body) as response:
                async for line in response.content:
                    if line.startswith(b"data: {"):
                        first = first or time.perf_counter()
                        n += 1
            return n, (first or start) - start

        done = await asyncio.gather(*(one(offset + i) for i in range(streams)))
    return sum(n for n, _ in done), [t for _, t in done]


async def measure(streams: list[int], tokens: int, blas: str) -> list[dict]:
    from mlxrpc.serve import start_engine_server
    from mlxrpc.settings import Settings
    from mlxrpc.sidecars import start_sidecars, stop_sidecars

    clock = Clock()
    instrument(clock)
    settings = Settings(model=[f"bench={bench_model()}"], host="127.0.0.1", grpc_port=0, http_port=0,
                        max_num_seqs=32, blas=blas, prompt_cache_size=0)
    server = await start_engine_server(settings)
    sidecars = await start_sidecars(settings, [server.local_target])
    rows = []
    try:
        base = await _sidecar_base(sidecars)
        await grpc_round(f"127.0.0.1:{server.grpc_port}", 1, 8, 10_000)  # warm-up
        for surface in ("grpc", "rest"):
            for n in streams:
                clock.seconds.clear()
                steps0 = server.engine.core.stats.steps
                loop_native = threading.get_native_id()
                cpu0 = thread_cpu(clock.engine_native, loop_native)
                side0 = sum(process_cpu(p.pid) for p in sidecars)
                started = time.perf_counter()
                if surface == "grpc":
                    generated, ttfts = await grpc_round(f"127.0.0.1:{server.grpc_port}", n, tokens, 1000 * n)
                else:
                    generated, ttfts = await rest_round(base, n, tokens, 2000 * n)
                wall = time.perf_counter() - started
                cpu1 = thread_cpu(clock.engine_native, loop_native)
                side1 = sum(process_cpu(p.pid) for p in sidecars)
                steps = server.engine.core.stats.steps - steps0
                rows.append(_row(surface, n, generated, wall, steps, ttfts, dict(clock.seconds),
                                 {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}, side1 - side0))
    finally:
        await stop_sidecars(sidecars, 5)
        await server.stop(5)
    return rows


async def _sidecar_base(sidecars) -> str:
    """The sidecar's port, asked of the OS (it bound port 0)."""
    pid = sidecars[0].pid
    inodes = {link.split("[")[1][:-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
              if (link := os.readlink(fd)).startswith("socket:[")}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
            return f"http://127.0.0.1:{int(parts[1].split(':')[1], 16)}"
    raise RuntimeError("the sidecar's port was not found")


def _row(surface: str, streams: int, generated: int, wall: float, steps: int, ttfts: list[float],
         sections: dict[str, float], cpu: dict[str, float], sidecar_cpu: float) -> dict:
    per_step = {k: v / max(steps, 1) * 1000 for k, v in sections.items()}
    decode = per_step.get("mlx_lm_decode_step", 0.0)
    wait = per_step.get("mlx_wait", 0.0)
    core_step = per_step.get("core_step", 0.0)
    return {
        "surface": surface, "streams": streams, "tokens_per_s": generated / wall,
        "ttft_p50_ms": statistics.median(ttfts) * 1000, "steps": steps,
        "step_ms": wall / max(steps, 1) * 1000,
        "mlx_wait_ms": wait, "mlx_lm_python_ms": max(decode - wait, 0.0),
        "prefill_ms": per_step.get("prefill", 0.0),
        "request_work_ms": per_step.get("request_work", 0.0),
        "hand_off_ms": per_step.get("hand_off", 0.0),
        "core_other_ms": max(core_step - decode - per_step.get("prefill", 0.0)
                             - per_step.get("request_work", 0.0), 0.0),
        "cpu_engine_s": cpu.get("engine", 0.0),
        "cpu_loop_s": cpu.get("loop", 0.0),
        "cpu_request_side_s": cpu.get("other", 0.0),
        "cpu_sidecar_s": sidecar_cpu, "wall_s": wall,
    }


def table(rows: list[dict]) -> str:
    head = ("| surface | streams | tok/s | TTFT p50 ms | step ms | MLX | mlx-lm Python | prefill | "
            "mlxrpc per-token | hand-off | core other | CPU s: engine / event loop (gRPC) / other threads / sidecar |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['surface']} | {r['streams']} | {r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | "
            f"{r['step_ms']:.2f} | {r['mlx_wait_ms']:.2f} | {r['mlx_lm_python_ms']:.2f} | {r['prefill_ms']:.2f} | "
            f"{r['request_work_ms']:.3f} | {r['hand_off_ms']:.3f} | {r['core_other_ms']:.3f} | "
            f"{r['cpu_engine_s']:.1f} / {r['cpu_loop_s']:.1f} / {r['cpu_request_side_s']:.1f} / "
            f"{r['cpu_sidecar_s']:.1f} (of {r['wall_s']:.1f} s) |")
    return "\n".join(lines)


def _with_blas(choice: str) -> None:
    """Re-executes this benchmark with the chosen BLAS preloaded, as `mlxrpc serve` does itself."""
    from mlxrpc.blas import ACTIVE_ENV, find_library

    if os.environ.get(ACTIVE_ENV) is not None:
        return
    library = find_library(choice)
    env = {**os.environ, ACTIVE_ENV: library or ""}
    if library:
        env["LD_PRELOAD"] = ":".join(p for p in (library, os.environ.get("LD_PRELOAD")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.profile_step", *sys.argv[1:]], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--blas", default="auto")
    args = parser.parse_args()
    _with_blas(args.blas)
    rows = asyncio.run(measure(args.streams, args.tokens, args.blas))
    blas = os.environ.get("MLXRPC_BLAS_ACTIVE") or "bundled"
    print(f"# Decode step profile ({machine()}, {args.tokens} tokens/stream, BLAS {blas})")
    print("Per-step columns are milliseconds per engine step (one token for every running stream).\n")
    print(table(rows))


if __name__ == "__main__":
    main()
