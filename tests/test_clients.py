"""The examples in clients/ run against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import Stack

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


def run(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpc_example(stack: Stack) -> None:
    out = run(sys.executable, str(CLIENTS / "grpc_stream.py"), "--target", stack.grpc_target)
    assert "tokens/s" in out and "error: NOT_FOUND" in out


def test_openai_sdk_example(stack: Stack) -> None:
    out = run(sys.executable, str(CLIENTS / "openai_sdk.py"), "--base-url", f"{stack.http_base}/v1")
    assert "['llama', 'qwen']" in out and "tokens" in out


def test_curl_example(stack: Stack) -> None:
    out = run("bash", str(CLIENTS / "curl.sh"), stack.http_base)
    assert '{"status":"ok"}' in out.replace(' ', '') and "data: [DONE]" in out and "text_completion" in out


def test_typed_client_example(stack: Stack) -> None:
    out = run(sys.executable, str(CLIENTS / "typed_client.py"), "--target", stack.grpc_target)
    assert "error: INVALID_ARGUMENT on temperature" in out and "async:" in out


def test_generate_command(stack: Stack) -> None:
    out = run(sys.executable, "-m", "mlxrpc", "generate", "--target", stack.grpc_target, "--chat",
              "--max-tokens", "5", "Hello")
    assert "[STOP_REASON_LENGTH, 5 tokens]" in out
