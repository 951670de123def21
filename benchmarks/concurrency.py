"""Concurrency sweep: N simultaneous streams, aggregate tokens/s and TTFT p50/p95.

mlxrpc (over gRPC and over REST SSE) against the peers users would otherwise
run, on the same model: mlx_lm.server with its batching on
(--decode-concurrency), and vllm-mlx with --continuous-batching when its venv
exists (``make bench-peers``; benchmarks/peers.py). Like for like (fair.py):
one request body for every server (the EOS tokens biased away, no
``ignore_eos``), every stream's produced tokens counted and short ones
flagged, the servers started afresh each round in rotated order, medians over
the rounds, and each server's library versions printed. Ratios are against
mlx_lm.server over REST (same protocol). Every server gets one warm-up
request per start, then fresh prompts at each level; all servers of a table
use the same BLAS.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

from mlxrpc.blas import find_library
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, bench_model, machine, percentile
from .fair import StreamResult, eos_bias, median, probe_bias, request_body, rotated, shortfalls, versions
from .peers import mlx_lm_server, vllm_mlx_missing, vllm_mlx_server, vllm_mlx_venv
from .servers import sse_stream

# Unique per level, stream and round, so nothing is reused from a prefix cache.
PROMPT = "Write a short story about a robot who learns to paint. Number {i} of {n}, round {r}."
# An edit-this-file request: the answer repeats most of the prompt (what prompt lookup is for).
EDIT_PROMPT = ("Request {i} of {n}, round {r}. Rename the variable `s` to `text` in this file and print the "
               "whole file:\n\n```python\n{source}\n```\n\nThe whole file, edited:\n\n```python\n")
WARM_UP = "Say hello."
PROBE_TOKENS = 4


@dataclass(frozen=True)
class Level:
    """One level of one round: every stream's result and the wall time for all of them."""

    results: list[StreamResult]
    wall: float

    @property
    def rate(self) -> float:
        return sum(r.tokens for r in self.results) / self.wall


async def grpc_stream(stub: pb_grpc.InferenceStub, prompt: str, tokens: int, bias: dict[str, float]) -> StreamResult:
    """The gRPC twin of ``fair.request_body``: same prompt, length, sampling and bias."""
    request = pb.GenerateRequest(model="bench")
    request.chat.messages.add(role="user").content.add(text=prompt)
    request.stopping.max_tokens, request.sampling.temperature = tokens, 0.0
    for token, value in bias.items():
        request.sampling.logit_bias[int(token)] = value
    start = time.perf_counter()
    ttft = None
    n = prompt_tokens = 0
    texts = []
    async for message in stub.StreamGenerate(request):
        if ttft is None and message.text:
            ttft = time.perf_counter() - start
        texts.append(message.text)
        n += len(message.token_ids)
        if message.HasField("finish"):
            prompt_tokens = message.finish.usage.prompt_tokens
    return StreamResult(ttft or float("nan"), n, prompt_tokens, "".join(texts), time.perf_counter() - start)


Stream = Callable[[str, int, dict[str, float]], Awaitable[StreamResult]]  # (prompt, max tokens, bias) → result
Probe = tuple[dict[str, float], str]  # a bias forcing one token, and the text it must give (fair.probe_bias)


async def sweep(stream: Stream, levels: list[int], tokens: int, bias: dict[str, float], probe: Probe,
                round_index: int, prompt: str = PROMPT) -> dict[int, Level]:
    """One warm-up request that checks the server applies logit_bias, then each level's streams at once."""
    check = await stream(WARM_UP, PROBE_TOKENS, probe[0])
    if check.text != probe[1]:
        raise RuntimeError(f"logit_bias not applied: a +100 bias should give {probe[1]!r}, got {check.text!r}")
    results = {}
    for n in levels:
        start = time.perf_counter()
        done = await asyncio.gather(*(stream(prompt.format(i=i, n=n, r=round_index), tokens, bias)
                                      for i in range(n)))
        results[n] = Level(list(done), time.perf_counter() - start)
    return results


