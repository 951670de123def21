"""Gemma 4's calls (mlxrpc/engine/tool_gemma.py) without a model: the reader's JSON
only grows and agrees with mlx-lm's parser, the grammar is strict and typed by the
schema, and tool messages go back as the template's ``tool_responses``."""

from __future__ import annotations

import json

import pytest

from mlxrpc.engine.tool_format import ToolFormat
from mlxrpc.engine.tool_gemma import fold_tool_results, gemma_call_grammar, read_gemma_call

Q = '<|"|>'
CALLS = [
    f"call:get_weather{{city:{Q}Paris{Q},days:2}}",
    f"call:f{{a:{{b:[1,{Q}x, {{y}}{Q},true]}},c:-2.5,d:false,e:{Q}{Q}}}",
    "call:no_args{}",
]


@pytest.mark.parametrize("body", CALLS)
def test_the_reader_only_grows_and_agrees_with_mlx_lm(body: str) -> None:
    from mlx_lm.tool_parsers import gemma4

    seen = ""
    for cut in range(len(body) + 1):
        name, arguments, complete = read_gemma_call(body[:cut])
        assert arguments.startswith(seen), (body[:cut], seen, arguments)
        seen = arguments
        assert complete == (cut == len(body))
        if name is not None:
            assert body.startswith(f"call:{name}{{")
    expected = gemma4.parse_tool_call(f"<|tool_call>{body}<tool_call|>")
    assert (name, json.loads(seen)) == (expected["name"], expected["arguments"])


def test_a_closing_quote_arriving_is_held_back() -> None:
    assert read_gemma_call(f"call:f{{s:{Q}ab<|")[1] == '{"s": "ab'
    assert read_gemma_call(f"call:f{{s:{Q}a<b")[1] == '{"s": "a<b'


def _compiles(grammar: str) -> bool:
    from llguidance import LLMatcher

    error = LLMatcher.validate_grammar(grammar)
    return not error or error.startswith("WARNING")


def test_the_grammar_is_typed_and_strict() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "required": ["z"],
        "properties": {"z": {"type": "integer", "minimum": 1}, "a": {"type": "string", "maxLength": 3},
                       "m": {"enum": ["x", "y"]}, "o": {"type": "object", "properties": {"k": {"type": "boolean"}}},
                       "l": {"type": "array", "items": {"type": "number"}}}}}}]
    fmt = ToolFormat(start="<|tool_call>", end="<tool_call|>", parser=lambda *a: None)
    grammar = gemma_call_grammar(tools, fmt, set())
    assert _compiles(grammar)
    # Keys in sorted order, each written once; z (required) always.
    accepts = _matcher_accepts(grammar)
    assert accepts("<|tool_call>call:f{z:2}<tool_call|>")
    assert accepts(f"<|tool_call>call:f{{a:{Q}abc{Q},l:[1,2.5],m:{Q}y{Q},o:{{k:true}},z:3}}<tool_call|>")
    assert not accepts(f"<|tool_call>call:f{{a:{Q}abc{Q}}}<tool_call|>")  # z is required
    assert not accepts("<|tool_call>call:f{z:0}<tool_call|>")  # below its minimum
    assert not accepts("<|tool_call>call:f{z:2,q:1}<tool_call|>")  # no such key
    assert not accepts(f"<|tool_call>call:f{{a:{Q}abcd{Q},z:2}}<tool_call|>")  # too long
    assert not accepts(f"<|tool_call>call:f{{z:2,a:{Q}ab{Q}}}<tool_call|>")  # out of order
    open_schema = [{"type": "function", "function": {"name": "g", "parameters": {
        "type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": True}}}]
    accepts = _matcher_accepts(gemma_call_grammar(open_schema, fmt, set()))
    assert accepts(f"<|tool_call>call:g{{k:{Q}v{Q},extra:[1,{Q}w{Q}]}}<tool_call|>")
    assert accepts("<|tool_call>call:g{other:1}<tool_call|>")


def test_free_strings_end_at_the_quote_token() -> None:
    """With the quote as its own token (as in Gemma's vocabulary), a string may hold '<'."""
    tools = [{"type": "function", "function": {"name": "g", "parameters": {
        "type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]}}}]
    fmt = ToolFormat(start="<|tool_call>", end="<tool_call|>", parser=lambda *a: None, tokens={"quote": QUOTE_ID})
    accepts = _matcher_accepts(gemma_call_grammar(tools, fmt, {QUOTE_ID}))
    for value in ["", "v", "a<b", "<<", "<"]:
        assert accepts(["<|tool_call>call:g{k:", QUOTE_ID, value, QUOTE_ID, "}<tool_call|>"]), value
    # Not '<|': the quote's text spelled out would read as the quote.
    assert not accepts(["<|tool_call>call:g{k:", QUOTE_ID, "x <|y", QUOTE_ID, "}<tool_call|>"])
    assert not accepts(["<|tool_call>call:g{k:", QUOTE_ID, "v", QUOTE_ID, ",z:1}<tool_call|>"])


def _matcher_accepts(grammar: str):
    """Whether llguidance's byte-level matcher takes the whole text (str: bytes, int: a token)."""
    import llguidance

    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()))

    def accepts(parts: str | list[str | int]) -> bool:
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        ids = [i for p in ([parts] if isinstance(parts, str) else parts)
               for i in ([p] if isinstance(p, int) else list(p.encode()))]
        ok = matcher.consume_tokens(ids)
        return ok and not matcher.is_error() and matcher.is_accepting()

    return accepts


QUOTE_ID = 257


class _ByteTokenizer:
    """One token per byte, so any text can be fed to a matcher; and the quote token."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([b]) for b in range(256)] + [b"<eos>", Q.encode()]
    special_token_ids = [256, QUOTE_ID]

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


def test_tool_messages_fold_into_the_calling_turn() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
                {"role": "user", "content": "Thanks"}]
    folded = fold_tool_results(messages)
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]
    assert folded[1]["tool_responses"] == [{"name": "get_weather", "response": "sunny"},
                                           {"name": "get_weather", "response": {"temp": 21}}]
    assert fold_tool_results(messages[:1] + messages[2:3]) == messages[:1] + messages[2:3]  # no call: kept
