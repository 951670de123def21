"""Pure translation: OpenAI request bodies → GenerateRequest, proto results → OpenAI JSON.

Every field that changes the output is either mapped onto the proto or refused
with a 400 naming it; none is dropped silently.
"""

from __future__ import annotations

import json
from typing import Any

from ...v1 import inference_pb2 as pb
from ..http.errors import ApiError
from .protocol import (
    MAX_UINT32,
    ChatCompletionRequest,
    CompletionLogprobs,
    CompletionRequest,
    McpToolDefinition,
    Message,
    ModelObject,
    Sampling,
    Usage,
)

FINISH_REASONS = {
    pb.STOP_REASON_LENGTH: "length",
    pb.STOP_REASON_CONTEXT_LENGTH: "length",
    pb.STOP_REASON_STOP_SEQUENCE: "stop",
    pb.STOP_REASON_EOS: "stop",
    pb.STOP_REASON_STOP_TOKEN: "stop",
    pb.STOP_REASON_TOOL_CALLS: "tool_calls",
}
TOOL_CHOICE_MODES = {
    "auto": pb.ToolChoice.MODE_AUTO,
    "none": pb.ToolChoice.MODE_NONE,
    "required": pb.ToolChoice.MODE_REQUIRED,
}


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _unsupported(param: str, message: str) -> ApiError:
    return _bad(param, message, code="unsupported_value")


def _apply_common(request: pb.GenerateRequest, body: Sampling, max_tokens: int | None) -> None:
    """Sampling, stopping, options and grammar fields that chat and completions share;
    the ranges were checked by the schema, so the proto takes every value."""
    s = request.sampling
    for name in ("temperature", "top_p", "min_p", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "seed"):
        if (value := getattr(body, name)) is not None:
            setattr(s, name, value)
    if body.top_k is not None:
        s.top_k = max(body.top_k, 0)  # vLLM's -1 and the proto's 0 both disable it
    for key, bias in (body.logit_bias or {}).items():
        if not key.isascii() or not key.isdigit() or int(key) > MAX_UINT32:
            raise _bad("logit_bias", f"logit_bias keys must be token ids, got '{key}'")
        s.logit_bias[int(key)] = bias
    st = request.stopping
    if max_tokens is not None:
        st.max_tokens = max_tokens
    if body.stop is not None:
        st.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop)
    st.stop_token_ids.extend(body.stop_token_ids or [])
    st.ignore_eos = body.ignore_eos
    st.min_tokens = body.min_tokens or 0
    st.include_stop_str_in_output = body.include_stop_str_in_output
    if body.skip_special_tokens is not None:
        request.options.skip_special_tokens = body.skip_special_tokens
    if body.prompt_logprobs is not None:
        if body.stream:
            raise _unsupported("prompt_logprobs", "prompt_logprobs are not available with stream=true")
        request.options.prompt_logprobs = True
        request.options.top_logprobs = max(request.options.top_logprobs, body.prompt_logprobs)
    _apply_response_format(request, body)


def _apply_response_format(request: pb.GenerateRequest, body: Sampling) -> None:
    """``response_format`` and vLLM's ``guided_*`` fields: at most one grammar."""
    given = [name for name in ("response_format", "guided_json", "guided_regex", "guided_choice")
             if getattr(body, name) is not None
             and not (name == "response_format" and body.response_format.type == "text")]
    if len(given) > 1:
        raise _bad(given[1], f"{given[0]} and {given[1]} both constrain the output; send one")
    out, fmt = request.response_format, body.response_format
    if body.guided_json is not None:
        out.json_schema.name = "guided_json"
        out.json_schema.schema_json = json.dumps(body.guided_json)
    elif body.guided_regex is not None:
        out.regex = body.guided_regex
    elif body.guided_choice is not None:
        out.choice.choices.extend(body.guided_choice)
    elif fmt is None or fmt.type == "text":
        return
    elif fmt.type == "json_object":
        out.json_object.SetInParent()
    elif fmt.json_schema is None or not fmt.json_schema.schema_:
        raise _bad("response_format.json_schema", "json_schema.schema is required")
    else:
        out.json_schema.name = fmt.json_schema.name
        out.json_schema.schema_json = json.dumps(fmt.json_schema.schema_)
        out.json_schema.strict = bool(fmt.json_schema.strict)