async def sweep_sse(url: str, model: str, levels: list[int], tokens: int, bias: dict[str, float], probe: Probe,
                    round_index: int, prompt: str) -> dict[int, Level]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600),
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        return await sweep(lambda prompt, k, b: sse_stream(session, url, request_body(model, prompt, k, b)),
                           levels, tokens, bias, probe, round_index, prompt)


async def sweep_grpc(port: int, levels: list[int], tokens: int, bias: dict[str, float], probe: Probe,
                     round_index: int, prompt: str) -> dict[int, Level]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        return await sweep(lambda text, k, b: grpc_stream(stub, text, k, b), levels, tokens, bias, probe,
                           round_index, prompt)


Sweep = Callable[[list[int], int, dict[str, float], Probe, int, str], dict[int, Level]]  # ..., round, prompt


@contextmanager
def serving(name: str, model: Path, concurrency: int, preload: str | None, blas: str,
            extra: list[str]) -> Iterator[Sweep]:
    """Starts the named server with ``extra`` arguments; yields how to sweep it."""
    name = base_server(name)
    if name in PEERS:
        with PEERS[name](model, concurrency, preload, extra) as peer:
            url = f"{peer.base}/v1/chat/completions"
            yield lambda *a: asyncio.run(sweep_sse(url, peer.model, *a))
        return
    with Server(model, "--max-num-seqs", str(concurrency), "--blas", blas, *extra) as server:
        if name == "mlxrpc gRPC":
            yield lambda *a: asyncio.run(sweep_grpc(server.grpc_port, *a))
        else:
            url = f"http://127.0.0.1:{server.http_port}/v1/chat/completions"
            yield lambda *a: asyncio.run(sweep_sse(url, "bench", *a))


PEERS = {"mlx_lm.server REST": mlx_lm_server, "vllm-mlx REST": vllm_mlx_server}
SERVERS = [*PEERS, "mlxrpc gRPC", "mlxrpc REST"]


