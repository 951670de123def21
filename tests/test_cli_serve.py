"""End to end: `mlxrpc serve` as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests

from mlxrpc.demo_model import DEMO_MODEL_ID
from mlxrpc.launcher import ServeProcess
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .helpers import text_request


class Served(ServeProcess):
    """`mlxrpc serve` with its cache in the test's folder."""

    def __init__(self, args: list[str], cache: Path) -> None:
        super().__init__(*args, env={"MLXRPC_CACHE_DIR": str(cache), "MLXRPC_HOST": "127.0.0.1"},
                         timeout=120)

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlxrpc-cache")


@pytest.fixture
def serve(cache: Path) -> Iterator:
    started: list[Served] = []

    def start(*args: str) -> Served:
        s = Served(list(args), cache)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def test_serve_without_model_serves_the_demo_model_on_both_surfaces(serve) -> None:
    s = serve()
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        models = stub.ListModels(pb.ListModelsRequest()).models
        assert [m.id for m in models] == [DEMO_MODEL_ID]
        reply = stub.Generate(text_request(model="default", max_tokens=5))
        assert reply.finish.usage.completion_tokens == 5
    base = f"http://127.0.0.1:{s.http_port}"
    assert requests.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
    data = requests.get(f"{base}/v1/models", timeout=10).json()["data"]
    assert data[0]["id"] == DEMO_MODEL_ID
    assert s.stop() == 0


def test_sigterm_drains_in_flight_streams_then_exits_zero(serve) -> None:
    s = serve("--max-tokens", "400")
    base = f"http://127.0.0.1:{s.http_port}"
    sse = requests.post(f"{base}/v1/completions", stream=True, timeout=60, json={
        "model": "default", "prompt": "Tell me a story", "max_tokens": 300,
        "ignore_eos": True, "stream": True})
    lines = sse.iter_lines()
    assert next(line for line in lines if line).startswith(b"data: ")
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as channel:
        stream = pb_grpc.InferenceStub(channel).StreamGenerate(
            text_request(model="default", max_tokens=300, ignore_eos=True))
        first = next(stream)
        s.process.send_signal(signal.SIGTERM)
        rest = list(stream)
    assert (rest[-1] if rest else first).finish.usage.completion_tokens == 300
    events = [line for line in lines if line]
    assert events[-1] == b"data: [DONE]"
    last = json.loads(events[-2][len(b"data: "):])
    assert last["choices"][0]["finish_reason"] == "length"
    assert s.process.wait(60) == 0
    assert "stopped" in "".join(s.log)


def test_workers_share_one_engine_and_never_load_the_model(serve) -> None:
    s = serve("--workers", "2")
    workers = s.children()
    assert len(workers) == 2
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libmlx" not in maps, "a sidecar worker loaded MLX"
    base = f"http://127.0.0.1:{s.http_port}"
    for _ in range(4):
        reply = requests.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
        assert reply.status_code == 200, reply.text
    assert s.stop() == 0
