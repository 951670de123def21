"""Per-request samplers and logits processors built on mlx-lm's pieces.

Each request gets its own sampler holding its own PRNG key, split every step
and passed to the random op: ``mx.random.seed`` is process-wide, so only a
per-request key makes one request reproducible while it shares a batch.
Runs on the engine thread only (it creates MLX arrays).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_logits_processors,
)

Sampler = Callable[[mx.array], mx.array]
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def greedy(logprobs: mx.array) -> mx.array:
    return mx.argmax(logprobs, axis=-1)


def make_request_sampler(
    *, temperature: float, top_p: float, top_k: int, min_p: float, seed: int | None,
    vocab_size: int,
) -> Sampler:
    """A sampler for one request; argmax when temperature is 0."""
    if temperature == 0:
        return greedy
    filters: list[Callable[[mx.array], mx.array]] = []
    if 0 < top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, top_p))
    if min_p > 0.0:
        filters.append(lambda x: apply_min_p(x, min_p))
    if 0 < top_k < vocab_size:
        filters.append(lambda x: apply_top_k(x, top_k))
    key = mx.random.key(seed if seed is not None else random.getrandbits(63))
    state = [key]
    inverse_temperature = 1.0 / temperature

    def sample(logprobs: mx.array) -> mx.array:
        for apply in filters:
            logprobs = apply(logprobs)
        state[0], step_key = mx.random.split(state[0])
        return mx.random.categorical(logprobs * inverse_temperature, key=step_key)

    return sample


def make_request_processors(
    *,
    logit_bias: dict[int, float],
    repetition_penalty: float | None,
    presence_penalty: float | None,
    frequency_penalty: float | None,
) -> list[LogitsProcessor]:
    return make_logits_processors(
        logit_bias=logit_bias or None,
        repetition_penalty=repetition_penalty if repetition_penalty not in (None, 1.0) else None,
        presence_penalty=presence_penalty or None,
        frequency_penalty=frequency_penalty or None,
    )
