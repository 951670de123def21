"""gRPC from another language: Node's @grpc/grpc-js loads the .proto as it stands.

tests/clients_js/grpc_client.js calls ListModels, Generate, StreamGenerate and
three bad requests against the shared stack and prints what came back; the
packages live in a cache outside the repository (installed on first use).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Stack
from .helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "clients_js" / "grpc_client.js"
PROTO = ROOT / "proto" / "mlxrpc" / "v1" / "inference.proto"
NODE_CACHE = Path(os.environ.get("MLXRPC_NODE_CACHE", Path.home() / ".cache" / "mlxrpc" / "node"))
PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader")


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node and npm are not installed")
    modules = NODE_CACHE / "node_modules"
    if not all((modules / name / "package.json").exists() for name in PACKAGES):
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                ["npm", "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund", *PACKAGES],
                capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            unavailable("npm install timed out (is the npm registry reachable?)")
        if done.returncode != 0:
            unavailable(f"npm install failed (is the npm registry reachable?): {done.stderr[-500:]}")
    return modules


@pytest.fixture(scope="module")
def node_result(stack: Stack, node_modules: Path) -> dict:
    done = subprocess.run(["node", str(SCRIPT), stack.grpc_target, str(PROTO)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NODE_PATH": str(node_modules)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_list_models(node_result: dict) -> None:
    models = {m["id"]: m for m in node_result["models"]}
    assert models["llama"]["kind"] == "MODEL_KIND_TEXT"
    assert models["qwen"]["context_length"] == 256


def test_generate_and_server_streaming(node_result: dict) -> None:
    generate = node_result["generate"]
    assert generate["finish"] == "STOP_REASON_LENGTH"
    assert len(generate["token_ids"]) == generate["usage"]["completion_tokens"] == 5
    assert generate["text"]

    stream = node_result["stream"]
    assert stream["finish"] == "STOP_REASON_LENGTH" and stream["messages"] >= 2
    assert len(stream["token_ids"]) == stream["usage"]["completion_tokens"] == 6
    assert stream["usage"]["total_tokens"] == stream["usage"]["prompt_tokens"] + 6


def test_errors_carry_status_and_rich_details(node_result: dict) -> None:
    errors = node_result["errors"]
    bad = errors["temperature"]
    assert bad["code"] == "INVALID_ARGUMENT" and bad["rich"]["code"] == 3
    [violation] = next(d["field_violations"] for d in bad["rich"]["details"]
                       if d["type_url"].endswith("google.rpc.BadRequest"))
    assert "temperature" in violation["field"] and violation["description"]

    for name in ("unknown_model", "stream_unknown_model"):
        error = errors[name]
        assert error["code"] == "NOT_FOUND" and "no-such-model" in error["details"]
        info = next(d for d in error["rich"]["details"] if d["type_url"].endswith("google.rpc.ErrorInfo"))
        assert info["reason"] == "MODEL_NOT_FOUND" and info["domain"] == "mlxrpc.v1"
