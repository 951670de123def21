"""Structured output: grammars enforced at sampling time with llguidance.

A request's response format (JSON object, JSON schema, regex, choice) or a
forced tool call becomes an llguidance grammar. Each step, the request's own
matcher computes the allowed-token mask and its logits processor sets every
other logit to -inf, so the output always parses, even from a random model.
No retries, no repair. The mask is per request, so constrained and free
requests share one batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import invalid
from .lark import JSON_OPTIONS, json_lark, nested
from .types import ResponseFormat

if TYPE_CHECKING:
    from .tool_format import ToolFormat

def build_tokenizer(hf_tokenizer: Any, vocab_size: int) -> Any:
    """The llguidance view of a Hugging Face tokenizer (walks the vocabulary once).

    The tokenizer can hold more ids than the model's vocabulary (transformers
    adds a configured special token missing from the vocabulary past its end);
    the model never produces those, and masks are cut to the model's size.
    """
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=max(vocab_size, len(hf_tokenizer)))


def grammar_for(fmt: ResponseFormat, think: Think | None = None) -> tuple[str, str]:
    """(grammar, the request field it came from); INVALID_ARGUMENT if it cannot be built."""
    try:
        return with_thinking(_grammar_for(fmt), think), _field_of(fmt)
    except (ValueError, TypeError, RuntimeError) as exc:
        field = "response_format.json_schema" if fmt.json_schema is not None else "response_format"
        raise invalid(field, f"{field} cannot be enforced: {_short(str(exc))}") from None


def _field_of(fmt: ResponseFormat) -> str:
    if fmt.json_schema is not None:
        return "response_format.json_schema"
    if fmt.regex is not None:
        return "response_format.regex"
    if fmt.choices:
        return "response_format.choice"
    return "response_format"


def _grammar_for(fmt: ResponseFormat) -> str:
    from llguidance import LLMatcher

    if fmt.json_object:
        return LLMatcher.grammar_from_lark(f"start: {json_lark({'type': 'object'})}")
    if fmt.json_schema is not None:
        return LLMatcher.grammar_from_json_schema(fmt.json_schema, overrides=JSON_OPTIONS)
    if fmt.regex is not None:
        return LLMatcher.grammar_from_regex(fmt.regex)
    if fmt.choices:
        alternatives = " | ".join(json.dumps(c) for c in fmt.choices)
        return LLMatcher.grammar_from_lark(f"start: {alternatives}")
    raise invalid("response_format", "response_format names no format")


@dataclass(frozen=True)
class Think:
    """A thinking block the model may write before a constrained answer.

    ``inside``: the prompt already opened it (DeepSeek-R1), so the answer
    comes after its end marker; otherwise the block is optional, so a model
    that answers at once is constrained at once (never waits for an end
    marker that does not come)."""

    start: str
    start_token: int | None
    end: str
    end_token: int | None
    inside: bool
    # A start marker of several tokens (Gemma 4's ``<|channel>`` + ``thought``): the
    # grammar names each, or a model could spell the marker's text in plain tokens.
    start_tokens: tuple[int, ...] = ()


def with_thinking(grammar: str, think: Think | None) -> str:
    """``grammar`` (any llguidance grammar) after the thinking block."""
    if think is None:
        return grammar
    if think.end_token is not None:
        rules = [f"think: /(?s:.*)/ <[{think.end_token}]>"]
    else:
        rules = ["think: think_text", f"think_text[stop={json.dumps(think.end)}]: /(?s:.*)/"]
    if think.start_token is not None:
        opening = f"<[{think.start_token}]>"
    elif think.start_tokens:
        opening = " ".join(f"<[{t}]>" for t in think.start_tokens)
    else:
        opening = json.dumps(think.start)
    block = "think /\\n{0,2}/" if think.inside else f"({opening} think /\\n{{0,2}}/)?"
    return nested("\n".join([f"start: {block} @answer", *rules]), grammar)


def tool_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int],
                      think: Think | None = None) -> str:
    """One call to one of ``tools``, written the family's way (see ``ToolFormat.grammar``)."""
    assert fmt.grammar is not None
    return with_thinking(fmt.grammar(tools, fmt, added_ids), think)


def check_grammar(grammar: str, llg_tokenizer: Any, field: str) -> None:
    """Refuses a grammar llguidance cannot compile (bad schema, unsupported feature)."""
    from llguidance import LLMatcher

    error = LLMatcher.validate_grammar(grammar, llg_tokenizer)
    if error and not error.startswith("WARNING"):
        raise invalid(field, f"{field} cannot be enforced: {_short(error)}")
    from .grammar_probe import probe_grammar

    probe_grammar(grammar, llg_tokenizer, field)


def _short(text: str, limit: int = 300) -> str:
    """llguidance's reports can quote kilobytes of grammar: clients get the start."""
    first = text.strip().splitlines()[0] if text.strip() else text
    return first if len(first) <= limit else first[:limit] + "…"


class GrammarFailure(RuntimeError):
    """The grammar cannot continue (a matcher error at decode time).

    The message stays short for the client; ``detail`` (the matcher's own
    report, often kilobytes of grammar state) goes to the log only.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("the output could not be kept to the requested format")
        self.detail = detail


class GrammarMatcher:
    """One request's compiled grammar and its matcher state.

    Built on the request side (compiling a big schema takes time, and needs no
    MLX); stepped on the engine thread by ``GrammarProcessor``.
    """

    def __init__(self, llg_tokenizer: Any, grammar: str) -> None:
        from llguidance import LLMatcher

        self.matcher = LLMatcher(llg_tokenizer, grammar)
        if self.matcher.is_error():
            raise GrammarFailure(self.matcher.get_error())


class GrammarProcessor:
    """An mlx-lm logits processor masking everything the grammar forbids.

    mlx-lm passes the token context (ending with the last sampled token; on
    the first call, the last prompt token) and the logits of shape (1, vocab).
    Runs on the engine thread, inside the request's guard: a matcher failure
    raises GrammarFailure, which fails this request only.
    """

    def __init__(self, grammar: GrammarMatcher, vocab_size: int) -> None:
        self._matcher = grammar.matcher
        self._vocab_size = vocab_size
        self._started = False

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx
        import numpy as np

        if self._started:
            self._matcher.consume_token(int(tokens[-1].item()))
        self._started = True
        if self._matcher.is_error():
            raise GrammarFailure(self._matcher.get_error())
        bits = np.unpackbits(
            np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8), bitorder="little"
        )[: self._vocab_size]
        if not bits.any():
            raise GrammarFailure("the grammar allows no token")
        allowed = mx.array(bits.astype(np.bool_))
        return mx.where(allowed, logits, mx.array(-mx.inf, dtype=logits.dtype))
