"""The agent CLIs, unmodified, complete a turn against the sidecar.

Codex CLI (``codex exec``, a custom provider on ``/v1/responses``), Claude
Code (``claude -p``, ``ANTHROPIC_BASE_URL``) and opencode (``opencode run``, a
custom OpenAI-compatible provider) are installed with npm into a cache
outside the repository. Their system prompts and tool lists run to 7-20k
tokens, so the model is Qwen3's real tokenizer and template (tests/zoo) on
tiny weights with a long context, set so that it answers "Hi" a few times
and stops (a random model never ends a turn). Each CLI caps its own output
tokens. A recording proxy in front of the sidecar keeps what each one sent.

Slow (npm, three CLIs): ``-m "not agent_cli"`` skips them locally. Without
npm or the registry they skip with the reason, and fail under CI=true.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .conftest import Stack, start_stack, stop_stack

pytestmark = [pytest.mark.agent_cli, pytest.mark.slow]

NPM_CACHE = Path(os.environ.get("MLXRPC_NPM_CACHE", Path.home() / ".cache" / "mlxrpc" / "npm"))
PACKAGES = {"codex": "@openai/codex@0.171.0", "claude": "@anthropic-ai/claude-code@2.1.197",
            "opencode": "opencode-ai@1.18.33"}
MODEL_CACHE = Path(os.environ.get("MLXRPC_AGENT_MODEL", Path.home() / ".cache" / "mlxrpc" / "agent-model"))
OUTPUT_CAP = 32


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"agent CLIs are required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def npm_bin() -> Path:
    """The CLIs' bin directory (installed on first use)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _unavailable("node and npm are not installed")
    bin_dir = NPM_CACHE / "node_modules" / ".bin"
    if not all((bin_dir / name).exists() for name in PACKAGES):
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(["npm", "install", "--prefix", str(NPM_CACHE), "--no-audit", "--no-fund",
                                   *PACKAGES.values()], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            _unavailable("npm install timed out (is the npm registry reachable?)")
        if done.returncode != 0:
            _unavailable(f"npm install failed (is the npm registry reachable?): {done.stderr[-500:]}")
    return bin_dir


def answering_model(src: Path, dst: Path, word: str = "Hi") -> Path:
    """A copy of ``src`` (a zoo qwen3) that answers ``word``, then after each ``word`` ends
    the turn (70%) or says it again (30%); greedy decoding answers ``word`` once.

    The layers add nothing (zeroed output projections), so the last hidden
    state is the last token's embedding: every embedding is one constant
    direction, ``word``'s has a second one, and the head reads only those two.
    """
    if (dst / "model.safetensors").exists():
        return dst
    import mlx.core as mx
    from transformers import AutoTokenizer

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    config = json.loads((src / "config.json").read_text())
    config["max_position_embeddings"] = 131072
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    (word_id,) = AutoTokenizer.from_pretrained(src).encode(word, add_special_tokens=False)
    eos = config["eos_token_id"]
    weights = dict(mx.load(str(src / "model.safetensors")))
    for name, value in weights.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = mx.zeros_like(value)
    embed = mx.zeros_like(weights["model.embed_tokens.weight"])
    embed[:, 0] = 1.0
    embed[word_id, 1] = 1.0
    norm = mx.zeros_like(weights["model.norm.weight"])
    norm[:2] = 1.0
    one, two = math.sqrt(norm.shape[0]), math.sqrt(norm.shape[0] / 2)  # RMS-normed e0, and e0 + e1
    head = mx.zeros_like(weights["lm_head.weight"])
    head[word_id, 0] = 20 / one  # after any other token: the word, surely
    head[word_id, 1] = (20 + math.log(0.3)) / two - 20 / one
    head[eos, 1] = (20 + math.log(0.7)) / two  # after the word: mostly the end
    weights.update({"model.embed_tokens.weight": embed, "model.norm.weight": norm, "lm_head.weight": head})
    tmp = dst / "model.tmp.safetensors"
    mx.save_safetensors(str(tmp), weights)
    tmp.rename(dst / "model.safetensors")
    return dst


class Recorder:
    """A proxy in front of the sidecar that keeps each request and the status and headers it got."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        entry: dict[str, Any] = {"method": request.method, "path": request.path}
        try:
            entry["body"] = json.loads(raw) if raw else None
        except ValueError:
            entry["body"] = None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as session, session.request(
                request.method, self.upstream + request.path_qs, data=raw, headers=headers) as up:
            entry["status"], entry["headers"] = up.status, dict(up.headers)
            response = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")})
            await response.prepare(request)
            body = b""
            async for piece in up.content.iter_any():
                body += piece
                await response.write(piece)
            entry["response"] = body.decode(errors="replace")
            await response.write_eof()
        self.requests.append(entry)
        return response

    def posts(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == path]


@pytest.fixture(scope="module")
def agent_stack(zoo_model: Callable[[str], Path]) -> Iterator[tuple[Stack, Recorder]]:
    model = answering_model(zoo_model("qwen3"), MODEL_CACHE / "qwen3-hi-v2")
    stack = start_stack([f"qwen3={model}"], max_tokens=64)
    recorder = Recorder(stack.http_base)
    stack._thread.run(recorder.start())  # type: ignore[union-attr]
    yield stack, recorder
    stack._thread.run(recorder.stop())  # type: ignore[union-attr]
    stop_stack(stack)


def run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "CODEX_"))}
    return subprocess.run(args, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_claude_code_completes_a_turn(npm_bin: Path, agent_stack: tuple[Stack, Recorder],
                                      tmp_path: Path) -> None:
    _, recorder = agent_stack
    recorder.requests.clear()
    done = run_cli([str(npm_bin / "claude"), "-p", "Say hi", "--model", "qwen3"], tmp_path, {
        "HOME": str(tmp_path), "ANTHROPIC_BASE_URL": recorder.base, "ANTHROPIC_API_KEY": "sk-local",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(OUTPUT_CAP), "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hi" in done.stdout
    posts = recorder.posts("/v1/messages")
    assert posts and all(p["status"] == 200 for p in posts)
    first = posts[0]["body"]
    assert first["stream"] is True and first["max_tokens"] == OUTPUT_CAP and len(first["tools"]) >= 10
    usage = [json.loads(line[6:])["usage"] for p in posts for line in p["response"].splitlines()
             if line.startswith("data: ") and '"message_delta"' in line]
    # A 10k+ token prompt, then read from the prefix cache.
    assert usage[0]["input_tokens"] > 10_000
    assert any(u["cache_read_input_tokens"] > 10_000 for u in usage[1:]) or len(usage) == 1


def test_opencode_completes_a_turn(npm_bin: Path, agent_stack: tuple[Stack, Recorder], tmp_path: Path) -> None:
    _, recorder = agent_stack
    recorder.requests.clear()
    (tmp_path / "opencode.json").write_text(json.dumps({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"mlxrpc": {
            "npm": "@ai-sdk/openai-compatible", "name": "mlxrpc",
            "options": {"baseURL": f"{recorder.base}/v1", "apiKey": "sk-local"},
            "models": {"qwen3": {"name": "qwen3", "limit": {"context": 100_000, "output": OUTPUT_CAP}}}}},
        "model": "mlxrpc/qwen3", "share": "disabled", "autoupdate": False}))
    done = run_cli([str(npm_bin / "opencode"), "run", "--print-logs", "-m", "mlxrpc/qwen3", "Say hi"], tmp_path, {
        "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".cache"),
        "OPENCODE_CONFIG": str(tmp_path / "opencode.json"),
        "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hi" in done.stdout
    posts = recorder.posts("/v1/chat/completions")
    assert posts and all(p["status"] == 200 for p in posts)
    agent = [p["body"] for p in posts if p["body"].get("tools")]
    assert agent and agent[0]["stream"] is True and agent[0]["max_tokens"] == OUTPUT_CAP


def test_codex_completes_a_turn_over_responses(npm_bin: Path, agent_stack: tuple[Stack, Recorder],
                                               tmp_path: Path) -> None:
    """Codex sends namespace tools (offered as their functions) and web_search (left out, named in
    X-Skipped-Tools). It has no output cap of its own (``model_max_output_tokens`` is ignored by
    0.171): the server's --max-tokens caps it."""
    _, recorder = agent_stack
    recorder.requests.clear()
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "qwen3"\nmodel_provider = "mlxrpc"\n\n[model_providers.mlxrpc]\nname = "mlxrpc"\n'
        f'base_url = "{recorder.base}/v1"\nwire_api = "responses"\n')
    done = run_cli([str(npm_bin / "codex"), "exec", "--skip-git-repo-check", "--ephemeral", "Say hi"], tmp_path,
                   {"CODEX_HOME": str(home), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hi" in done.stdout
    posts = recorder.posts("/v1/responses")
    assert posts and all(p["status"] == 200 for p in posts)
    body = posts[0]["body"]
    assert body["stream"] is True and body["store"] is False
    kinds = {t["type"] for t in body["tools"]}
    assert {"function", "namespace"} <= kinds and "web_search" in kinds
    assert "web_search" in posts[0]["headers"]["X-Skipped-Tools"]
    assert '"response.completed"' in posts[0]["response"]
