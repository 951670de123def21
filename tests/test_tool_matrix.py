"""Tool calls in each family's own format, through the engine: forced calls
written natively (JSON in tags, Llama's bare JSON, Qwen3-Coder's XML
parameters), streamed as written (ToolCallDelta), kept when cut off by the
budget, and the family's native call text parsed when the model writes it.

Tiny random models with real tokenizers and templates (tests/zoo); a grammar
makes them write what a trained model would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from mlxrpc.engine.harmony import HarmonyReader, harmony_tokens
from mlxrpc.engine.prompts import render_chat
from mlxrpc.engine.reasoning import reasoning_format
from mlxrpc.engine.tools import ToolCallExtractor, tool_format
from mlxrpc.engine.types import (
    ChatPrompt,
    Chunk,
    GenerationRequest,
    ResponseFormat,
    SamplingParams,
    StoppingParams,
    StopReason,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)

from .conftest import Stack, start_stack, stop_stack

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                                    "days": {"type": "integer", "minimum": 1, "maximum": 14}},
                   "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}},
                   "required": ["zone"]}}}
HELLO = [{"role": "user", "content": "What is the weather in Paris today?"}]

# family: (how a call is written, the call text the family's template writes for
# get_weather(city="Paris", days=2)).
NATIVE = {
    "qwen3": ("json in tags", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
                              "</tool_call>"),
    "hermes3": ("json in tags", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
                                "</tool_call>"),
    "llama3.1": ("bare json", '{"name": "get_weather", "parameters": {"city": "Paris", "days": 2}}'),
    "qwen3-coder": ("xml parameters", "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                                      "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>"),
    "gpt-oss": ("harmony", '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
                           '{"city": "Paris", "days": 2}'),
    "devstral": ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2}'),
    "ministral3-reasoning": ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2}'),
    "qwq": ("json in tags", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
                            "</tool_call>"),
    "kimi-k2": ("kimi", "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                        '<|tool_call_argument_begin|>{"city": "Paris", "days": 2}<|tool_call_end|>'
                        "<|tool_calls_section_end|>"),
    "deepseek-v3.1": ("deepseek", "<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>"
                                  'get_weather<\uff5ctool\u2581sep\uff5c>{"city": "Paris", "days": 2}'
                                  "<\uff5ctool\u2581call\u2581end\uff5c><\uff5ctool\u2581calls\u2581end\uff5c>"),
    "minimax-m2": ("minimax", '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris'
                              '</parameter>\n<parameter name="days">2</parameter>\n</invoke>\n</minimax:tool_call>'),
    "qwen3.5": ("xml parameters", "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                                  "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>"),
    "glm-4.7": ("glm", "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
                       "<arg_key>days</arg_key><arg_value>2</arg_value></tool_call>"),
    "granite-4": ("json in tags", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
                                  "</tool_call>"),
    "gemma-4": ("gemma", '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:2}<tool_call|>'),
}
FAMILIES = list(NATIVE)
THINKING = {"qwen3", "qwen3-coder", "qwen3.5", "qwq", "minimax-m2", "ministral3-reasoning", "glm-4.7", "gemma-4"}
OPENS_THINKING = {"qwen3.5", "qwq", "minimax-m2", "glm-4.7"}
# Its template opens the block even with thinking off: the random model is made to close it.
ALWAYS_THINKS = {"minimax-m2"}  # its generation prompt opens the block
NO_THINKING = {"enable_thinking": False}


class Stacks:
    """One engine per family, started on first use (a stack of every family at
    once would take minutes to start on a small CPU)."""

    def __init__(self, zoo_model: Any) -> None:
        self._zoo_model = zoo_model
        self._started: dict[str, Stack] = {}

    def get(self, family: str) -> Stack:
        if family not in self._started:
            self._started[family] = start_stack([f"{family}={self._zoo_model(family)}"], http=False,
                                                max_tokens=512)
        return self._started[family]

    def stop(self) -> None:
        for stack in self._started.values():
            stop_stack(stack)


@pytest.fixture(scope="module")
def stacks(zoo_model) -> Iterator[Stacks]:
    stacks = Stacks(zoo_model)
    yield stacks
    stacks.stop()


@pytest.fixture
def stack(stacks: Stacks, request: pytest.FixtureRequest) -> Stack:
    """The engine of the test's family (the harmony tests': gpt-oss)."""
    params = getattr(request.node, "callspec", None)
    return stacks.get(params.params["family"] if params and "family" in params.params else "gpt-oss")


def _generate(stack: Stack, family: str, *, tools: list[dict] | None = None, thinking: bool = False,
              **kwargs: Any) -> list[Chunk]:
    bias = kwargs.pop("logit_bias", None)
    if bias is None:
        bias = {}
        if family in ALWAYS_THINKS:
            fmt = reasoning_format(stack.engine.registry.get(family).tokenizer)
            bias = {fmt.end_tokens[0]: 30.0} if fmt else {}
    request = GenerationRequest(
        model=family,
        prompt=ChatPrompt(messages=HELLO, tools=tools if tools is not None else [WEATHER, TIME],
                          template_kwargs={} if thinking else NO_THINKING),
        sampling=SamplingParams(temperature=1.0, seed=kwargs.pop("seed", 0), logit_bias=bias),
        stopping=StoppingParams(max_tokens=kwargs.pop("max_tokens", 200)),
        **kwargs,
    )

    async def run() -> list[Chunk]:
        return [chunk async for batch in stack.engine.generate(request) for chunk in batch]

    return stack._thread.run(run())  # type: ignore[union-attr]


def _streamed_calls(chunks: list[Chunk]) -> list[dict[str, Any]]:
    """The calls as a client folds the deltas; each with the chunk count its arguments came in."""
    calls: list[dict[str, Any]] = []
    for chunk in chunks:
        for delta in chunk.tool_call_deltas:
            if delta.index == len(calls):
                assert delta.id and delta.name, "a call's first delta carries its id and name"
                calls.append({"id": delta.id, "name": delta.name, "arguments": "", "pieces": 0})
            assert not delta.name or delta.index == len(calls) - 1
            calls[delta.index]["arguments"] += delta.arguments
            calls[delta.index]["pieces"] += bool(delta.arguments)
    return calls


def _text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_calls_are_written_natively_and_stream(stack: Stack, family: str, choice: str) -> None:
    kind, native = NATIVE[family]
    chunks = _generate(stack, family, tool_choice=ToolChoice.REQUIRED if choice == "required" else ToolChoice.FUNCTION,
                       tool_function="get_weather" if choice == "named" else "")
    finish = chunks[-1].finish
    assert finish is not None and finish.reason is StopReason.TOOL_CALLS, _text(chunks)
    assert _text(chunks) == ""  # no markup leaks
    (call,) = finish.tool_calls
    if choice == "named":
        assert call.name == "get_weather"
    schema = (WEATHER if call.name == "get_weather" else TIME)["function"]["parameters"]
    arguments = json.loads(call.arguments_json)
    jsonschema.validate(arguments, {**schema, "additionalProperties": False})  # strict by default
    (streamed,) = _streamed_calls(chunks)
    assert (streamed["id"], streamed["name"], streamed["arguments"]) == (call.id, call.name, call.arguments_json)
    assert streamed["pieces"] > 1  # arguments arrive as they are written, not in one piece
    raw = stack.engine.registry.get(family).tokenizer.decode(
        [t for c in chunks for t in c.token_ids], skip_special_tokens=False)
    opener = {"json in tags": "<tool_call>\n{\"name\": ", "bare json": "{\"name\": ",
              "mistral": f"[TOOL_CALLS]{call.name}[ARGS]{{",
              "minimax": f'<minimax:tool_call>\n<invoke name="{call.name}">\n<parameter name=',
              "kimi": f"<|tool_calls_section_begin|><|tool_call_begin|>functions.{call.name}:0"
                      "<|tool_call_argument_begin|>{",
              "deepseek": f"<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>{call.name}"
                          "<\uff5ctool\u2581sep\uff5c>{",
              "harmony": f"<|channel|>commentary to=functions.{call.name} <|constrain|>json<|message|>{{",
              "xml parameters": f"<tool_call>\n<function={call.name}>\n",
              "glm": f"<tool_call>{call.name}<arg_key>",
              "gemma": f"<|tool_call>call:{call.name}{{"}[kind]
    if family in ALWAYS_THINKS:
        raw = raw.split("</think>", 1)[-1]  # the (empty) block its template opened
    assert raw.lstrip().startswith(opener) or kind == "harmony" and "<|channel|>analysis" in raw, raw


@pytest.mark.parametrize("family", sorted(THINKING))
def test_forced_calls_hold_with_thinking_on(stack: Stack, family: str) -> None:
    """The grammar lets the model think first or not; either way a call follows."""
    model = stack.engine.registry.get(family)
    fmt = reasoning_format(model.tokenizer)
    assert fmt is not None
    start, end = fmt.start_tokens[0], fmt.end_tokens[-1]  # Gemma 4 opens with two tokens
    # Answering at once, or thinking (here: an empty block); a template that opens the block
    # leaves only the second (the bias makes the random model close it).
    for bias in [{end: 30.0}] if family in OPENS_THINKING else [{}, {start: 30.0, end: 30.0}]:
        chunks = _generate(stack, family, thinking=True, tool_choice=ToolChoice.REQUIRED,
                           logit_bias=bias, max_tokens=300)
        finish = chunks[-1].finish
        assert finish is not None and finish.reason is StopReason.TOOL_CALLS, (bias, chunks[-1])
        assert len(finish.tool_calls) == 1 and _text(chunks) == ""


@pytest.mark.parametrize("family", FAMILIES)
def test_a_call_cut_off_keeps_what_was_written(stack: Stack, family: str) -> None:
    whole = _generate(stack, family, tools=[WEATHER], tool_choice=ToolChoice.REQUIRED)
    length = whole[-1].finish.usage.completion_tokens  # type: ignore[union-attr]
    # The same seed writes the same call: cut it five tokens before its end.
    chunks = _generate(stack, family, tools=[WEATHER], tool_choice=ToolChoice.REQUIRED, max_tokens=length - 5)
    finish = chunks[-1].finish
    assert finish is not None and finish.reason is StopReason.LENGTH
    assert _text(chunks) == ""
    (call,) = finish.tool_calls
    (streamed,) = _streamed_calls(chunks)
    assert call.name == streamed["name"] == "get_weather"
    assert call.arguments_json == streamed["arguments"]
    with pytest.raises(ValueError):
        json.loads(call.arguments_json)  # cut mid-arguments


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("lead", ["", "Let me check. "])
def test_native_call_text_is_parsed(stack: Stack, family: str, lead: str) -> None:
    """'auto': the family's own call text, as its tokenizer splits it (markers as
    their added tokens) and its detokenizer streams it, comes back as a call.

    (A regex response format cannot make the model write it: llguidance offers a
    marker's added token for its text, then cannot consume it; see the report.)"""
    kind, native = NATIVE[family]
    model = stack.engine.registry.get(family)
    if kind == "harmony":
        # A final-channel message, then the call (whose <|call|> ends generation unseen).
        native = f"<|channel|>final<|message|>{lead}<|end|><|start|>assistant{native}" if lead else native
    elif kind == "bare json":
        lead = ""  # Llama's call is the whole answer
    ids = model.tokenizer.encode(lead + native if kind != "harmony" else native, add_special_tokens=False)
    visible, deltas, calls = _read_native(model, ids)
    assert visible == lead
    (call,) = calls
    assert (call.name, json.loads(call.arguments_json)) == ("get_weather", {"city": "Paris", "days": 2})
    (streamed,) = _streamed_calls([Chunk(tool_call_deltas=deltas)])
    assert streamed["arguments"] == call.arguments_json and streamed["pieces"] > 1


def _read_native(model: Any, ids: list[int]) -> tuple[str, list[ToolCallDelta], list[ToolCall]]:
    """What the engine's output side makes of ``ids``, streamed one token at a time."""
    fmt = tool_format(model.tokenizer)
    assert fmt is not None
    # As the engine does: control tokens stay out of the text unless a parser reads them.
    hidden = model.special_ids - {*fmt.start_tokens, *fmt.end_tokens, *fmt.extra_tokens,
                                  *(fmt.harmony or {}).values()}
    detokenizer = model.tokenizer.detokenizer
    detokenizer.reset()
    pieces = []
    for token in ids:
        if token in hidden:
            continue
        detokenizer.add_token(token)
        pieces.append(detokenizer.last_segment)
    detokenizer.finalize()
    pieces.append(detokenizer.last_segment)
    if harmony_tokens(model.tokenizer) is not None:
        reader = HarmonyReader(tools_enabled=True)
        visible, deltas = "", []
        for piece in pieces:
            _, answer, new = reader.feed(piece)
            visible, deltas = visible + answer, deltas + new
        _, answer, new = reader.flush()
        return visible + answer, deltas + new, reader.calls
    if fmt.start:
        assert set(fmt.start_tokens) <= set(ids)  # the markers are their own tokens
    extractor = ToolCallExtractor(fmt, [WEATHER, TIME])
    visible, deltas = "", []
    for piece in pieces:
        visible += extractor.feed(piece)
        deltas += extractor.deltas()
    calls, rest, last = extractor.finish(cut=False)
    return visible + rest, deltas + last, calls


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_results_go_back_in_the_templates_shape(stack: Stack, family: str) -> None:
    tokenizer = stack.engine.registry.get(family).tokenizer
    history = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    text = tokenizer.apply_chat_template(history, tools=[WEATHER], add_generation_prompt=True, tokenize=False)
    kind, native = NATIVE[family]
    assert "sunny, 21 C" in text
    if kind == "xml parameters":
        assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in text
        assert "<tool_response>\nsunny, 21 C\n</tool_response>" in text
    elif kind == "kimi":
        assert '<|tool_call_argument_begin|>{"city": "Paris", "days": 2}<|tool_call_end|>' in text
        assert "## Return of call_1" in text and "sunny, 21 C" in text
    elif kind == "deepseek":
        assert 'get_weather<\uff5ctool\u2581sep\uff5c>{"city": "Paris", "days": 2}' in text
        assert "<\uff5ctool\u2581output\u2581begin\uff5c>sunny, 21 C<\uff5ctool\u2581output\u2581end\uff5c>" in text
    elif kind == "minimax":
        assert '<invoke name="get_weather">' in text and '<parameter name="city">Paris</parameter>' in text
        assert "sunny, 21 C" in text
    elif kind == "glm":
        assert "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>" in text
        assert "<|observation|><tool_response>sunny, 21 C</tool_response>" in text
    elif kind == "mistral":
        assert '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2}' in text
        assert "[TOOL_RESULTS]sunny, 21 C[/TOOL_RESULTS]" in text
    elif kind == "harmony":
        assert ("<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>"
                '{"city": "Paris", "days": 2}<|call|>') in text
        assert "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>" in text
    elif kind == "json in tags":
        assert '"name": "get_weather"' in text and "<tool_response>" in text
    elif kind == "gemma":
        assert native in text
        served = render_chat(tokenizer, ChatPrompt(messages=history, tools=[WEATHER]))
        assert (native + '<|tool_response>response:get_weather{value:<|"|>sunny, 21 C<|"|>}'
                "<tool_response|>") in served and "<|turn>tool" not in served
    else:
        assert '"parameters": {"city": "Paris", "days": 2}' in text and "ipython" in text


def test_harmony_splits_analysis_from_the_final_answer(stack: Stack) -> None:
    model = stack.engine.registry.get("gpt-oss")
    text = ("<|channel|>analysis<|message|>The user wants weather.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>It is sunny.")
    reader = HarmonyReader(tools_enabled=False)
    detokenizer = model.tokenizer.detokenizer
    detokenizer.reset()
    thought = answer = ""
    for token in model.tokenizer.encode(text, add_special_tokens=False):
        detokenizer.add_token(token)
        r, a, _ = reader.feed(detokenizer.last_segment)
        thought, answer = thought + r, answer + a
    r, a, _ = reader.flush()
    assert (thought + r, answer + a) == ("The user wants weather.", "It is sunny.")


def test_harmony_json_answer_follows_optional_analysis(stack: Stack) -> None:
    """A response format is the final channel's content, after an optional analysis message."""
    schema = {"type": "object", "properties": {"sunny": {"type": "boolean"}}, "required": ["sunny"],
              "additionalProperties": False}
    # A random model may write analysis until max_tokens: a bias on <|end|> closes it.
    end = harmony_tokens(stack.engine.registry.get("gpt-oss").tokenizer)["<|end|>"]
    chunks = _generate(stack, "gpt-oss", tools=[], response_format=ResponseFormat(json_schema=schema),
                       max_tokens=40, logit_bias={end: 30.0})
    finish = chunks[-1].finish
    assert finish is not None and finish.reason is StopReason.EOS
    assert json.loads(_text(chunks)) in ({"sunny": True}, {"sunny": False})
    raw = stack.engine.registry.get("gpt-oss").tokenizer.decode(
        [t for c in chunks for t in c.token_ids], skip_special_tokens=False)
    assert "<|channel|>final<|message|>" in raw


def test_the_documented_matrix_is_current() -> None:
    from tests.zoo import matrix

    assert matrix.current() == matrix.render(), "run: python -m tests.zoo.matrix"
    forced = matrix.COLUMNS.index("forced calls (native format)")
    assert {f for f, (_, _, cells) in matrix.MATRIX.items() if cells[forced] == "yes"} >= set(NATIVE)


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_and_reasoning_effort(stack: Stack, family: str) -> None:
    from mlxrpc.engine.errors import EngineError
    from tests.zoo import matrix

    chunks = _generate(stack, family, tools=[], max_tokens=6)
    assert chunks[-1].finish is not None and sum(len(c.token_ids) for c in chunks) <= 6
    effort = matrix.MATRIX[family][2][matrix.COLUMNS.index("reasoning_effort")]
    request = GenerationRequest(model=family, prompt=ChatPrompt(messages=HELLO, reasoning_effort="low"),
                                stopping=StoppingParams(max_tokens=1))

    async def run() -> list[Chunk]:
        return [chunk async for batch in stack.engine.generate(request) for chunk in batch]

    if effort.startswith("400"):
        with pytest.raises(EngineError) as refused:
            stack._thread.run(run())  # type: ignore[union-attr]
        assert refused.value.field == "reasoning_effort"
    else:
        assert stack._thread.run(run())[-1].finish is not None  # type: ignore[union-attr]


@pytest.mark.parametrize("family", sorted(THINKING))
def test_json_schema_answers_after_reasoning(stack: Stack, family: str) -> None:
    """The model thinks (an empty block here), then the answer keeps to the schema."""
    model = stack.engine.registry.get(family)
    fmt = reasoning_format(model.tokenizer)
    assert fmt is not None
    start, end = fmt.start_tokens[0], fmt.end_tokens[-1]  # Gemma 4 opens with two tokens
    schema = {"type": "object", "properties": {"sunny": {"type": "boolean"}}, "required": ["sunny"],
              "additionalProperties": False}
    bias = {end: 30.0} if family in OPENS_THINKING else {start: 30.0, end: 30.0}
    chunks = _generate(stack, family, tools=[], thinking=True, response_format=ResponseFormat(json_schema=schema),
                       logit_bias=bias, max_tokens=40)
    assert chunks[-1].finish is not None and chunks[-1].finish.reason is not StopReason.LENGTH
    assert json.loads(_text(chunks)) in ({"sunny": True}, {"sunny": False})
    assert end in [t for c in chunks for t in c.token_ids] or family in OPENS_THINKING
