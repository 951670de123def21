"""Speculative decoding (prompt lookup) inside the running batch.

Exactness: greedy output with speculation equals the output without it, for
batches mixing prompts of different lengths, rows joining late and leaving
early (cancellation, stop ids, max_tokens inside an accepted run), with the
target's logprobs and the prefix cache. Distribution: sampled output with
speculation follows the target's, by per-position histograms over many
seeded runs against runs without it (chi-square test of homogeneity).

Random weights decode into loops, which prompt lookup predicts; every test
asserts drafts were accepted, so none passes with speculation idle.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest

from mlxrpc.engine.batching import ModelBatch
from mlxrpc.engine.draft import propose_ngram
from mlxrpc.engine.params import ResolvedSampling
from mlxrpc.engine.sampling import make_request_processors
from mlxrpc.engine.speculative import Speculation, make_speculator

VOCAB = 512
GREEDY = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)
PROMPTS = [
    [5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7],
    list(range(10, 40)),
    [3, 4] * 20,
    [100, 101, 102],
    [200 + (i * 7) % 50 for i in range(57)],
]


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Any:
    from mlx_lm import load

    return load(str(model_dir))[0]


def sampled(seed: int, temperature: float = 1.0, bias: dict[int, float] | None = None) -> ResolvedSampling:
    return ResolvedSampling(temperature, 1.0, 0, 0.0, None, 0.0, 0.0, bias or {}, seed)


def run(model: Any, requests: list[dict[str, Any]], spec: Speculation | None, *,
        cancel: dict[int, int] | None = None, join_after: dict[int, int] | None = None,
        prompt_cache: bool = False, batch: ModelBatch | None = None,
        draft: Any = None, **batch_kw: Any) -> tuple[list[list[int]], ModelBatch]:
    """Decodes ``requests`` (insert kwargs) together; ``join_after[i]`` steps
    before request i joins, ``cancel[i]`` tokens after which it is removed."""
    b = batch or ModelBatch(model, max_num_seqs=64, prefill_batch_size=8, prefill_step_size=64,
                            prompt_cache_size=8 if prompt_cache else 0,
                            prompt_cache_bytes=1 << 30 if prompt_cache else 0,
                            speculator=make_speculator(spec, draft), **batch_kw)
    join_after, cancel = join_after or {}, cancel or {}
    outputs: list[list[int]] = [[] for _ in requests]
    uid_of: dict[int, int] = {}
    pending = set(range(len(requests)))
    steps = 0
    while pending or len(b):
        for i in sorted(pending):
            if join_after.get(i, 0) <= steps:
                r = dict(processors=[], stop_token_ids=[], vocab_size=VOCAB) | requests[i]
                uid, _ = b.insert(**r)
                uid_of[uid] = i
                pending.discard(i)
        _, tokens = b.step()
        steps += 1
        done = []
        for t in tokens:
            i = uid_of[t.uid]
            if i in cancel and len(outputs[i]) >= cancel[i]:
                continue  # removed below; tokens after the cut are dropped
            outputs[i].append(t.token)
            if t.finish_reason or (i in cancel and len(outputs[i]) >= cancel[i]):
                done.append(t.uid)
        b.remove(done, keep_cache=True)
    return outputs, b


def greedy_requests(max_tokens: int = 48) -> list[dict[str, Any]]:
    return [dict(prompt=p, max_tokens=max_tokens - 3 * i, sampling=GREEDY) for i, p in enumerate(PROMPTS)]


def accepted(b: ModelBatch) -> int:
    assert b.speculator is not None
    return b.speculator.stats.accepted


def test_prompt_lookup_proposes_what_followed_the_latest_match() -> None:
    context = np.array([1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3])
    assert propose_ngram(context, 3, 2) == [7, 8]
    assert propose_ngram(np.array([4, 5, 6]), 3, 2) == []
    assert propose_ngram(np.array([5, 5]), 3, 4) == [5]
    # In a loop, a match with k whole tokens after it beats the latest, cut-short one.
    assert propose_ngram(np.array([9, 5, 5, 5, 5, 5, 5, 5]), 3, 3) == [5, 5, 5]
    assert propose_ngram(np.array([1, 2, 1, 2, 1, 2, 1, 2]), 2, 4) == [1, 2, 1, 2]


def test_greedy_output_is_identical_for_a_mixed_batch(model: Any) -> None:
    plain, _ = run(model, greedy_requests(), None)
    spec, b = run(model, greedy_requests(), Speculation(max_batch=64))
    assert spec == plain
    assert accepted(b) > 20


def test_greedy_output_is_identical_when_rows_join_late_and_leave_early(model: Any) -> None:
    kw = dict(join_after={1: 3, 3: 7, 4: 12}, cancel={0: 9, 2: 21})
    plain, _ = run(model, greedy_requests(), None, **kw)
    spec, b = run(model, greedy_requests(), Speculation(max_batch=64), **kw)
    assert spec == plain
    assert [len(o) for o in spec][:3:2] == [9, 21]
    assert accepted(b) > 10


def test_stop_ids_and_max_tokens_inside_an_accepted_run(model: Any) -> None:
    base, _ = run(model, greedy_requests(64), None)
    # A stop id taken from deep inside each plain output, and odd max_tokens.
    requests = [dict(prompt=p, max_tokens=17 + 2 * i, sampling=GREEDY, stop_token_ids=[base[i][12]])
                for i, p in enumerate(PROMPTS)]
    plain, _ = run(model, requests, None)
    spec, b = run(model, requests, Speculation(max_batch=64, num_draft_tokens=6))
    assert spec == plain
    assert accepted(b) > 0


def test_only_small_batches_speculate(model: Any) -> None:
    _, b = run(model, greedy_requests(), Speculation(max_batch=1))
    few = accepted(b)
    _, b = run(model, greedy_requests(), Speculation(max_batch=64))
    assert accepted(b) > few


def test_logprobs_are_the_targets(model: Any) -> None:
    def with_logprobs(spec: Speculation | None) -> tuple[list[int], list[np.ndarray], ModelBatch]:
        b = ModelBatch(model, max_num_seqs=4, prefill_batch_size=4, prefill_step_size=64,
                       speculator=make_speculator(spec))
        b.insert(PROMPTS[2], max_tokens=40, sampling=GREEDY, processors=[], stop_token_ids=[],
                 vocab_size=VOCAB)
        b.insert(PROMPTS[4], max_tokens=30, sampling=GREEDY, processors=[], stop_token_ids=[],
                 vocab_size=VOCAB)
        tokens, rows = [], []
        while len(b):
            _, out = b.step()
            for t in out:
                if t.uid == 0:
                    tokens.append(t.token)
                    rows.append(np.array(t.logprobs))
            b.remove([t.uid for t in out if t.finish_reason])
        return tokens, rows, b

    t0, lp0, _ = with_logprobs(None)
    t1, lp1, b = with_logprobs(Speculation())
    assert t0 == t1 and accepted(b) > 5
    for a, c in zip(lp0, lp1, strict=True):
        np.testing.assert_allclose(a, c, atol=1e-4)


def test_stateless_processors_see_each_positions_context(model: Any) -> None:
    """Penalties depend on the tokens so far; verified positions must see theirs."""
    def requests() -> list[dict[str, Any]]:
        return [dict(prompt=p, max_tokens=40, sampling=GREEDY,
                     processors=make_request_processors(logit_bias={}, repetition_penalty=1.3,
                                                        presence_penalty=None, frequency_penalty=None))
                for p in PROMPTS[:3]]

    plain, _ = run(model, requests(), None)
    spec, b = run(model, requests(), Speculation(max_batch=64))
    assert spec == plain
    assert accepted(b) > 0


def test_rows_marked_not_speculative_get_no_drafts(model: Any) -> None:
    calls: list[int] = []

    def counting(tokens: mx.array, logits: mx.array) -> mx.array:
        calls.append(int(tokens.size))
        return logits

    requests = [dict(prompt=PROMPTS[2], max_tokens=30, sampling=GREEDY, processors=[counting],
                     speculative=False), dict(prompt=PROMPTS[0], max_tokens=30, sampling=GREEDY)]
    plain, _ = run(model, requests, None)
    plain_calls = calls.copy()
    calls.clear()
    spec, b = run(model, requests, Speculation(max_batch=64))
    assert spec == plain and accepted(b) > 0
    # Called as often as without speculation, each time with one more token of context.
    assert calls == plain_calls == list(range(calls[0], calls[0] + len(calls)))


def test_prefix_cache_after_speculation(model: Any) -> None:
    """The cache a finished row leaves holds exactly its tokens: reusing it changes nothing."""
    first = [dict(prompt=PROMPTS[2], max_tokens=30, sampling=GREEDY)]
    out, b = run(model, first, Speculation(), prompt_cache=True)
    assert accepted(b) > 0
    follow = PROMPTS[2] + out[0] + [7, 8, 9]
    again, _ = run(model, [dict(prompt=follow, max_tokens=20, sampling=GREEDY)], None, batch=b)
    fresh, _ = run(model, [dict(prompt=follow, max_tokens=20, sampling=GREEDY)], None)
    assert b.cache_bytes > 0
    assert again == fresh


# Chi-square 0.999 quantiles by degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


def chi_square(a: Counter, b: Counter) -> tuple[float, int]:
    """Two-sample homogeneity statistic over the categories seen (rare ones pooled)."""
    na, nb = sum(a.values()), sum(b.values())
    keys = [k for k in set(a) | set(b) if a[k] + b[k] >= 10]
    rest = (na - sum(a[k] for k in keys), nb - sum(b[k] for k in keys))
    cells = [(a[k], b[k]) for k in keys] + ([rest] if sum(rest) else [])
    stat = 0.0
    for x, y in cells:
        total = x + y
        for observed, n in ((x, na), (y, nb)):
            expected = total * n / (na + nb)
            stat += (observed - expected) ** 2 / expected
    return stat, len(cells) - 1


def test_sampled_output_follows_the_targets_distribution(model: Any) -> None:
    """Positions 2-5 (the first token comes from prefill) of 768 seeded runs
    each way, the pattern tokens biased up so drafts are often right and
    often wrong."""
    pattern = [21, 22, 23, 24]
    bias = {t: 9.0 for t in pattern}
    prompt = pattern * 6 + pattern[:3]
    n, positions = 768, range(1, 5)

    def histograms(spec: Speculation | None, seed0: int) -> tuple[list[Counter], int]:
        requests = [dict(prompt=prompt, max_tokens=5, sampling=sampled(seed0 + s, 1.0, bias),
                         processors=make_request_processors(logit_bias=bias, repetition_penalty=None,
                                                            presence_penalty=None, frequency_penalty=None))
                    for s in range(n)]
        counts = [Counter() for _ in positions]
        taken = 0
        for chunk in range(0, n, 128):
            out, b = run(model, requests[chunk:chunk + 128], spec)
            taken += accepted(b) if spec else 0
            for o in out:
                for c, p in zip(counts, positions, strict=True):
                    c[o[p]] += 1
        return counts, taken

    plain, _ = histograms(None, 0)
    spec, taken = histograms(Speculation(max_batch=128), 10_000)
    assert taken > n // 4  # drafts were accepted (about 1 in 7 positions here)
    for p, a, c in zip(positions, plain, spec, strict=True):
        assert len(a) >= 3, "the distribution must not be degenerate"
        stat, df = chi_square(a, c)
        assert stat < CHI2_999[df], (p, stat, df, a, c)


SERVED_PROMPTS = ["the cat sat on the mat " * 6, "def f(x):\n    return x\n" * 4, "a b c d e f g", "1 2 3 1 2 3 1 2"]


def test_served_greedy_output_logprobs_stops_and_grammars_match_plain_decoding(make_stack: Any) -> None:
    """Through the real server: concurrent requests, stop strings, logprobs and
    a JSON grammar give the same answers with ``--speculative llama=ngram``."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    plain = make_stack(prompt_cache_size=0)
    spec = make_stack(speculative=["llama=ngram"], num_draft_tokens=["5"], speculative_max_batch=["8"])

    def answers(stack: Any) -> list[Any]:
        c = openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="x", max_retries=0)

        def one(i: int) -> Any:
            r = c.completions.create(model="llama", prompt=SERVED_PROMPTS[i % 4], max_tokens=24 + 5 * i,
                                     temperature=0, logprobs=1)
            return r.choices[0].text, r.choices[0].logprobs.token_logprobs, r.choices[0].finish_reason

        with ThreadPoolExecutor(6) as pool:
            out = list(pool.map(one, range(6)))
        text = out[0][0]
        stop = text[len(text) // 2: len(text) // 2 + 3]
        stopped = c.completions.create(model="llama", prompt=SERVED_PROMPTS[0], max_tokens=40,
                                       temperature=0, stop=[stop])
        js = c.chat.completions.create(model="llama", messages=[{"role": "user", "content": SERVED_PROMPTS[3]}],
                                       max_tokens=60, temperature=0, response_format={"type": "json_object"})
        return [out, stopped.choices[0].text, stopped.choices[0].finish_reason, js.choices[0].message.content]

    expected, got = answers(plain), answers(spec)
    for (t0, lp0, f0), (t1, lp1, f1) in zip(expected[0], got[0], strict=True):
        assert (t1, f1) == (t0, f0)
        np.testing.assert_allclose(lp1, lp0, atol=1e-3)
    assert got[1:] == expected[1:]
    assert got[2] == "stop"
    batch = spec.engine.core._c.batches["llama"]
    assert batch.speculator is not None and batch.speculator.stats.accepted > 0
    import requests

    metrics = requests.get(f"{spec.http_base}/metrics", timeout=10).text
    accepted_metric = [line for line in metrics.splitlines()
                       if line.startswith('mlxrpc_speculative_draft_tokens_total{model="llama",result="accepted"}')]
    assert accepted_metric and float(accepted_metric[0].split()[-1]) == batch.speculator.stats.accepted


@pytest.fixture(scope="module")
def draft_dir(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another random model with the demo model's tokenizer (other weights, one layer)."""
    from mlxrpc.demo_model import DEMO_SPEC, ensure_text_model

    spec = dataclasses.replace(DEMO_SPEC, num_hidden_layers=1, seed=7)
    return ensure_text_model(tmp_path_factory.mktemp("draft") / "llama", spec)


def draft_run(model: Any, draft: Any, requests: list[dict[str, Any]], **kw: Any) -> tuple[list[list[int]], Any]:
    spec = Speculation(method="draft", draft_model="x", max_batch=64, adaptive=False)
    return run(model, requests, spec, draft=draft, **kw)


def test_draft_model_greedy_output_is_identical(model: Any, draft_dir: Path) -> None:
    from mlx_lm import load

    draft = load(str(draft_dir))[0]
    kw = dict(join_after={1: 3, 4: 9}, cancel={2: 15})
    plain, _ = run(model, greedy_requests(), None, **kw)
    spec, b = draft_run(model, draft, greedy_requests(), **kw)
    assert spec == plain
    assert b.speculator.stats.proposed > 50
    # The target as its own draft: every draft accepted (up to max_tokens).
    same, b = draft_run(model, model, greedy_requests())
    assert same == run(model, greedy_requests(), None)[0]
    stats = b.speculator.stats
    assert stats.accepted == stats.proposed > 100


def test_draft_model_with_another_tokenizer_is_refused(model_dir: Path, tmp_path: Path) -> None:
    from mlx_lm import load

    from mlxrpc.demo_model import DEMO_SPEC, ensure_text_model
    from mlxrpc.engine.draft import load_draft
    from mlxrpc.engine.errors import EngineError, ErrorCode

    other = ensure_text_model(tmp_path / "other", dataclasses.replace(DEMO_SPEC, vocab_size=320))
    with pytest.raises(EngineError, match="tokenizer differs") as err:
        load_draft(str(other), load(str(model_dir))[1])
    assert err.value.code is ErrorCode.INVALID_ARGUMENT


def test_served_draft_model_matches_plain_decoding(make_stack: Any, draft_dir: Path) -> None:
    import openai

    answers = []
    for extra in ({}, {"draft_model": [f"llama={draft_dir}"], "num_draft_tokens": ["3"]}):
        stack = make_stack(**extra)
        c = openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="x", max_retries=0)
        answers.append([c.completions.create(model="llama", prompt=p, max_tokens=30, temperature=0)
                        .choices[0].text for p in SERVED_PROMPTS])
    assert answers[0] == answers[1]
    batch = stack.engine.core._c.batches["llama"]
    assert batch.speculator.stats.proposed > 0


def test_settings_resolve_per_model() -> None:
    from mlxrpc.engine.model_options import speculation
    from mlxrpc.settings import EngineSettings

    s = EngineSettings(speculative=["coder=ngram"], num_draft_tokens=["6", "coder=3"], ngram_size=["2"])
    assert speculation(s, "coder") == Speculation(method="ngram", num_draft_tokens=3, ngram_size=2)
    assert speculation(s, "chat") is None  # off unless asked for
    s = EngineSettings(draft_model=["big=/models/small"])
    assert speculation(s, "big") == Speculation(method="draft", draft_model="/models/small")
    assert speculation(s, "other") is None
    for bad, message in ((EngineSettings(speculative=["eagle"]), "must be one of"),
                         (EngineSettings(speculative=["ngram"], num_draft_tokens=["0"]), "at least 1"),
                         (EngineSettings(speculative=["ngram"], ngram_size=["x"]), "not an integer"),
                         (EngineSettings(speculative=["draft"]), "needs --draft-model")):
        with pytest.raises(ValueError, match=message):
            speculation(bad, "m")


def test_draft_proposals_do_not_depend_on_prefill_chunks(model: Any) -> None:
    from mlxrpc.engine.draft import DraftModelProposer

    whole, chunked = DraftModelProposer(model), DraftModelProposer(model, prefill_step=8)
    context = PROMPTS[4]
    first = whole.propose(0, context, 4)
    assert chunked.propose(0, context, 4) == first
    # A rejected draft rolls the draft's cache back to the shared prefix.
    nxt = context + [first[0], (first[1] + 1) % VOCAB]
    assert chunked.propose(0, nxt, 3) == DraftModelProposer(model).propose(1, nxt, 3)


@pytest.mark.parametrize("family", ["qwen3", "llama3.1", "phi3.5", "deepseek-r1-qwen"])
def test_zoo_families_decode_identically(zoo_model: Any, family: str) -> None:
    """Real families' architectures and vocabularies (tests/zoo) through the verify path."""
    from mlx_lm import load

    zoo, tokenizer = load(str(zoo_model(family)))
    texts = ["def add(a, b):\n    return a + b\n" * 3, "Paris is in France. " * 5, "x = 1"]
    requests = [dict(prompt=tokenizer.encode(t), max_tokens=32, sampling=GREEDY,
                     vocab_size=zoo.args.vocab_size) for t in texts]
    plain, _ = run(zoo, requests, None)
    spec, b = run(zoo, requests, Speculation(max_batch=64))
    assert spec == plain
    assert b.speculator.stats.proposed > 0


def test_shared_prefixes_and_kv_layouts(model: Any) -> None:
    """Followers of a shared prefix (--use-paged-cache) start later under new
    generator uids; a rotating KV cache (like a quantized one) turns speculation off."""
    from mlxrpc.engine.kv_cache import KVLayout

    shared = [7 + i % 90 for i in range(80)]
    requests = [dict(prompt=shared + tail, max_tokens=60, sampling=GREEDY, speculative=i != 1)
                for i, tail in enumerate([[1, 2, 3] * 4, [4, 5] * 3, [9] * 5])]
    kw = dict(join_after={1: 1, 2: 2}, prompt_cache=True)
    plain, _ = run(model, requests, None, **kw)
    spec, b = run(model, requests, Speculation(max_batch=64), share_prefixes=True, **kw)
    assert spec == plain and accepted(b) > 0
    # (The demo model's head dimension, 16, is below the smallest quantization group.)
    layout = KVLayout(max_size=64)
    out, b = run(model, greedy_requests(), Speculation(max_batch=64), kv=layout)
    assert b.speculator.stats.steps == 0
    assert out == run(model, greedy_requests(), None, kv=layout)[0]
