"""Distributed serving on a 2-rank ring world over 127.0.0.1 (``--ranks 2``).

Tensor parallel (llama) and pipeline parallel (qwen2) must answer exactly as
one process does: greedy streams side by side, a seeded sampled one, a
grammar, prompt logprobs, prefix-cache hits, over gRPC and REST. An abort
reaches every rank (the world goes on in lockstep), kill -9 of rank 1 ends
the server with a non-zero exit within seconds, bad world settings fail fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from mlxrpc.demo_model import DEMO_SPEC, TextModelSpec, ensure_text_model
from mlxrpc.launcher import ServeProcess
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .helpers import text_request

pytestmark = pytest.mark.slow

ENV = {"MLXRPC_HOST": "127.0.0.1", "MLXRPC_WORKERS": "1"}
QWEN2_SPEC = TextModelSpec(architecture="qwen2", seed=2)
PROMPTS = [f"Hello number {i} " * (1 + i % 3) for i in range(8)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_text_model(tmp_path_factory.mktemp("models") / "llama", DEMO_SPEC)


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_text_model(tmp_path_factory.mktemp("models") / "qwen2", QWEN2_SPEC)


def serve(*args: str, timeout: float = 180) -> ServeProcess:
    return ServeProcess(*args, "--max-tokens", "512", env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def tensor_pair(llama_dir: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """One rank and a 2-rank tensor-parallel world serving the same llama."""
    with serve("--model", str(llama_dir)) as one, \
            serve("--model", str(llama_dir), "--parallel", "tensor", "--ranks", "2") as world:
        yield one, world


@pytest.fixture(scope="module")
def pipeline_pair(qwen2_dir: Path) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    with serve("--model", str(qwen2_dir)) as one, \
            serve("--model", str(qwen2_dir), "--parallel", "pipeline", "--ranks", "2") as world:
        yield one, world


async def _stream(stub: pb_grpc.InferenceStub, request: pb.GenerateRequest) -> dict[str, Any]:
    text, tokens, finish = "", [], ""
    async for message in stub.StreamGenerate(request):
        text += message.text
        tokens.extend(message.token_ids)
        if message.HasField("finish"):
            finish = pb.StopReason.Name(message.finish.reason)
    return {"text": text, "tokens": tokens, "finish": finish}


async def _rest(session: aiohttp.ClientSession, base: str, i: int, stream: bool) -> Any:
    body = {"model": "default", "messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": 20,
            "temperature": 0, "stream": stream}
    async with session.post(f"{base}/v1/chat/completions", json=body) as reply:
        assert reply.status == 200, await reply.text()
        if not stream:
            return (await reply.json())["choices"][0]["message"]["content"]
        parts = []
        async for line in reply.content:
            if line.startswith(b"data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                parts.append(delta.get("content") or "")
        return "".join(parts)


async def workload(server: ServeProcess) -> dict[str, Any]:
    """Everything the two servers must answer alike; the prompts' second round hits the prefix cache."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        greedy = [text_request(p, model="default", max_tokens=24, ignore_eos=True) for p in PROMPTS]
        # A prompt longer than one broadcast frame (its admission takes a second collective).
        greedy.append(text_request("The quick brown fox. " * 150, model="default", max_tokens=8, ignore_eos=True))
        seeded = text_request("Once upon a time", model="default", max_tokens=24, temperature=0.9, ignore_eos=True)
        seeded.sampling.seed = 7
        regex = text_request("Give a code:", model="default", max_tokens=24)
        regex.response_format.regex = "[a-z]{5}-[0-9]{3}"
        first = await asyncio.gather(*[_stream(stub, r) for r in [*greedy, seeded, regex]])
        again = await asyncio.gather(*[_stream(stub, r) for r in greedy[:4]])
        logprobs = text_request("The capital of France", model="default", max_tokens=4)
        logprobs.options.prompt_logprobs = True
        reply = await stub.Generate(logprobs)
        prompt_logprobs = [round(e.logprob, 4) for e in reply.input.logprobs]
    base = f"http://127.0.0.1:{server.http_port}"
    async with aiohttp.ClientSession() as session:
        rest = await asyncio.gather(*[_rest(session, base, i, stream=i % 2 == 0) for i in range(4)])
    return {"first": first, "again": again, "prompt_logprobs": prompt_logprobs, "rest": rest}