def base_server(name: str) -> str:
    """The server a variant runs ("mlx_lm.server REST [draft]" runs mlx_lm.server REST)."""
    return name.split(" [", 1)[0]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'[SERVER:]NAME=ARGS' as (the row's name, the extra arguments); SERVER defaults to mlxrpc REST."""
    label, _, extra = text.partition("=")
    server, _, name = label.rpartition(":")
    return f"{server or 'mlxrpc REST'} [{name}]", shlex.split(extra)


def edit_prompt(lines: int) -> str:
    import string

    source = "\n".join(inspect.getsource(string).splitlines()[:lines])
    return EDIT_PROMPT.replace("{source}", source.replace("{", "{{").replace("}", "}}"))


def server_versions(name: str) -> str:
    python = str(vllm_mlx_venv() / "bin" / "python") if base_server(name) == "vllm-mlx REST" else sys.executable
    return versions(python)


def table(title: str, rows: dict[str, list[dict[int, Level]]], levels: list[int], baseline: str,
          tokens: int) -> str:
    """Medians over rounds; produced/asked makes a short run visible in its row, and the prompt
    tokens show whether every server rendered the same chat prompt."""
    out = [f"## {title}", "",
           f"| server | streams | tokens/s (median, min–max) | vs {baseline} | TTFT p50 ms | TTFT p95 ms "
           "| decode tok/s per stream | tokens produced / asked | prompt tokens per stream |",
           "|---|---|---|---|---|---|---|---|---|"]
    base = {n: median([r[n].rate for r in rows[baseline]]) for n in levels}
    for name, rounds in rows.items():
        for n in levels:
            rates = [r[n].rate for r in rounds]
            p50 = median([percentile([s.ttft for s in r[n].results], 50) for r in rounds])
            p95 = median([percentile([s.ttft for s in r[n].results], 95) for r in rounds])
            produced = sum(s.tokens for r in rounds for s in r[n].results)
            asked = tokens * n * len(rounds)
            flag = "" if produced == asked else " **short**" if produced < asked else " **over**"
            prompt = median([s.prompt_tokens for r in rounds for s in r[n].results])
            decode = median([s.decode_rate for r in rounds for s in r[n].results])
            out.append(f"| {name} | {n} | {median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f}) "
                       f"| {median(rates) / base[n]:.2f} | {p50 * 1e3:.0f} | {p95 * 1e3:.0f} | {decode:.1f} "
                       f"| {produced}/{asked}{flag} | {prompt:.0f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="starts of every server, in rotated order")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of: " + ", ".join(SERVERS))
    parser.add_argument("--variant", action="append", default=[], metavar="[SERVER:]NAME=ARGS",
                        help="also run SERVER (default mlxrpc REST) with these extra arguments, alternated with "
                             "the rest, e.g. 'pbs16=--prefill-batch-size 16' or "
                             "'mlx_lm.server REST:draft=--draft-model PATH' (repeatable)")
    parser.add_argument("--model", default=None, help="model path (default: the 20M benchmark llama)")
    parser.add_argument("--prompt", choices=["story", "edit"], default="story",
                        help="edit: rewrite a 40-line source file (the answer repeats the prompt)")
    parser.add_argument("--blas", choices=["both", "bundled", "openblas"], default="both")
    parser.add_argument("--no-bias", action="store_true",
                        help="no EOS bias for anyone: streams may end early (counted and flagged)")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    names = [n for n in args.servers.split(",") if n]
    variants = dict(parse_variant(v) for v in args.variant)
    if unknown := set(names) - set(SERVERS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    skipped: dict[str, str] = {}
    names += list(variants)
    if reason := vllm_mlx_missing():
        for name in [n for n in names if base_server(n) == "vllm-mlx REST"]:
            skipped[name] = reason
            names.remove(name)
    model = Path(args.model) if args.model else bench_model()
    prompt = edit_prompt(40) if args.prompt == "edit" else PROMPT
    bias = {} if args.no_bias else eos_bias(model)
    probe = probe_bias(model, bias, PROBE_TOKENS)
    openblas = find_library("auto")
    blases = []
    if args.blas in ("both", "bundled"):
        blases.append(("bundled BLAS", None, "bundled"))
    if args.blas in ("both", "openblas") and openblas:
        blases.append(("OpenBLAS", openblas, openblas))
    rows: dict[str, list[dict[int, Level]]] = {}
    for label, preload, flag in blases:
        for r in range(args.rounds):
            for name in rotated(names, r):
                if name in skipped:
                    continue
                try:
                    with serving(name, model, max(levels), preload, flag, variants.get(name, [])) as run:
                        rows.setdefault(f"{name}, {label}", []).append(run(levels, args.tokens, bias, probe, r,
                                                                           prompt))
                except (RuntimeError, aiohttp.ClientError) as exc:  # a server that fails: said below the tables
                    skipped[name] = f"{type(exc).__name__}: {exc}"
                print(f"<!-- {label} round {r + 1}: {name} done -->", file=sys.stderr, flush=True)
    print(f"# concurrency sweep, {args.tokens} tokens per stream, {args.rounds} rounds, model {model.name}, "
          f"{args.prompt} prompt ({machine()})\n")
    body = request_body('MODEL', prompt if args.prompt == "story" else "(edit prompt)", args.tokens, bias)
    print(f"Request body (every server): {json.dumps(body)}\n")
    for name in names:
        if name not in skipped:
            how = f" ({base_server(name)} with `{shlex.join(variants[name])}`)" if name in variants else ""
            print(f"- {name}: {server_versions(name)}{how}")
    print()
    for label, _, _ in blases:
        subset = {k: v for k, v in rows.items() if k.endswith(label) and len(v) == args.rounds}
        baseline = next((k for k in (f"{n}, {label}" for n in ("mlx_lm.server REST", "mlxrpc REST")) if k in subset),
                        next(iter(subset), None))
        if baseline:
            print(table(f"aggregate throughput, {label}", subset, levels, baseline, args.tokens) + "\n")
    for name, rounds in rows.items():
        for r, result in enumerate(rounds):
            for n, level in result.items():
                if short := shortfalls(level.results, args.tokens):
                    print(f"- SHORT: {name}, round {r + 1}, {n} streams: {len(short)} stream(s) stopped early "
                          f"at {sorted(short)} of {args.tokens} tokens")
    for name, reason in skipped.items():
        print(f"- {name} not measured: {reason}")


if __name__ == "__main__":
    main()
