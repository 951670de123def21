"""Any server of a comparison, started the same way, and one chat turn over REST SSE for all of them.

A server is named by a spec: its kind, then flags for it, e.g. ``mlxrpc
--use-paged-cache`` or ``vllm-mlx --use-paged-cache`` (vllm-mlx always runs
with ``--continuous-batching``, peers.py). Every server is measured over
REST, streamed chat completions, so all share the transport, the body
(``fair.request_body``), the parsing of the answer (``sse_stream``) and the
BLAS. Each start is warmed up by a request that also proves the server
applies ``logit_bias`` (``fair.probe_bias``), on which the equal lengths rest.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .common import Server
from .fair import StreamResult, probe_bias, request_body, versions
from .peers import mlx_lm_server, vllm_mlx_missing, vllm_mlx_server, vllm_mlx_venv

PEERS = {"mlx_lm.server": mlx_lm_server, "vllm-mlx": vllm_mlx_server}
KINDS = ("mlxrpc", *PEERS)
PROBE_TOKENS = 4

Messages = str | list[tuple[str, str]]  # one user message, or (role, content) pairs


def kind(spec: str) -> str:
    return spec.split()[0]


def available(specs: list[str]) -> tuple[list[str], dict[str, str]]:
    """The specs that can run here, and why each other one cannot."""
    skipped = {}
    for spec in specs:
        if kind(spec) not in KINDS:
            skipped[spec] = f"unknown server (one of {', '.join(KINDS)})"
        elif kind(spec) == "vllm-mlx" and (reason := vllm_mlx_missing()):
            skipped[spec] = reason
    return [s for s in specs if s not in skipped], skipped


def describe(specs: list[str], library: str | None) -> str:
    """The BLAS and each kind's library versions (each peer's own venv), as report lines."""
    lines = [f"- BLAS: {library or 'bundled with MLX'} (every server)"]
    for name in dict.fromkeys(kind(s) for s in specs):
        python = str(vllm_mlx_venv() / "bin" / "python") if name == "vllm-mlx" else sys.executable
        lines.append(f"- {name}: {versions(python)}")
    return "\n".join(lines)


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600), connector=aiohttp.TCPConnector(limit=0))


async def sse_stream(session: aiohttp.ClientSession, url: str, body: dict) -> StreamResult:
    """One streamed chat completion as the client sees it; token counts from the server's usage."""
    start = time.perf_counter()
    usage: dict = {}
    texts, times = [], []
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and (content := chunk["choices"][0].get("delta", {}).get("content")):
                times.append(time.perf_counter())
                texts.append(content)
            usage = chunk.get("usage") or usage
    details = usage.get("prompt_tokens_details") or {}
    return StreamResult(times[0] - start if times else float("nan"), usage.get("completion_tokens", 0),
                        usage.get("prompt_tokens", 0), "".join(texts), time.perf_counter() - start,
                        details.get("cached_tokens"), tuple(times))


@dataclass(frozen=True)
class Served:
    """A started server: where it answers and the model name its requests use."""

    base: str
    model: str

    async def chat(self, session: aiohttp.ClientSession, messages: Messages, tokens: int,
                   bias: dict[str, float]) -> StreamResult:
        return await sse_stream(session, f"{self.base}/v1/chat/completions",
                                request_body(self.model, messages, tokens, bias))


async def _warm_up(served: Served, probe: tuple[dict[str, float], str]) -> None:
    async with client() as session:
        check = await served.chat(session, "Say hello.", PROBE_TOKENS, probe[0])
    if check.text != probe[1]:
        raise RuntimeError(f"logit_bias not applied: a +100 bias should give {probe[1]!r}, got {check.text!r}")


@contextmanager
def start(spec: str, model: Path, library: str | None, bias: dict[str, float], concurrency: int = 16,
          home: str | None = None) -> Iterator[Served]:
    """Starts the server ``spec`` names on ``model``, warmed up.

    ``library``: the BLAS to preload (None: MLX's bundled one); ``home``:
    vllm-mlx's kept HOME (``disk_tier``).
    """
    name, *extra = shlex.split(spec)
    if name in PEERS:
        with PEERS[name](model, concurrency, library, extra, home) as peer:
            served = Served(peer.base, peer.model)
            asyncio.run(_warm_up(served, probe_bias(model, bias, PROBE_TOKENS)))
            yield served
        return
    with Server(model, "--max-num-seqs", str(concurrency), "--blas", library or "bundled", *extra) as server:
        served = Served(f"http://127.0.0.1:{server.http_port}", "bench")
        asyncio.run(_warm_up(served, probe_bias(model, bias, PROBE_TOKENS)))
        yield served


def disk_tier(spec: str, folder: str) -> tuple[str, str | None]:
    """(spec, home) that give ``spec``'s server a prefix cache on disk in ``folder``, where it has one.

    mlxrpc: ``--prompt-cache-dir``. vllm-mlx: it saves its prefix cache under
    ~/.cache/vllm-mlx at shutdown and loads it at start, so a HOME kept across
    starts. mlx_lm.server has no disk tier.
    """
    if kind(spec) == "mlxrpc":
        return f"{spec} --prompt-cache-dir {shlex.quote(folder)}", None
    return spec, folder if kind(spec) == "vllm-mlx" else None


def cached(value: int | None) -> str:
    """A cached-token count as reported, "-" where the server does not report one."""
    return "-" if value is None else str(value)
