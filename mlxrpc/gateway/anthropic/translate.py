"""Pure translation: Anthropic Messages bodies → proto requests, proto results → Anthropic JSON."""

from __future__ import annotations

import json
from typing import Any

from ...v1 import inference_pb2 as pb
from ..http.errors import ApiError
from .protocol import (
    ContentBlock,
    CountTokensRequest,
    ImageBlock,
    MessagesRequest,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)

# Adjacent text blocks of one turn are joined as paragraphs, not run together.
TEXT_JOINER = "\n\n"

_STOP_REASONS = {
    pb.STOP_REASON_LENGTH: "max_tokens",
    pb.STOP_REASON_CONTEXT_LENGTH: "model_context_window_exceeded",
    pb.STOP_REASON_STOP_SEQUENCE: "stop_sequence",
    pb.STOP_REASON_TOOL_CALLS: "tool_use",
}
_TOOL_CHOICE_MODES = {
    "auto": pb.ToolChoice.MODE_AUTO,
    "any": pb.ToolChoice.MODE_REQUIRED,
    "none": pb.ToolChoice.MODE_NONE,
}
# The error types Anthropic's SDKs map to their exception classes.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def error_body(error: ApiError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "invalid_request_error" if error.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


# ------------------------------------------------------------------ requests


def _image(block: ImageBlock) -> pb.Image:
    source = block.source
    return pb.Image(url=source.url) if source.type == "url" else pb.Image(data=source.data)


def _add_parts(message: pb.ChatMessage, blocks: list[TextBlock | ImageBlock]) -> None:
    """Text and image blocks as content parts, adjacent texts joined."""
    texts: list[str] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            texts.append(block.text)
            continue
        if texts:
            message.content.add(text=TEXT_JOINER.join(texts))
            texts = []
        message.content.add(image=_image(block))
    if texts:
        message.content.add(text=TEXT_JOINER.join(texts))


def _blocks(content: str | list[ContentBlock]) -> list[ContentBlock]:
    return [TextBlock(type="text", text=content)] if isinstance(content, str) else list(content)


def _merged(messages: list[pb.ChatMessage]) -> list[pb.ChatMessage]:
    """Consecutive same-role messages as one turn, as Anthropic combines them
    (strict templates refuse repeated roles); tool messages stay apart."""
    out: list[pb.ChatMessage] = []
    for m in messages:
        last = out[-1] if out else None
        if last is None or last.role != m.role or m.role == "tool":
            out.append(m)
            continue
        parts = list(m.content)
        if parts and last.content and last.content[-1].HasField("text") and parts[0].HasField("text"):
            last.content[-1].text += TEXT_JOINER + parts.pop(0).text
        last.content.extend(parts)
        last.tool_calls.extend(m.tool_calls)
    return out


def _user_turn(blocks: list[ContentBlock], param: str) -> list[pb.ChatMessage]:
    """Tool results become ``tool`` messages in place; other blocks user messages."""
    out: list[pb.ChatMessage] = []
    pending: list[TextBlock | ImageBlock] = []

    def flush() -> None:
        if pending:
            message = pb.ChatMessage(role="user")
            _add_parts(message, pending)
            out.append(message)
            pending.clear()

    for j, block in enumerate(blocks):
        if isinstance(block, ToolResultBlock):
            flush()
            message = pb.ChatMessage(role="tool", tool_call_id=block.tool_use_id)
            _add_parts(message, _blocks(block.content))  # type: ignore[arg-type]
            out.append(message)
        elif isinstance(block, TextBlock | ImageBlock):
            pending.append(block)
        else:
            raise _bad(f"{param}[{j}].type", f"a user message cannot hold {block.type} blocks")
    flush()
    return out


def _assistant_turn(blocks: list[ContentBlock], param: str) -> pb.ChatMessage:
    message = pb.ChatMessage(role="assistant")
    texts: list[TextBlock | ImageBlock] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block)
        elif isinstance(block, ToolUseBlock):
            message.tool_calls.add(id=block.id, type="function", name=block.name,
                                   arguments_json=json.dumps(block.input, ensure_ascii=False))
        elif block.type not in ("thinking", "redacted_thinking"):
            raise _bad(f"{param}[{j}].type", f"an assistant message cannot hold {block.type} blocks")
    _add_parts(message, texts)
    return message


def _system_turn(blocks: list[ContentBlock], param: str) -> pb.ChatMessage:
    texts: list[TextBlock | ImageBlock] = []
    for j, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            raise _bad(f"{param}[{j}].type", "a system prompt holds text blocks only")
        texts.append(block)
    message = pb.ChatMessage(role="system")
    _add_parts(message, texts)
    return message


