"""Validation of request parameters and resolution against server defaults.

Pure functions, so every bad parameter is refused with INVALID_ARGUMENT
before the request reaches the engine thread.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from ..settings import EngineSettings
from .errors import EngineError, ErrorCode, invalid
from .types import SamplingParams, StoppingParams

MAX_STOP_STRINGS = 16
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class ResolvedSampling:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repetition_penalty: float | None
    presence_penalty: float
    frequency_penalty: float
    logit_bias: dict[int, float]
    seed: int


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise invalid(name, f"{name} must be a finite number")
    return value


def resolve_sampling(p: SamplingParams, settings: EngineSettings, vocab_size: int) -> ResolvedSampling:
    temperature = _finite("temperature", settings.temperature if p.temperature is None else p.temperature)
    if temperature < 0:
        raise invalid("temperature", f"temperature must be >= 0, got {temperature}")
    top_p = _finite("top_p", settings.top_p if p.top_p is None else p.top_p)
    if not 0 < top_p <= 1:
        raise invalid("top_p", f"top_p must be in (0, 1], got {top_p}")
    top_k = settings.top_k if p.top_k is None else p.top_k
    if top_k < 0:
        raise invalid("top_k", f"top_k must be >= 0 (0 disables it), got {top_k}")
    min_p = _finite("min_p", settings.min_p if p.min_p is None else p.min_p)
    if not 0 <= min_p <= 1:
        raise invalid("min_p", f"min_p must be in [0, 1], got {min_p}")
    if p.repetition_penalty is not None and not (
        math.isfinite(p.repetition_penalty) and p.repetition_penalty > 0
    ):
        raise invalid("repetition_penalty", "repetition_penalty must be > 0")
    for name, value in (("presence_penalty", p.presence_penalty),
                        ("frequency_penalty", p.frequency_penalty)):
        if value is not None and not -2 <= _finite(name, value) <= 2:
            raise invalid(name, f"{name} must be in [-2, 2], got {value}")
    for token, bias in p.logit_bias.items():
        if not 0 <= token < vocab_size:
            raise invalid("logit_bias", f"logit_bias token id {token} is outside the vocabulary")
        if not -100 <= _finite("logit_bias", bias) <= 100:
            raise invalid("logit_bias", f"logit_bias values must be in [-100, 100], got {bias}")
    return ResolvedSampling(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=p.repetition_penalty,
        presence_penalty=p.presence_penalty or 0.0,
        frequency_penalty=p.frequency_penalty or 0.0,
        logit_bias=dict(p.logit_bias),
        # Drawn here when unset, so the answer can report the seed it used.
        seed=p.seed if p.seed is not None else random.getrandbits(63),
    )


def validate_stopping(s: StoppingParams, vocab_size: int) -> None:
    if s.max_tokens is not None and s.max_tokens < 1:
        raise invalid("max_tokens", f"max_tokens must be >= 1, got {s.max_tokens}")
    if len(s.stop) > MAX_STOP_STRINGS:
        raise invalid("stop", f"at most {MAX_STOP_STRINGS} stop strings are allowed")
    if any(not stop for stop in s.stop):
        raise invalid("stop", "stop strings must not be empty")
    bad = [t for t in s.stop_token_ids if t >= vocab_size]
    if bad:
        raise invalid("stop_token_ids", f"stop token id {bad[0]} is outside the vocabulary")


def validate_logprobs(logprobs: bool, top_logprobs: int) -> None:
    if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise invalid("top_logprobs", f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}]")


def resolve_max_tokens(
    requested: int | None, settings: EngineSettings, prompt_tokens: int, context_length: int
) -> tuple[int, bool]:
    """The request's budget and whether the context (not max_tokens) limits it:
    its own or the server default, capped by --max-tokens and by the room left."""
    room = context_length - prompt_tokens
    if room < 1:
        # OpenAI's wording (LiteLLM matches it) plus "prompt is too long", which
        # LangChain matches now that the openai SDK leaves the code out of str(error).
        raise EngineError(
            ErrorCode.INVALID_ARGUMENT,
            f"This model's maximum context length is {context_length} tokens. However, your prompt "
            f"resulted in {prompt_tokens} tokens: the prompt is too long. "
            "Please reduce the length of the prompt.",
            field="messages", reason="CONTEXT_LENGTH_EXCEEDED",
        )
    wanted = settings.max_tokens if requested is None else min(requested, settings.max_tokens)
    return min(wanted, room), room < wanted
