"""Pure translation between the mlxrpc.v1 messages and the engine's types."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterable
from typing import Any

from ..engine.admission import check_tools_input
from ..engine.errors import invalid
from ..engine.types import (
    ChatPrompt,
    Chunk,
    Finish,
    GenerationRequest,
    ImageInput,
    InputDetails,
    ModelDescription,
    ModelKind,
    Prompt,
    ResponseFormat,
    SamplingParams,
    StoppingParams,
    StopReason,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
    ToolCallDelta,
    ToolChoice,
)
from ..v1 import inference_pb2 as pb

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}

_STOP_REASONS = {
    StopReason.LENGTH: pb.STOP_REASON_LENGTH,
    StopReason.STOP_SEQUENCE: pb.STOP_REASON_STOP_SEQUENCE,
    StopReason.EOS: pb.STOP_REASON_EOS,
    StopReason.STOP_TOKEN: pb.STOP_REASON_STOP_TOKEN,
    StopReason.TOOL_CALLS: pb.STOP_REASON_TOOL_CALLS,
    StopReason.CONTEXT_LENGTH: pb.STOP_REASON_CONTEXT_LENGTH,
}
_MODEL_KINDS = {ModelKind.TEXT: pb.MODEL_KIND_TEXT, ModelKind.VISION: pb.MODEL_KIND_VISION,
                ModelKind.EMBEDDING: pb.MODEL_KIND_EMBEDDING}


def json_object(text: str, field: str) -> dict[str, Any]:
    """A JSON-object field given as text (empty or blank: {}); INVALID_ARGUMENT naming it otherwise."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(field, f"{field} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid(field, f"{field} must be a JSON object")
    return value


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return text


def message_to_dict(m: pb.ChatMessage, index: int, images: list[ImageInput]) -> dict[str, Any]:
    """A chat message in the shape Hugging Face chat templates expect.

    Text-only content becomes a string; content with images a list of parts,
    each image part a placeholder whose source is appended to ``images``.
    """
    if m.role not in CHAT_ROLES:
        raise invalid(
            f"messages[{index}].role",
            f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}, got '{m.role}'",
        )
    parts: list[dict[str, Any]] = []
    for part in m.content:
        if part.WhichOneof("part") == "image":
            source = part.image.WhichOneof("source")
            if source is None:
                raise invalid(f"messages[{index}].content", "an image part needs url, data or path")
            images.append(ImageInput(**{source: getattr(part.image, source)}))
            parts.append({"type": "image"})
        else:
            parts.append({"type": "text", "text": part.text})
    content: Any = parts
    if all(p["type"] == "text" for p in parts):
        content = "".join(p["text"] for p in parts)
    message: dict[str, Any] = {"role": m.role, "content": content}
    if m.name:
        message["name"] = m.name
    if m.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type or "function",
                # Chat templates render arguments as a mapping.
                "function": {"name": call.name, "arguments": _arguments(call.arguments_json)},
            }
            for call in m.tool_calls
        ]
    if m.tool_call_id:
        message["tool_call_id"] = m.tool_call_id
    return message


def chat_to_prompt(chat: pb.ChatInput) -> ChatPrompt:
    images: list[ImageInput] = []
    return ChatPrompt(
        messages=[message_to_dict(m, i, images) for i, m in enumerate(chat.messages)],
        images=images,
        add_generation_prompt=(
            chat.add_generation_prompt if chat.HasField("add_generation_prompt") else True
        ),
        template_kwargs=json_object(chat.template_kwargs_json, "template_kwargs_json"),
        reasoning_effort=chat.reasoning_effort,
    )


def to_prompt(request: pb.GenerateRequest) -> Prompt:
    which = request.WhichOneof("input")
    if which == "text":
        return TextPrompt(request.text)
    if which == "chat":
        return chat_to_prompt(request.chat)
    if which == "token_ids":
        return TokenPrompt(list(request.token_ids.ids))
    raise invalid("input", "one of text, chat or token_ids is required")


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


_TOOL_CHOICES = {
    pb.ToolChoice.MODE_UNSPECIFIED: ToolChoice.AUTO,
    pb.ToolChoice.MODE_AUTO: ToolChoice.AUTO,
    pb.ToolChoice.MODE_NONE: ToolChoice.NONE,
    pb.ToolChoice.MODE_REQUIRED: ToolChoice.REQUIRED,
}


