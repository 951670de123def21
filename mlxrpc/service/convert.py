"""Pure translation between the mlxrpc.v1 messages and the engine's types."""

from __future__ import annotations

import json
from typing import Any

from ..engine.errors import EngineError, ErrorCode, invalid
from ..engine.types import (
    ChatPrompt,
    Chunk,
    Finish,
    GenerationRequest,
    ModelDescription,
    ModelKind,
    Prompt,
    SamplingParams,
    StoppingParams,
    StopReason,
    TextPrompt,
    TokenLogprob,
    TokenPrompt,
)
from ..v1 import inference_pb2 as pb

CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}

_STOP_REASONS = {
    StopReason.LENGTH: pb.STOP_REASON_LENGTH,
    StopReason.STOP_SEQUENCE: pb.STOP_REASON_STOP_SEQUENCE,
    StopReason.EOS: pb.STOP_REASON_EOS,
    StopReason.STOP_TOKEN: pb.STOP_REASON_STOP_TOKEN,
    StopReason.TOOL_CALLS: pb.STOP_REASON_TOOL_CALLS,
}
_MODEL_KINDS = {ModelKind.TEXT: pb.MODEL_KIND_TEXT, ModelKind.VISION: pb.MODEL_KIND_VISION}


def _unimplemented(what: str) -> EngineError:
    return EngineError(ErrorCode.UNIMPLEMENTED, f"{what} is not supported by this server yet")


def _json_object(text: str, field: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(field, f"{field} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid(field, f"{field} must be a JSON object")
    return value


def message_to_dict(m: pb.ChatMessage, index: int) -> dict[str, Any]:
    """A chat message in the shape Hugging Face chat templates expect."""
    if m.role not in CHAT_ROLES:
        raise invalid(
            f"messages[{index}].role",
            f"messages[{index}].role must be one of {sorted(CHAT_ROLES)}, got '{m.role}'",
        )
    texts = []
    for part in m.content:
        if part.WhichOneof("part") == "image":
            raise _unimplemented("image input")
        texts.append(part.text)
    message: dict[str, Any] = {"role": m.role, "content": "".join(texts)}
    if m.name:
        message["name"] = m.name
    if m.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type or "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in m.tool_calls
        ]
    if m.tool_call_id:
        message["tool_call_id"] = m.tool_call_id
    return message


def chat_to_prompt(chat: pb.ChatInput) -> ChatPrompt:
    return ChatPrompt(
        messages=[message_to_dict(m, i) for i, m in enumerate(chat.messages)],
        add_generation_prompt=(
            chat.add_generation_prompt if chat.HasField("add_generation_prompt") else True
        ),
        template_kwargs=_json_object(chat.template_kwargs_json, "template_kwargs_json"),
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


def to_generation_request(request: pb.GenerateRequest) -> GenerationRequest:
    if request.HasField("response_format"):
        raise _unimplemented("response_format")
    if request.tools:
        raise _unimplemented("tool calling")
    s, st, o = request.sampling, request.stopping, request.options
    return GenerationRequest(
        model=request.model,
        prompt=to_prompt(request),
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
        ),
        logprobs=o.logprobs or o.top_logprobs > 0,
        top_logprobs=o.top_logprobs,
        echo_input=o.echo_input,
        request_id=request.request_id,
    )


def _token_bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


def to_logprobs(items: list[TokenLogprob]) -> list[pb.TokenLogprob]:
    return [
        pb.TokenLogprob(
            token_id=lp.token_id,
            token=lp.token,
            token_bytes=_token_bytes(lp.token),
            logprob=lp.logprob,
            top=[
                pb.TopLogprob(token_id=i, token=t, token_bytes=_token_bytes(t), logprob=v)
                for i, t, v in lp.top
            ],
        )
        for lp in items
    ]


def to_finish(finish: Finish) -> pb.Finish:
    u, t = finish.usage, finish.timings
    return pb.Finish(
        reason=_STOP_REASONS[finish.reason],
        stop_sequence=finish.stop_sequence,
        stop_token_id=finish.stop_token_id or 0,
        usage=pb.Usage(
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cached_tokens=u.cached_tokens,
            total_tokens=u.prompt_tokens + u.completion_tokens,
        ),
        timings=pb.Timings(
            queue_seconds=t.queue_seconds,
            time_to_first_token_seconds=t.time_to_first_token_seconds,
            total_seconds=t.total_seconds,
            decode_tokens_per_second=t.decode_tokens_per_second,
        ),
    )


def to_stream_response(chunk: Chunk) -> pb.GenerateStreamResponse:
    message = pb.GenerateStreamResponse(
        text=chunk.text, token_ids=chunk.token_ids, logprobs=to_logprobs(chunk.logprobs)
    )
    if chunk.finish is not None:
        message.finish.CopyFrom(to_finish(chunk.finish))
    if chunk.input is not None:
        message.input.token_ids.extend(chunk.input.token_ids)
        message.input.text = chunk.input.text
    return message


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
    )