@pytest.mark.parametrize("pair", ["tensor_pair", "pipeline_pair"])
def test_a_two_rank_world_answers_exactly_as_one_rank(pair: str, request: pytest.FixtureRequest) -> None:
    one, world = request.getfixturevalue(pair)
    expected, got = asyncio.run(workload(one)), asyncio.run(workload(world))
    assert all(r["tokens"] and r["finish"] for r in expected["first"])
    assert len(set(r["text"] for r in expected["first"])) > 4  # the streams differ from each other
    assert expected["again"] == expected["first"][:4]
    assert expected["prompt_logprobs"] and all(expected["rest"])
    assert got == expected
    with grpc.insecure_channel(f"127.0.0.1:{world.grpc_port}") as channel:
        metrics = pb_grpc.InferenceStub(channel).GetMetrics(pb.GetMetricsRequest()).text
    assert 'mlxrpc_prefix_cache_lookups_total{result="hit"}' in metrics  # the second round reused caches


def _shown(server: ServeProcess) -> dict[str, Any]:
    """The parallelism ModelInfo, /v1/models and /health show; the collective time in /metrics."""
    import requests

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        info = stub.ModelInfo(pb.ModelInfoRequest(model="default"))
        metrics = stub.GetMetrics(pb.GetMetricsRequest()).text
    base = f"http://127.0.0.1:{server.http_port}"
    return {
        "grpc": (info.parallelism.mode, info.parallelism.world_size, info.parallelism.backend)
        if info.HasField("parallelism") else None,
        "models": requests.get(f"{base}/v1/models", timeout=10).json()["data"][0].get("parallelism"),
        "health": requests.get(f"{base}/health", timeout=10).json().get("parallelism"),
        "collective_steps": next((float(line.split()[-1]) for line in metrics.splitlines()
                                  if line.startswith("mlxrpc_collective_seconds_count")), 0.0),
    }


@pytest.mark.parametrize(("pair", "mode"), [("tensor_pair", "tensor"), ("pipeline_pair", "pipeline")])
def test_the_split_is_visible(pair: str, mode: str, request: pytest.FixtureRequest) -> None:
    one, world = request.getfixturevalue(pair)
    shown = _shown(world)
    split = {"mode": mode, "world_size": 2, "backend": "ring"}
    assert shown["grpc"] == (mode, 2, "ring")
    assert shown["models"] == split and shown["health"] == split
    assert shown["collective_steps"] > 0
    assert _shown(one) == {"grpc": None, "models": None, "health": None, "collective_steps": 0.0}