def _tool_choice(mode: int) -> ToolChoice:
    if mode not in _TOOL_CHOICES:
        raise invalid("tool_choice.mode", f"unknown tool_choice mode {mode}")
    return _TOOL_CHOICES[mode]


def to_response_format(fmt: pb.ResponseFormat) -> ResponseFormat:
    which = fmt.WhichOneof("format")
    if which == "json_object":
        return ResponseFormat(json_object=True)
    if which == "json_schema":
        schema = json_object(fmt.json_schema.schema_json, "response_format.json_schema")
        if not schema:
            raise invalid("response_format.json_schema", "json_schema.schema_json is required")
        return ResponseFormat(json_schema=schema)
    if which == "regex":
        return ResponseFormat(regex=fmt.regex)
    if which == "choice":
        if not fmt.choice.choices:
            raise invalid("response_format.choice", "choice needs at least one string")
        return ResponseFormat(choices=tuple(fmt.choice.choices))
    raise invalid("response_format", "response_format must set one format")


def to_tools(tools: list[pb.Tool]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.type not in ("", "function") or not tool.function.name:
            raise invalid(f"tools[{i}]", f"tools[{i}] must be a function with a name")
        params = json_object(tool.function.parameters_json, f"tools[{i}].function.parameters")
        out.append({
            "type": "function",
            "function": {
                "name": tool.function.name,
                "description": tool.function.description,
                "parameters": params or {"type": "object", "properties": {}},
            },
        })
    return out


def to_generation_request(request: pb.GenerateRequest) -> GenerationRequest:
    s, st, o = request.sampling, request.stopping, request.options
    prompt = to_prompt(request)
    check_tools_input(isinstance(prompt, ChatPrompt), bool(request.tools))
    if request.tools and isinstance(prompt, ChatPrompt):
        prompt.tools = to_tools(list(request.tools))
    choice = request.tool_choice
    tool_function = choice.function_name if choice.WhichOneof("choice") == "function_name" else ""
    return GenerationRequest(
        model=request.model,
        prompt=prompt,
        response_format=(
            to_response_format(request.response_format)
            if request.HasField("response_format") else None
        ),
        tool_choice=ToolChoice.FUNCTION if tool_function else _tool_choice(choice.mode),
        tool_function=tool_function,
        sampling=SamplingParams(
            temperature=_optional(s, "temperature"),
            top_p=_optional(s, "top_p"),
            top_k=_optional(s, "top_k"),
            min_p=_optional(s, "min_p"),
            repetition_penalty=_optional(s, "repetition_penalty"),
            presence_penalty=_optional(s, "presence_penalty"),
            frequency_penalty=_optional(s, "frequency_penalty"),
            logit_bias=dict(s.logit_bias),
            seed=_optional(s, "seed"),
        ),
        stopping=StoppingParams(
            max_tokens=_optional(st, "max_tokens"),
            stop=list(st.stop),
            stop_token_ids=list(st.stop_token_ids),
            ignore_eos=st.ignore_eos,
            min_tokens=st.min_tokens,
            include_stop_str_in_output=st.include_stop_str_in_output,
        ),
        logprobs=o.logprobs or o.top_logprobs > 0,
        top_logprobs=o.top_logprobs,
        echo_input=o.echo_input or o.prompt_logprobs,
        prompt_logprobs=o.prompt_logprobs,
        skip_special_tokens=o.skip_special_tokens if o.HasField("skip_special_tokens") else True,
        max_tool_calls=request.max_tool_calls,
        thinking_budget=request.thinking_budget_tokens,
        request_id=request.request_id,
    )


def to_logprobs(items: list[TokenLogprob]) -> list[pb.TokenLogprob]:
    return [
        pb.TokenLogprob(
            token_id=lp.token_id,
            token=lp.token,
            token_bytes=lp.token_bytes,
            logprob=lp.logprob,
            text_offset=lp.text_offset,
            top=[
                pb.TopLogprob(token_id=i, token=t, token_bytes=b, logprob=v)
                for (i, t, v), b in zip(lp.top, lp.top_bytes or [t.encode() for _, t, _ in lp.top], strict=True)
            ],
        )
        for lp in items
    ]


def to_input(details: InputDetails) -> pb.InputDetails:
    return pb.InputDetails(token_ids=details.token_ids, text=details.text, logprobs=to_logprobs(details.logprobs))


def to_finish(finish: Finish) -> pb.Finish:
    u, t = finish.usage, finish.timings
    return pb.Finish(
        tool_calls=[
            pb.ToolCall(id=c.id, type="function", name=c.name, arguments_json=c.arguments_json)
            for c in finish.tool_calls
        ],
        reason=_STOP_REASONS[finish.reason],
        stop_sequence=finish.stop_sequence,
        stop_token_id=finish.stop_token_id or 0,
        seed=finish.seed,
        usage=pb.Usage(
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cached_tokens=u.cached_tokens,
            total_tokens=u.prompt_tokens + u.completion_tokens,
            reasoning_tokens=u.reasoning_tokens,
        ),
        timings=pb.Timings(
            queue_seconds=t.queue_seconds,
            time_to_first_token_seconds=t.time_to_first_token_seconds,
            total_seconds=t.total_seconds,
            decode_tokens_per_second=t.decode_tokens_per_second,
        ),
    )


def merge_chunks(chunks: list[Chunk]) -> Chunk:
    """One chunk carrying several consecutive ones (for a lagging consumer)."""
    if len(chunks) == 1:
        return chunks[0]
    merged = Chunk(
        text="".join(c.text for c in chunks),
        reasoning="".join(c.reasoning for c in chunks),
        token_ids=[t for c in chunks for t in c.token_ids],
        logprobs=[lp for c in chunks for lp in c.logprobs],
        finish=chunks[-1].finish,
        input=chunks[0].input,
        tool_call_deltas=coalesce_deltas([d for c in chunks for d in c.tool_call_deltas]),
    )
    return merged


def coalesce_deltas(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive argument pieces of one call as one delta (a call's opening delta stays first)."""
    out: list[ToolCallDelta] = []
    for d in deltas:
        last = out[-1] if out else None
        if last is not None and last.index == d.index and not d.id and not d.name:
            out[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + d.arguments)
        else:
            out.append(d)
    return out


def to_tool_call_deltas(deltas: list[ToolCallDelta]) -> list[pb.ToolCallDelta]:
    return [pb.ToolCallDelta(index=d.index, id=d.id, name=d.name, arguments_delta=d.arguments) for d in deltas]


def to_stream_response(chunk: Chunk) -> pb.GenerateStreamResponse:
    message = pb.GenerateStreamResponse(
        text=chunk.text, token_ids=chunk.token_ids, logprobs=to_logprobs(chunk.logprobs),
        reasoning=chunk.reasoning, tool_call_deltas=to_tool_call_deltas(chunk.tool_call_deltas),
    )
    if chunk.finish is not None:
        message.finish.CopyFrom(to_finish(chunk.finish))
    if chunk.input is not None:
        message.input.CopyFrom(to_input(chunk.input))
    return message


async def collect(messages: AsyncIterable[pb.GenerateStreamResponse]) -> pb.GenerateResponse:
    """A stream folded into the unary answer: Generate is StreamGenerate collected."""
    response = pb.GenerateResponse()
    texts, thoughts = [], []
    async for message in messages:
        if message.request_id:
            response.request_id, response.model = message.request_id, message.model
        texts.append(message.text)
        thoughts.append(message.reasoning)
        response.token_ids.extend(message.token_ids)
        response.logprobs.extend(message.logprobs)
        if message.HasField("input"):
            response.input.CopyFrom(message.input)
        if message.HasField("tool_event"):
            response.tool_events.append(message.tool_event)
        if message.HasField("finish"):
            response.finish.CopyFrom(message.finish)
    response.text, response.reasoning = "".join(texts), "".join(thoughts)
    return response


def to_model(d: ModelDescription) -> pb.Model:
    return pb.Model(
        id=d.id,
        aliases=d.aliases,
        kind=_MODEL_KINDS[d.kind],
        source=d.source,
        loaded=d.loaded,
        created=d.created,
        context_length=d.context_length,
        vocab_size=d.vocab_size,
        quantization=d.quantization,
        architecture=d.architecture,
        eos_token_ids=d.eos_token_ids,
        has_chat_template=d.has_chat_template,
        capabilities=d.capabilities,
        embedding_dimensions=d.embedding_dimensions,
        parallelism=pb.Parallelism(mode=d.parallelism.mode, world_size=d.parallelism.world_size,
                                   backend=d.parallelism.backend) if d.parallelism else None,
        kv_cache=pb.KVCacheInfo(**dataclasses.asdict(d.kv_cache)) if d.kv_cache else None,
    )
