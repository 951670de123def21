"""Shared fixtures: tiny locally built models and real servers on loopback port 0.

A ``Stack`` is the real wiring of ``mlxrpc serve`` (engine + grpc.aio server,
and the aiohttp sidecar in front of it) running on its own event loop in a
background thread, so tests can use sync and async clients alike.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlxrpc.demo_model import DEMO_SPEC, PLAIN_CHAT_TEMPLATE, TextModelSpec, ensure_text_model
from mlxrpc.engine.engine import Engine
from mlxrpc.settings import Settings

from .helpers import unavailable

# A qwen3 with a short context (context-length errors) and no tool format.
QWEN_SPEC = TextModelSpec(architecture="qwen3", max_position_embeddings=256, seed=1,
                          chat_template=PLAIN_CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_text_model(tmp_path_factory.mktemp("models") / "llama", DEMO_SPEC)


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_text_model(tmp_path_factory.mktemp("models") / "qwen3", QWEN_SPEC)


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str], Path]:
    """``zoo_model(family)``: the dir of a tiny model with a real family's tokenizer
    and chat template (tests/zoo), built once and cached; ``unavailable`` when its files cannot be had."""
    from tests.zoo.build import model_dir
    from tests.zoo.sources import ZooUnavailable

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            try:
                built[family] = model_dir(family)
            except ZooUnavailable as e:
                unavailable(str(e))
        return built[family]

    return get


class LoopThread:
    """An event loop in a daemon thread; ``run`` executes a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 120) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Stack:
    settings: Settings
    engine: Engine
    grpc_target: str
    http_base: str = ""
    _thread: LoopThread | None = None
    _stoppers: list[Callable] = field(default_factory=list)

    def wait_idle(self, timeout: float = 10) -> None:
        assert self.engine.wait_idle(timeout), f"engine still busy: {self.engine.stats()}"


def start_stack(models: list[str], *, http: bool = True, **overrides: Any) -> Stack:
    from mlxrpc.gateway.app import create_app, start_app
    from mlxrpc.serve import start_engine_server

    settings = Settings(**{"model": models, "host": "127.0.0.1", "grpc_port": 0, "http_port": 0, **overrides})
    thread = LoopThread()
    server = thread.run(start_engine_server(settings))
    stack = Stack(settings, server.engine, f"{settings.host}:{server.grpc_port}", _thread=thread)
    stack._stoppers.append(lambda: thread.run(server.stop(1.0)))
    if http:
        app = create_app([server.local_target], settings.max_message_bytes,
                         cors_origins=settings.cors_origin)
        runner, port = thread.run(start_app(app, "127.0.0.1", 0, grace=1.0))
        stack.http_base = f"http://127.0.0.1:{port}"
        stack._stoppers.insert(0, lambda: thread.run(runner.cleanup()))
    return stack


def stop_stack(stack: Stack) -> None:
    for stop in stack._stoppers:
        stop()
    assert stack._thread is not None
    stack._thread.close()


@pytest.fixture(scope="session")
def stack(model_dir: Path, qwen_dir: Path) -> Iterator[Stack]:
    """The shared server: llama demo model (also "default") and a short-context qwen3."""
    s = start_stack([f"llama={model_dir}", f"qwen={qwen_dir}"], max_tokens=256, max_num_seqs=16)
    yield s
    stop_stack(s)


@pytest.fixture
def client(stack: Stack) -> Any:
    """The official openai SDK against the shared server's sidecar."""
    import openai

    return openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="not-needed", max_retries=0)


@pytest.fixture
def aclient(stack: Stack) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=f"{stack.http_base}/v1", api_key="not-needed", max_retries=0)


@pytest.fixture
def make_stack(model_dir: Path) -> Iterator[Callable[..., Stack]]:
    """Starts a private server with custom settings; stopped after the test."""
    started: list[Stack] = []

    def make(models: list[str] | None = None, **overrides: Any) -> Stack:
        s = start_stack(models or [f"llama={model_dir}"], **overrides)
        started.append(s)
        return s

    yield make
    for s in started:
        stop_stack(s)


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leaves with pytest's own status, skipping C++ static destructors.

    The engine threads of the in-process servers have ended by now; MLX can
    abort while tearing their streams down at interpreter exit, which would
    turn a green run into exit code 134 (see mlxrpc.cli.exit_now).
    """
    if _exit_status:
        from mlxrpc.cli import exit_now

        exit_now(_exit_status[0])