def _add_image(message: pb.ChatMessage, url: str) -> None:
    message.content.add().image.url = url


def _arguments(args: str | dict[str, Any]) -> str:
    return args if isinstance(args, str) else json.dumps(args)


def to_message(m: Message, index: int) -> pb.ChatMessage:
    # The legacy functions API answers a call with role "function": a tool result.
    role = "tool" if m.role == "function" else m.role
    out = pb.ChatMessage(role=role, name=m.name or "", tool_call_id=m.tool_call_id or "")
    if isinstance(m.content, str):
        out.content.add(text=m.content)
    elif m.content is not None:
        for j, part in enumerate(m.content):
            if part.type in ("text", "input_text"):
                out.content.add(text=part.text or "")
            else:
                url = part.image_url if isinstance(part.image_url, str) else (
                    part.image_url.url if part.image_url is not None else "")
                if not url:
                    raise _bad(f"messages[{index}].content[{j}].image_url", "image_url.url is required")
                _add_image(out, url)
    for call in m.tool_calls or []:
        out.tool_calls.add(id=call.id, type=call.type, name=call.function.name,
                           arguments_json=_arguments(call.function.arguments))
    if m.function_call is not None:
        out.tool_calls.add(id=f"call_{index}", type="function", name=m.function_call.name,
                           arguments_json=_arguments(m.function_call.arguments))
    return out


def chat_to_proto(body: ChatCompletionRequest, request_id: str) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=body.model, request_id=request_id)
    if "audio" in (body.modalities or []) or body.audio is not None:
        raise _unsupported("modalities" if body.audio is None else "audio", "audio output is not supported")
    messages = [to_message(m, i) for i, m in enumerate(body.messages)]
    if body.image is not None:
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise _bad("image", "the image field needs a user message to attach to")
        for url in [body.image] if isinstance(body.image, str) else body.image:
            _add_image(users[-1], url)
    request.chat.messages.extend(messages)
    request.chat.add_generation_prompt = body.add_generation_prompt
    if body.chat_template_kwargs:
        request.chat.template_kwargs_json = json.dumps(body.chat_template_kwargs)
    if body.reasoning_effort is not None:
        request.chat.reasoning_effort = body.reasoning_effort
    _apply_common(request, body, body.max_completion_tokens
                  if body.max_completion_tokens is not None else body.max_tokens)
    if body.logprobs or body.top_logprobs:
        request.options.logprobs = True
        request.options.top_logprobs = max(request.options.top_logprobs, body.top_logprobs or 0)
    _apply_tools(request, body)
    return request


def _apply_tools(request: pb.GenerateRequest, body: ChatCompletionRequest) -> None:
    """``tools``/``tool_choice``, or the legacy ``functions``/``function_call`` (one call)."""
    if body.functions is not None and body.tools is not None:
        raise _bad("functions", "send tools or the legacy functions, not both")
    functions = [t.function for t in body.tools or [] if not isinstance(t, McpToolDefinition)]
    functions += body.functions or []
    for mcp in (t for t in body.tools or [] if isinstance(t, McpToolDefinition)):  # run by the server
        request.mcp_tools.add(server_label=mcp.server_label, allowed_tools=mcp.allowed_tools or [])
    for function in functions:
        request.tools.add(type="function", function=pb.FunctionDefinition(
            name=function.name, description=function.description or "",
            parameters_json=json.dumps(function.parameters or {})))
    choice = body.tool_choice if body.functions is None else body.function_call
    if isinstance(choice, str):
        request.tool_choice.mode = TOOL_CHOICE_MODES[choice]
    elif choice is not None:
        request.tool_choice.function_name = getattr(choice, "function", choice).name
    if body.functions is not None or body.parallel_tool_calls is False:
        request.max_tool_calls = 1


def completion_to_proto(body: CompletionRequest, request_id: str) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=body.model, request_id=request_id)
    prompt = body.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # the schema allows one prompt in a list
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    if body.suffix:
        raise _unsupported("suffix", "suffix is not supported")
    _apply_common(request, body, body.max_tokens)
    if wants_logprobs(body):
        request.options.logprobs = True
        request.options.top_logprobs = max(request.options.top_logprobs, int(body.logprobs))
    if body.echo:
        # The prompt comes back as the model saw it: text, or token ids detokenized.
        request.options.echo_input = True
        request.options.prompt_logprobs |= wants_logprobs(body)
    return request


