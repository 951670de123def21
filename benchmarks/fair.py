"""What makes a comparison like for like: one request body, counted tokens, alternated rounds, versions.

Every server gets the same chat-completions body (``request_body``). None of
them gets ``ignore_eos``: mlx_lm.server (0.32, ``server.py``) and vllm-mlx
(0.6, ``ChatCompletionRequest`` in ``api/models.py``) do not read it. All
three honour ``logit_bias`` per request and keep batching with it: mlx_lm.server
builds it into the request's ``make_logits_processors`` and batches such
requests (``_is_batchable`` looks only at seeds, KV bits and images);
vllm-mlx 0.6 attaches it in ``_attach_logit_bias_processor`` (``server.py``)
and its continuous-batching scheduler inserts each request's processors into
the ``BatchGenerator``; mlxrpc maps it to ``SamplingParams.logit_bias``. So
equal lengths come from a bias of -100 on every end-of-sequence token
(``eos_bias``): under greedy decoding those tokens cannot win. Each server
then pays the same extra per-step cost (one bias add per row).
Each stream's produced tokens are still counted from the server's own
``usage`` and compared with what was asked (``shortfalls``), so a server that
stops early is flagged instead of averaged in.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# OpenAI's (and mlxrpc's) bound for a bias; far below any logit of these models.
BIAS = -100.0
VERSIONED = ("mlxrpc", "mlx", "mlx-lm", "vllm-mlx")


@dataclass(frozen=True)
class StreamResult:
    """One stream as the client saw it."""

    ttft: float  # seconds to the first content
    tokens: int  # produced, as the server's usage (or token ids) says
    prompt_tokens: int = 0
    text: str = ""
    total: float = 0.0  # seconds to the end of the stream
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens; None where not reported
    times: tuple[float, ...] = ()  # perf_counter() at each content chunk

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one."""
        return (self.tokens - 1) / (self.total - self.ttft) if self.total > self.ttft else float("nan")


def eos_token_ids(model: Path) -> list[int]:
    """Every id a server may end a sequence on: mlx-lm's EOS set, the config's, and the tokenizer's."""
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(model)
    ids = set(tokenizer.eos_token_ids)
    for name in ("config.json", "generation_config.json"):
        if (model / name).exists():
            value = json.loads((model / name).read_text()).get("eos_token_id")
            ids.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def eos_bias(model: Path) -> dict[str, float]:
    """The ``logit_bias`` that makes every EOS unreachable under greedy decoding."""
    return {str(i): BIAS for i in eos_token_ids(model)}


def probe_bias(model: Path, bias: dict[str, float], repeats: int) -> tuple[dict[str, float], str]:
    """A bias that forces one visible token, and the text it must give: proves a server applies logit_bias.

    A server that accepted the field but ignored it would make the EOS bias a
    no-op, and its runs could end early; the warm-up request checks this.
    """
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(model)
    token = next(t for t in (tokenizer.encode(c, add_special_tokens=False) for c in "Zzxq") if len(t) == 1)[0]
    return {**bias, str(token): -BIAS}, tokenizer.decode([token]) * repeats


def request_body(model: str, prompt: str | list[tuple[str, str]], tokens: int, bias: dict[str, float]) -> dict:
    """The streamed chat-completions body every REST server gets; only ``model`` differs.

    ``prompt`` is one user message, or (role, content) messages.
    """
    messages = [("user", prompt)] if isinstance(prompt, str) else prompt
    body = {"model": model, "messages": [{"role": role, "content": text} for role, text in messages],
            "max_tokens": tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if bias:
        body["logit_bias"] = bias
    return body


def versions(python: str = sys.executable) -> str:
    """The library versions in the environment of ``python`` (each server's own venv)."""
    code = ("import json, importlib.metadata as m\n"
            "def v(n):\n"
            "    try: return m.version(n)\n"
            "    except m.PackageNotFoundError: return None\n"
            f"print(json.dumps({{n: v(n) for n in {VERSIONED!r}}}))")
    found = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    return ", ".join(f"{name} {version}" for name, version in found.items() if version)


def shortfalls(results: Sequence[StreamResult], asked: int) -> list[int]:
    """Produced counts of the streams that made fewer tokens than asked."""
    return [r.tokens for r in results if r.tokens < asked]


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """Round r starts with the r-th server: no server always runs first or last (A B, B A, ...)."""
    k = round_index % len(names)
    return [*names[k:], *names[:k]]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
