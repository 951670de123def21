"""Request side, before admission: everything per request that needs no MLX.

Validation, the chat template, tokenization, grammar compilation and image
decoding run here, in the engine's small request-side thread pool, so one big
prompt, schema or image never stalls the event loop (token delivery, health
checks) or the MLX thread. A failure here fails that request only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..settings import EngineSettings
from .constraints import plan_constraints
from .params import (
    ResolvedSampling,
    resolve_max_tokens,
    resolve_sampling,
    validate_logprobs,
    validate_stopping,
)
from .prompts import render_chat, tokenize_prompt
from .reasoning import ReasoningFormat, reasoning_format, starts_in_reasoning, thinking_enabled
from .registry import LoadedModel
from .structured import GrammarMatcher, Think
from .tool_format import ToolFormat
from .types import ChatPrompt, GenerationRequest, ModelKind, TokenLogprob


@dataclass
class PreparedRequest:
    """A request ready for the engine core: ids, budget, sampling, constraints."""

    request: GenerationRequest
    model: LoadedModel
    prompt_ids: list[int]
    prompt_text: str
    sampling: ResolvedSampling
    max_tokens: int
    stop_token_ids: set[int]
    # Token ids that end the sequence in the batch (stop ids, plus EOS unless ignored).
    stop_on: list[int]
    grammar: GrammarMatcher | None = None
    tool_format: ToolFormat | None = None
    # Reasoning models: the markers, and whether the prompt leaves the block open.
    reasoning: ReasoningFormat | None = None
    starts_in_reasoning: bool = False
    # The context length, not max_tokens, bounds this request.
    context_capped: bool = False
    # With prompt_logprobs: one per prompt token after the first (engine thread).
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    # A vision prompt's decoded images; the core turns them into model inputs.
    images: list[Any] | None = None
    arrival: float = field(default_factory=time.perf_counter)


def prepare(request: GenerationRequest, model: LoadedModel, settings: EngineSettings) -> PreparedRequest:
    """Validates and prepares an admitted ``request`` for ``model``; raises EngineError when refused."""
    vocab = model.vocab_size
    if isinstance(request.prompt, ChatPrompt) and model.template_defaults:
        request.prompt.template_kwargs = {**model.template_defaults, **request.prompt.template_kwargs}
    sampling = resolve_sampling(request.sampling, settings, vocab)
    validate_stopping(request.stopping, vocab)
    validate_logprobs(request.logprobs, request.top_logprobs)
    decoded: list[Any] | None = None
    if model.kind is ModelKind.VISION:  # admitted as chat input (admission.py)
        assert isinstance(request.prompt, ChatPrompt)
        from .vision import decode_images

        render_chat(model.tokenizer, request.prompt)  # template errors now, not on the core
        decoded = decode_images(request.prompt, settings.max_image_pixels)
        # Tokenized with the images on the engine thread (mlx-vlm's processor uses MLX).
        prompt_ids, prompt_text = [], ""
        max_tokens, capped = request.stopping.max_tokens or settings.max_tokens, False
    else:
        prompt_ids, prompt_text = tokenize_prompt(model.tokenizer, request.prompt, vocab)
        max_tokens, capped = resolve_max_tokens(
            request.stopping.max_tokens, settings, len(prompt_ids), model.context_length
        )
    fmt = reasoning_format(model.tokenizer) if isinstance(request.prompt, ChatPrompt) else None
    kwargs = request.prompt.template_kwargs if isinstance(request.prompt, ChatPrompt) else {}
    thinking = thinking_enabled(fmt, prompt_text, kwargs)
    inside = bool(fmt) and starts_in_reasoning(fmt, prompt_text)  # type: ignore[arg-type]
    think = _think(fmt, inside) if fmt is not None and thinking else None
    grammar, tool_format = plan_constraints(request, model, think)
    stop_ids = set(request.stopping.stop_token_ids)
    stop_on = sorted(stop_ids | (set() if request.stopping.ignore_eos else set(model.eos_token_ids)))
    return PreparedRequest(
        request=request,
        model=model,
        prompt_ids=prompt_ids,
        prompt_text=prompt_text,
        sampling=sampling,
        max_tokens=max_tokens,
        stop_token_ids=stop_ids,
        stop_on=stop_on,
        grammar=GrammarMatcher(model.grammar_tokenizer, grammar) if grammar is not None else None,
        tool_format=tool_format,
        images=decoded,
        reasoning=fmt if thinking else None,
        starts_in_reasoning=inside,
        context_capped=capped,
    )


def _think(fmt: ReasoningFormat, inside: bool) -> Think:
    """The thinking block a grammar lets the model write before its answer."""
    def single(tokens: tuple[int, ...]) -> int | None:
        return tokens[0] if len(tokens) == 1 else None

    return Think(fmt.start, single(fmt.start_tokens), fmt.end, single(fmt.end_tokens), inside, fmt.start_tokens)
