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
from typing import Any

from .errors import invalid
from .tools import ToolFormat
from .types import ResponseFormat

# Compact JSON: no free whitespace, so a weak model cannot pad forever.
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def build_tokenizer(hf_tokenizer: Any, vocab_size: int) -> Any:
    """The llguidance view of a Hugging Face tokenizer (walks the vocabulary once).

    The tokenizer can hold more ids than the model's vocabulary (transformers
    adds a configured special token missing from the vocabulary past its end);
    the model never produces those, and masks are cut to the model's size.
    """
    import llguidance.hf

    return llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=max(vocab_size, len(hf_tokenizer)))


def _json_grammar(schema: dict[str, Any]) -> str:
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)


def grammar_for(fmt: ResponseFormat) -> tuple[str, str]:
    """(grammar, the request field it came from); INVALID_ARGUMENT if it cannot be built."""
    try:
        return _grammar_for(fmt)
    except (ValueError, TypeError, RuntimeError) as exc:
        field = "response_format.json_schema" if fmt.json_schema is not None else "response_format"
        raise invalid(field, f"{field} cannot be enforced: {_short(str(exc))}") from None


def _grammar_for(fmt: ResponseFormat) -> tuple[str, str]:
    from llguidance import LLMatcher

    if fmt.json_object:
        return _json_grammar({"type": "object"}), "response_format"
    if fmt.json_schema is not None:
        return _json_grammar(fmt.json_schema), "response_format.json_schema"
    if fmt.regex is not None:
        return LLMatcher.grammar_from_regex(fmt.regex), "response_format.regex"
    if fmt.choices:
        alternatives = " | ".join(json.dumps(c) for c in fmt.choices)
        return LLMatcher.grammar_from_lark(f"start: {alternatives}"), "response_format.choice"
    raise invalid("response_format", "response_format names no format")


def tool_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    """One call to one of ``tools``, written the family's way.

    A marker that is a single added token (Qwen3's ``<tool_call>``) is named
    by its id: the model emits that token, never the marker's characters.
    """
    from llguidance import LLMatcher

    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                fmt.arguments_key: t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", fmt.arguments_key],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    body = json.dumps({**schema, "x-guidance": _JSON_OPTIONS})
    parts = ["call"]
    if fmt.start:
        parts = [_marker(fmt.start, fmt.start_tokens, added_ids), json.dumps("\n"), "call"]
        if fmt.end:
            parts += [json.dumps("\n"), _marker(fmt.end, fmt.end_tokens, added_ids)]
    return LLMatcher.grammar_from_lark(f"start: {' '.join(parts)}\ncall: %json {body}")


def _marker(text: str, tokens: tuple[int, ...], added_ids: set[int]) -> str:
    if len(tokens) == 1 and tokens[0] in added_ids:
        return f"<[{tokens[0]}]>"
    return json.dumps(text)


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

    def __init__(self, grammar: GrammarMatcher, vocab_size: int, after: tuple[int, ...] = ()) -> None:
        self._matcher = grammar.matcher
        self._vocab_size = vocab_size
        self._started = False
        # A reasoning model thinks freely first: the grammar starts after these tokens.
        self._after = list(after)

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx
        import numpy as np

        if self._after:
            if tokens.size < len(self._after) or tokens[-len(self._after):].tolist() != self._after:
                return logits
            self._after = []  # the thinking just ended: this token is the grammar's first
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