def wants_logprobs(body: CompletionRequest) -> bool:
    """Completions' ``logprobs`` is a count of alternatives; ``false`` (or absent) is none."""
    return body.logprobs is not None and body.logprobs is not False


# ----------------------------------------------------------------- responses


def usage(u: pb.Usage) -> Usage:
    return Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                 total_tokens=u.prompt_tokens + u.completion_tokens,
                 prompt_tokens_details={"cached_tokens": u.cached_tokens},
                 completion_tokens_details={"reasoning_tokens": u.reasoning_tokens})


def finish_reason(finish: pb.Finish, legacy_functions: bool = False) -> str:
    reason = FINISH_REASONS.get(finish.reason, "stop")
    return "function_call" if legacy_functions and reason == "tool_calls" else reason


def chat_logprobs(items: list[pb.TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.token_bytes),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.token_bytes)}
                    for t in lp.top
                ],
            }
            for lp in items
        ]
    }


def completion_logprobs(items: list[pb.TokenLogprob], offset: int) -> CompletionLogprobs:
    """``offset``: characters before the generated text (an echoed prompt)."""
    return CompletionLogprobs(tokens=[lp.token for lp in items], token_logprobs=[lp.logprob for lp in items],
                              top_logprobs=[{t.token: t.logprob for t in lp.top} for lp in items],
                              text_offset=[offset + lp.text_offset for lp in items])


def echo_logprobs(prompt: pb.InputDetails) -> CompletionLogprobs:
    """The prompt's tokens as OpenAI's echo shows them: the first one has no logprob."""
    rest = completion_logprobs(list(prompt.logprobs), 0)
    first = prompt.text[: prompt.logprobs[0].text_offset] if prompt.logprobs else prompt.text
    return CompletionLogprobs(tokens=[first, *rest.tokens], token_logprobs=[None, *rest.token_logprobs],
                              top_logprobs=[None, *rest.top_logprobs], text_offset=[0, *rest.text_offset])


def prompt_logprobs(prompt: pb.InputDetails) -> list[dict[str, Any] | None]:
    """vLLM's ``prompt_logprobs``: per prompt token, token id → logprob, rank, text."""
    out: list[dict[str, Any] | None] = [None]
    for lp in prompt.logprobs:
        entry = {str(t.token_id): {"logprob": t.logprob, "rank": rank, "decoded_token": t.token}
                 for rank, t in enumerate(lp.top, 1)}
        ranked = entry.get(str(lp.token_id), {}).get("rank")
        entry[str(lp.token_id)] = {"logprob": lp.logprob, "rank": ranked, "decoded_token": lp.token}
        out.append(entry)
    return out


def call_deltas(calls: Any, legacy_functions: bool, first: int = 0) -> list[dict[str, Any]]:
    """Whole calls as OpenAI streams them: per call, a delta that opens it (id, name,
    empty arguments), then one with its arguments; ``first`` is the first call's index."""
    if legacy_functions:
        if first or not calls:
            return []
        call = calls[0]
        return [{"function_call": {"name": call.name, "arguments": ""}},
                {"function_call": {"arguments": call.arguments_json}}]
    deltas = []
    for i, call in enumerate(calls, first):
        deltas.append({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]})
        if call.arguments_json:
            deltas.append({"tool_calls": [{"index": i, "function": {"arguments": call.arguments_json}}]})
    return deltas


def model_object(m: pb.Model) -> ModelObject:
    optional: dict[str, Any] = {}
    if m.embedding_dimensions:
        optional["embedding_dimensions"] = m.embedding_dimensions
    if m.HasField("parallelism"):
        optional["parallelism"] = parallelism(m)
    return ModelObject(id=m.id, object="model", created=m.created, owned_by="mlxrpc",
                       kind=pb.ModelKind.Name(m.kind).removeprefix("MODEL_KIND_").lower(),
                       aliases=list(m.aliases), context_length=m.context_length, quantization=m.quantization,
                       capabilities=list(m.capabilities), **optional)


def parallelism(m: pb.Model) -> dict[str, Any]:
    p = m.parallelism
    return {"mode": p.mode, "world_size": p.world_size, "backend": p.backend}