def test_an_abort_reaches_every_rank(tensor_pair: tuple[ServeProcess, ServeProcess]) -> None:
    """Aborted and cancelled streams leave the batch on both ranks: the world stays in
    lockstep (a rank still decoding them would break it) and still answers as one rank does."""
    one, world = tensor_pair

    async def abort_two() -> list[grpc.StatusCode]:  # an Abort call, and a client that goes away
        async with grpc.aio.insecure_channel(f"127.0.0.1:{world.grpc_port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            aborted = text_request("a long story", model="default", max_tokens=500, ignore_eos=True)
            aborted.request_id = "to-abort"
            cancelled = stub.StreamGenerate(text_request("another", model="default", max_tokens=500,
                                                         ignore_eos=True))
            call = stub.StreamGenerate(aborted)
            await call.read()
            await cancelled.read()
            assert (await stub.Abort(pb.AbortRequest(request_id="to-abort"))).found
            cancelled.cancel()
            codes = []
            try:
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
            codes.append(await cancelled.code())
            return codes

    codes = asyncio.run(abort_two())
    assert codes == [grpc.StatusCode.CANCELLED, grpc.StatusCode.CANCELLED]
    assert asyncio.run(workload(world)) == asyncio.run(workload(one))
    assert world.process.poll() is None


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_kill_9_of_rank_1_ends_the_server_within_seconds(llama_dir: Path) -> None:
    """A running stream ends UNAVAILABLE and rank 0 exits 70 (its supervisor restarts the world)."""
    world = serve("--model", str(llama_dir), "--parallel", "tensor", "--ranks", "2", "--no-http")
    try:
        followers = [p for p in _children(world.process.pid)
                     if "mlxrpc" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(followers) == 1

        async def stream_then_kill() -> tuple[grpc.StatusCode, float]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{world.grpc_port}") as channel:
                call = pb_grpc.InferenceStub(channel).StreamGenerate(
                    text_request("story", model="default", max_tokens=500, ignore_eos=True))
                await call.read()
                os.kill(followers[0], signal.SIGKILL)
                killed = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    while await call.read() is not grpc.aio.EOF:
                        pass
                return caught.value.code(), killed

        code, killed = asyncio.run(stream_then_kill())
        assert code is grpc.StatusCode.UNAVAILABLE
        assert world.process.wait(15) == 70
        elapsed = time.monotonic() - killed
        print(f"kill -9 of rank 1 -> rank 0 exited 70 after {elapsed:.2f}s")
        assert elapsed < 10
    finally:
        world.kill()


def test_a_stalled_rank_trips_the_watchdog(llama_dir: Path) -> None:
    """A frozen rank raises nothing on the ring; rank 0 exits 70 once a collective has
    waited --distributed-timeout, and the frozen rank dies with it."""
    timeout = 10
    world = serve("--model", str(llama_dir), "--parallel", "tensor", "--ranks", "2", "--no-http",
                  "--distributed-timeout", str(timeout))
    followers = [p for p in _children(world.process.pid) if "mlxrpc" in Path(f"/proc/{p}/cmdline").read_text()]
    try:
        os.kill(followers[0], signal.SIGSTOP)
        stopped = time.monotonic()
        assert world.process.wait(timeout + 15) == 70
        elapsed = time.monotonic() - stopped
        print(f"SIGSTOP of rank 1 -> rank 0 exited 70 after {elapsed:.2f}s (--distributed-timeout {timeout})")
        assert timeout - 2 <= elapsed < timeout + 10
        assert _gone(followers[0], within=10)
    finally:
        world.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(followers[0], signal.SIGKILL)


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_no_rank_outlives_rank_0(llama_dir: Path, how: str) -> None:
    """SIGTERM drains and tells the followers to stop (every rank exits 0); a killed
    rank 0 takes its followers with it (PR_SET_PDEATHSIG): no orphan either way."""
    world = serve("--model", str(llama_dir), "--parallel", "tensor", "--ranks", "2", "--no-http")
    followers = [p for p in _children(world.process.pid) if "mlxrpc" in Path(f"/proc/{p}/cmdline").read_text()]
    try:
        if how == "sigterm":
            assert world.stop() == 0
            deadline = time.monotonic() + 10  # the log reader thread may still be catching up
            while not any("rank 1: rank 0 stopped; exiting" in line for line in world.log):
                assert time.monotonic() < deadline, "".join(world.log)
                time.sleep(0.05)
        else:
            world.kill()
        assert _gone(followers[0], within=10)
    finally:
        world.kill()


def _serve_fails(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "mlxrpc", "serve", "--grpc-port", "0", "--no-http", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV, **(env or {})})
    return done.returncode, done.stderr, time.monotonic() - started


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--parallel", "tensor"], {}, "needs a distributed world"),
    (["--parallel", "sideways", "--ranks", "2"], {}, "--parallel must be one of tensor, pipeline"),
    (["--parallel", "tensor", "--ranks", "1"], {}, "--ranks must be at least 2"),
    (["--parallel", "tensor"], {"MLX_RANK": "0", "MLX_HOSTFILE": "/nonexistent/hosts.json"}, "No such file"),
    (["--parallel", "tensor"], {"MLX_RANK": "5", "MLX_HOSTFILE": "HOSTS"}, "MLX_RANK=5 is outside the 2 ranks"),
    (["--parallel", "tensor"], {"MLX_RANK": "0", "MLX_HOSTFILE": "GARBAGE"}, "is not JSON"),
    (["--parallel", "pipeline", "--ranks", "2"], {}, "pipeline parallel does not support the 'llama' architecture"),
    (["--parallel", "tensor", "--ranks", "2", "--adapter-path", "x"], {}, "adapters are not supported"),
    (["--parallel", "tensor", "--ranks", "2", "--model", "second=MODEL"], {}, "serves one model"),
    (["--parallel", "tensor", "--ranks", "2", "--speculative", "ngram"], {}, "--speculative is not supported"),
])
def test_bad_world_settings_fail_fast_with_a_message(llama_dir: Path, tmp_path: Path, args: list[str],
                                                     env: dict[str, str], message: str) -> None:
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps([["127.0.0.1:1"], ["127.0.0.1:2"]]))
    (tmp_path / "garbage.json").write_text("garbage")
    env = {k: {"HOSTS": str(hosts), "GARBAGE": str(tmp_path / "garbage.json")}.get(v, v) for k, v in env.items()}
    args = [a.replace("MODEL", str(llama_dir)) for a in args]
    code, stderr, elapsed = _serve_fails(["--model", str(llama_dir), *args], env)
    assert code == 2 and message in stderr, stderr
    assert elapsed < 30
    assert "Traceback" not in stderr


def test_a_rank_that_never_joins_fails_after_the_timeout(llama_dir: Path, tmp_path: Path) -> None:
    """MLX waits for missing peers forever; --distributed-timeout ends the wait."""
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps([["127.0.0.1:0"], ["127.0.0.1:0"]]))
    code, stderr, elapsed = _serve_fails(
        ["--model", str(llama_dir), "--parallel", "tensor", "--distributed-timeout", "2"],
        {"MLX_RANK": "0", "MLX_HOSTFILE": str(hosts)})
    assert code == 1 and "waiting up to 2s" in stderr and "Timeout" in stderr, stderr
    assert elapsed < 45  # the interpreter's own start-up counts here, on a busy machine too