def to_chat(body: CountTokensRequest) -> pb.ChatInput:
    """System prompt, messages and thinking switch as the proto's chat input."""
    chat = pb.ChatInput()
    messages: list[pb.ChatMessage] = []
    if body.system:
        messages.append(_system_turn(_blocks(body.system), "system"))  # type: ignore[arg-type]
    for i, m in enumerate(body.messages):
        blocks, param = _blocks(m.content), f"messages[{i}].content"
        if m.role == "user":
            messages.extend(_user_turn(blocks, param))
        elif m.role == "assistant":
            messages.append(_assistant_turn(blocks, param))
        else:
            messages.append(_system_turn(blocks, param))
    chat.messages.extend(_merged(messages))
    if body.thinking is not None:
        enabled = body.thinking.type != "disabled"
        chat.template_kwargs_json = json.dumps({"enable_thinking": enabled})
    return chat


def _function(tool: Tool) -> pb.Tool:
    return pb.Tool(type="function", function=pb.FunctionDefinition(
        name=tool.name, description=tool.description or "",
        parameters_json=json.dumps(tool.input_schema, ensure_ascii=False)))


def to_proto(body: MessagesRequest, request_id: str) -> pb.GenerateRequest:
    if body.messages[-1].role == "assistant":
        # Continuing a partial answer needs a continue-final-message the proto
        # lacks; Anthropic answers models without prefill the same way.
        raise _bad(f"messages[{len(body.messages) - 1}].role",
                   "prefill is not supported: the last message must be a user message")
    request = pb.GenerateRequest(model=body.model, request_id=request_id, chat=to_chat(body))
    request.stopping.max_tokens = min(body.max_tokens, 2**31 - 1)
    if body.thinking is not None and body.thinking.type == "enabled" and body.thinking.budget_tokens:
        request.thinking_budget_tokens = min(body.thinking.budget_tokens, 2**32 - 1)
    request.stopping.stop.extend(body.stop_sequences or [])
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(body, name)) is not None:
            setattr(request.sampling, name, value)
    request.tools.extend(_function(t) for t in body.tools or [])
    choice = body.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise _bad("tool_choice.name", "required when tool_choice.type is 'tool'")
            request.tool_choice.function_name = choice.name
        else:
            request.tool_choice.mode = _TOOL_CHOICE_MODES[choice.type]
        if choice.disable_parallel_tool_use:
            request.max_tool_calls = 1
    if body.output_config is not None and body.output_config.format is not None:
        schema = request.response_format.json_schema
        schema.name = "output"
        schema.schema_json = json.dumps(body.output_config.format.schema_, ensure_ascii=False)
        schema.strict = True
    return request


def count_tokens_request(body: CountTokensRequest) -> pb.TokenizeRequest:
    """The chat with its tools, as the template renders them for generation."""
    request = pb.TokenizeRequest(model=body.model, chat=to_chat(body))
    request.tools.extend(_function(t) for t in body.tools or [])
    return request


# ------------------------------------------------------------------ results


def stop_reason(finish: pb.Finish) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence); a call cut off by max_tokens is max_tokens."""
    reason = _STOP_REASONS.get(finish.reason, "end_turn")
    if finish.tool_calls and reason not in ("max_tokens", "model_context_window_exceeded"):
        return "tool_use", None
    return reason, finish.stop_sequence if reason == "stop_sequence" else None


def usage(u: pb.Usage) -> dict[str, Any]:
    """Anthropic counts cache reads apart: input_tokens excludes them."""
    out: dict[str, Any] = {
        "input_tokens": u.prompt_tokens - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_tokens,
    }
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


def tool_input(arguments_json: str) -> dict[str, Any]:
    """Tool input must be an object: a call cut off mid-arguments keeps what
    parses once its open strings and brackets are closed; anything else is {}."""
    try:
        value = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError:
        value = _completed(arguments_json)
    return value if isinstance(value, dict) else {}


def _completed(text: str) -> Any:
    """The longest prefix of a cut JSON text that parses once closed (None: none does)."""
    for end in range(len(text), 0, -1):
        prefix, closers, in_string, escaped = text[:end], [], False, False
        for ch in prefix:
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "{[":
                closers.append("}" if ch == "{" else "]")
            elif ch in "}]" and closers:
                closers.pop()
        candidate = prefix + ('"' if in_string else "") + "".join(reversed(closers))
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None


def thinking_block(thinking: str) -> dict[str, Any]:
    # No signature: nothing here verifies thinking sent back, which is dropped.
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def message_shell(message_id: str, model: str) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}
