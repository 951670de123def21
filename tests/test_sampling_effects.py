"""Each sampling option changes the token distribution the way it should.

Measured on the demo model's own distribution: every generated token comes
with its logprob and the 20 most likely alternatives (the distribution after
logit bias and penalties, before top-k/top-p/min-p and temperature, as
mlx-lm's batch reports it). Runs are seeded, so each test is reproducible, and
each one also runs without the option and checks that the property then fails:
a sampler that ignored the option would fail the test.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack

PROMPTS = ("Hello world", "The quick brown fox", "Once upon a time", "1, 2, 3,")
SEEDS = (7, 8)
TOKENS = 48
TOP = 20  # alternatives per token (the server's maximum)
EPS = 1e-3


@dataclass
class Step:
    """One sampled token and its step's most likely alternatives (best first)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]

    @property
    def rank(self) -> int:
        """The token's rank among the alternatives; TOP when it is not among them."""
        ids = [t for t, _ in self.top]
        return ids.index(self.token) if self.token in ids else TOP

    def mass_above(self) -> float:
        """Probability of the tokens more likely than this one (a lower bound past the top)."""
        return sum(math.exp(lp) for _, lp in self.top[: self.rank])


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[pb_grpc.InferenceStub]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


def _request(prompt: str | list[int], seed: int, max_tokens: int = TOKENS, **sampling: object) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model="llama")
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    request.stopping.max_tokens = max_tokens
    request.stopping.ignore_eos = True
    request.options.top_logprobs = TOP
    request.sampling.seed = seed
    request.sampling.temperature = 1.0
    for key, value in sampling.items():
        if key == "logit_bias":
            request.sampling.logit_bias.update(value)  # type: ignore[arg-type]
        else:
            setattr(request.sampling, key, value)
    return request


async def _steps(stub: pb_grpc.InferenceStub, **sampling: object) -> list[Step]:
    """Every sampled token of TOKENS-long runs over all prompts and seeds (run as one batch)."""
    answers = await asyncio.gather(*(stub.Generate(_request(p, seed, **sampling))
                                     for p in PROMPTS for seed in SEEDS))
    return [Step(lp.token_id, lp.logprob, [(t.token_id, t.logprob) for t in lp.top])
            for answer in answers for lp in answer.logprobs]


async def test_top_k_samples_only_the_k_most_likely_tokens(stub) -> None:
    assert all(s.rank < 3 for s in await _steps(stub, top_k=3))
    assert sum(s.rank >= 3 for s in await _steps(stub)) > 10  # without it, the tail is sampled


async def test_top_p_samples_only_inside_the_nucleus(stub) -> None:
    """A token is in the nucleus when the tokens above it hold less than top_p of the mass."""
    steps = await _steps(stub, top_p=0.5)
    assert all(s.mass_above() < 0.5 + EPS for s in steps)
    assert sum(s.mass_above() >= 0.5 + EPS for s in await _steps(stub)) > 10


async def test_min_p_drops_tokens_less_likely_than_min_p_times_the_best(stub) -> None:
    floor = math.log(0.5)
    assert all(s.logprob >= s.top[0][1] + floor - EPS for s in await _steps(stub, min_p=0.5))
    assert sum(s.logprob < s.top[0][1] + floor - EPS for s in await _steps(stub)) > 10


async def test_temperature_sharpens_and_flattens_the_distribution(stub) -> None:
    def mean_logprob(steps: list[Step]) -> float:
        return sum(s.logprob for s in steps) / len(steps)

    assert all(s.rank == 0 for s in await _steps(stub, temperature=0.0))
    cold, hot = mean_logprob(await _steps(stub, temperature=0.3)), mean_logprob(await _steps(stub, temperature=2.0))
    assert cold > hot + 0.5, (cold, hot)


async def test_logit_bias_forces_and_bans_tokens(stub) -> None:
    forced = await _steps(stub, logit_bias={42: 100.0})
    assert {s.token for s in forced} == {42}
    favourites = {s.token for s in await _steps(stub, temperature=0.0)}
    banned = await _steps(stub, temperature=0.0, logit_bias={t: -100.0 for t in favourites})
    assert not favourites & {s.token for s in banned}


# -------------------------------------------------------------- penalties


WINDOW = 20  # tokens of context the penalties look at (mlx-lm's default)


async def _penalized_steps(stub: pb_grpc.InferenceStub, **penalty: float) -> list[tuple[int, int, float]]:
    """(token, times in the context, penalty's effect on its logprob) for repeated tokens.

    A greedy penalized run reports each step's distribution after the
    penalty; the same contexts fed back as a prompt give, through prompt
    logprobs, the model's raw distribution at every step. The context a
    penalty sees is the last prompt token and the tokens generated so far. A
    token outside it moves only with the normalization, so subtracting that
    move leaves the penalty's own effect on each repeated token.
    """
    request = _request("Hello world", seed=0, max_tokens=24, temperature=0.0, **penalty)
    request.options.echo_input = True
    answer = await stub.Generate(request)
    prompt, generated = list(answer.input.token_ids), list(answer.token_ids)
    raw_request = _request(prompt + generated, seed=0, max_tokens=1, temperature=0.0)
    raw_request.options.prompt_logprobs = True
    raw = (await stub.Generate(raw_request)).input.logprobs[len(prompt) - 1:]
    effects = []
    for t, (penalized, plain) in enumerate(zip(answer.logprobs, raw, strict=False)):
        context = ([prompt[-1]] + generated[:t])[-WINDOW:]
        after = {x.token_id: x.logprob for x in penalized.top}
        before = {x.token_id: x.logprob for x in plain.top}
        both = after.keys() & before.keys()
        fresh = sorted(after[x] - before[x] for x in both if x not in context)
        if not fresh:
            continue
        assert fresh[-1] - fresh[0] < 0.02, "tokens outside the context all move alike"
        baseline = fresh[len(fresh) // 2]
        effects += [(x, context.count(x), after[x] - before[x] - baseline) for x in both if x in context]
    assert len(effects) >= 5, "the greedy text repeats itself"
    return effects


async def test_presence_penalty_lowers_each_repeated_token_by_the_penalty(stub) -> None:
    effects = await _penalized_steps(stub, presence_penalty=0.5)
    assert all(effect == pytest.approx(-0.5, abs=0.02) for _, _, effect in effects), effects


async def test_frequency_penalty_lowers_repeated_tokens_by_their_count(stub) -> None:
    effects = await _penalized_steps(stub, frequency_penalty=0.3)
    assert all(effect == pytest.approx(-0.3 * count, abs=0.02) for _, count, effect in effects), effects
    assert any(count > 1 for _, count, _ in effects), "some token repeats more than once"


async def test_repetition_penalty_lowers_every_repeated_token(stub) -> None:
    effects = await _penalized_steps(stub, repetition_penalty=1.3)
    assert all(effect < -0.02 for _, _, effect in effects), effects


async def test_penalties_make_greedy_text_repeat_less(stub) -> None:
    """The effect over a whole generation: fewer tokens repeat one of the previous 20."""

    async def repeats(**penalty: float) -> int:
        answer = await stub.Generate(_request("Hello world", seed=0, temperature=0.0, **penalty))
        ids = list(answer.token_ids)
        return sum(ids[i] in ids[max(0, i - 20):i] for i in range(len(ids)))

    plain = await repeats()
    for penalty in ({"presence_penalty": 2.0}, {"frequency_penalty": 2.0}, {"repetition_penalty": 2.0}):
        assert await repeats(**penalty) < plain / 2, penalty
