"""The fair benchmark harness at its smallest size: it runs, counts tokens and flags short runs.

Marked slow: each run starts real servers (about 6 s each on two cores).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.concurrency import Level, sweep, table
from benchmarks.fair import StreamResult, request_body, rotated, shortfalls
from benchmarks.servers import available, disk_tier

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_server_gets_the_same_body_but_its_model_name() -> None:
    bias = {"2": -100.0}
    a, b = request_body("bench", "hi", 8, bias), request_body("/path/to/model", "hi", 8, bias)
    assert {**a, "model": ""} == {**b, "model": ""}
    assert "ignore_eos" not in a and a["logit_bias"] == bias and a["temperature"] == 0
    chat = request_body("bench", [("system", "rules"), ("user", "hi")], 8, bias)
    assert chat["messages"] == [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}]


def test_rounds_rotate_the_order() -> None:
    names = ["A", "B", "C"]
    firsts = [rotated(names, r)[0] for r in range(3)]
    assert firsts == ["A", "B", "C"] and sorted(rotated(names, 1)) == names


def test_a_short_stream_is_flagged_not_averaged_in() -> None:
    full, short = StreamResult(0.1, 8), StreamResult(0.1, 3)
    assert shortfalls([full, short], 8) == [3]
    rows = {"x": [{2: Level([full, full], 1.0)}], "y": [{2: Level([full, short], 1.0)}]}
    lines = table("t", rows, [2], "x", 8).splitlines()
    assert "| 16/16 |" in lines[-2] and "| 11/16 **short** |" in lines[-1]


def test_a_server_that_ignores_logit_bias_is_refused() -> None:
    async def ignores_bias(prompt: str, tokens: int, bias: dict[str, float]) -> StreamResult:
        return StreamResult(0.1, tokens, 5, "abcd")

    async def honours_bias(prompt: str, tokens: int, bias: dict[str, float]) -> StreamResult:
        return StreamResult(0.1, tokens, 5, "ZZZZ" if bias.get("7") == 100 else "abcd")

    probe = ({"2": -100.0, "7": 100.0}, "ZZZZ")
    with pytest.raises(RuntimeError, match="logit_bias not applied"):
        asyncio.run(sweep(ignores_bias, [1], 4, {"2": -100.0}, probe, 0))
    assert asyncio.run(sweep(honours_bias, [1], 4, {"2": -100.0}, probe, 0))[1].results[0].tokens == 4


@pytest.mark.slow
def test_transport_streams_every_token_it_was_asked_for() -> None:
    out = run_benchmark("benchmarks.transport", "--streams", "2", "--tokens", "20", "--rounds", "1")
    assert out.count("| 40 of 40 |") == 2, out
    assert "short" not in out and "mlxrpc " in out  # versions are printed


@pytest.mark.slow
def test_concurrency_sweep_accepts_the_shared_body_and_counts_tokens() -> None:
    out = run_benchmark("benchmarks.concurrency", "--servers", "mlxrpc REST", "--levels", "2", "--tokens", "4",
                        "--rounds", "1", "--blas", "bundled")
    assert "| mlxrpc REST, bundled BLAS | 2 |" in out and "| 8/8 |" in out, out
    assert "| 0 |" not in out  # prompt tokens come back from the server's usage
    assert "SHORT" not in out and '"logit_bias"' in out and "ignore_eos" not in out


def test_a_server_that_cannot_run_is_skipped_with_its_reason() -> None:
    specs, skipped = available(["mlxrpc --use-paged-cache", "llama.cpp"])
    assert specs == ["mlxrpc --use-paged-cache"] and "unknown server" in skipped["llama.cpp"]


def test_each_server_keeps_its_prefix_cache_on_disk_its_own_way() -> None:
    assert disk_tier("mlxrpc", "/d") == ("mlxrpc --prompt-cache-dir /d", None)
    assert disk_tier("vllm-mlx --use-paged-cache", "/d") == ("vllm-mlx --use-paged-cache", "/d")  # a kept HOME
    assert disk_tier("mlx_lm.server", "/d") == ("mlx_lm.server", None)  # no disk tier


@pytest.mark.slow
def test_prompt_cache_disk_reads_the_prefix_back_after_a_restart_over_rest() -> None:
    out = run_benchmark("benchmarks.prompt_cache_disk", "--servers", "mlxrpc", "--prompt-tokens", "200")
    row = next(line for line in out.splitlines() if line.startswith("| mlxrpc |"))
    assert int(row.split("|")[5].split(",")[0]) > 0, out  # cached tokens after the restart, from the REST usage
    assert "- mlxrpc: mlxrpc " in out and "- BLAS:" in out
