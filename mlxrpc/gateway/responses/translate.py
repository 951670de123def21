"""Pure translation of Responses API requests: input items ⇄ chat messages, body → GenerateRequest."""

from __future__ import annotations

import json
from typing import Any

from ...v1 import inference_pb2 as pb
from ..http.errors import ApiError
from ..openai.translate import TOOL_CHOICE_MODES
from .protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    HostedTool,
    McpCallItem,
    McpTool,
    McpToolFilter,
    MessageItem,
    NamespaceTool,
    ResponsesRequest,
)

# The Responses API's efforts, onto the ones chat templates understand.
REASONING_EFFORTS = {"none": "none", "minimal": "low", "low": "low", "medium": "medium",
                     "high": "high", "xhigh": "high"}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# How the MCP service names a server's tool to the model: SERVER__TOOL.
MCP_SEPARATOR = "__"


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _add_call(messages: list[pb.ChatMessage], call: pb.ToolCall) -> None:
    """A call joins the assistant turn it follows, or opens one."""
    if not messages or messages[-1].role != "assistant":
        messages.append(pb.ChatMessage(role="assistant"))
    messages[-1].tool_calls.append(call)


def _message(item: MessageItem, index: int) -> pb.ChatMessage:
    out = pb.ChatMessage(role=item.role)
    if isinstance(item.content, str):
        out.content.add(text=item.content)
        return out
    for j, part in enumerate(item.content):
        if part.type == "input_image":
            if not part.image_url:
                raise _bad(f"input[{index}].content[{j}].image_url",
                           "input_image needs an image_url (file ids are not supported)")
            out.content.add().image.url = part.image_url
        else:
            out.content.add(text=(part.refusal if part.type == "refusal" else part.text) or "")
    return out


def mcp_tool_name(server_label: str, name: str) -> str:
    return f"{server_label}{MCP_SEPARATOR}{name}"


NAMESPACE_SEPARATOR = "."


def namespaced_name(namespace: str | None, name: str, body: ResponsesRequest) -> str:
    """The name the model knows a call's tool by: NAMESPACE.NAME for a tool of a namespace tool."""
    if namespace and namespace in namespaces(body):
        return f"{namespace}{NAMESPACE_SEPARATOR}{name}"
    return name


def namespaces(body: ResponsesRequest) -> dict[str, tuple[str, str]]:
    """Namespace names, and each model-facing NAMESPACE.NAME → (namespace, name)."""
    out: dict[str, tuple[str, str]] = {}
    for tool in body.tools or []:
        if isinstance(tool, NamespaceTool):
            out[tool.name] = (tool.name, "")
            for fn in tool.tools:
                out[f"{tool.name}{NAMESPACE_SEPARATOR}{fn.name}"] = (tool.name, fn.name)
    return out


def skipped_tools(body: ResponsesRequest) -> list[str]:
    """The types of the request's tools this server leaves out of the prompt (hosted ones)."""
    return [tool.type for tool in body.tools or [] if isinstance(tool, HostedTool)]


def input_messages(body: ResponsesRequest) -> list[pb.ChatMessage]:
    """The request's own input as chat messages (without instructions or history)."""
    if isinstance(body.input, str):
        return [pb.ChatMessage(role="user", content=[pb.ContentPart(text=body.input)])] if body.input else []
    messages: list[pb.ChatMessage] = []
    names: dict[str, str] = {}
    for i, item in enumerate(body.input):
        if isinstance(item, MessageItem):
            messages.append(_message(item, i))
        elif isinstance(item, FunctionCallItem):
            names[item.call_id] = name = namespaced_name(item.namespace, item.name, body)
            _add_call(messages, pb.ToolCall(id=item.call_id, type="function", name=name,
                                            arguments_json=item.arguments))
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else "".join(p.text for p in item.output)
            messages.append(pb.ChatMessage(role="tool", tool_call_id=item.call_id,
                                           name=names.get(item.call_id, ""),
                                           content=[pb.ContentPart(text=output)]))
        elif isinstance(item, McpCallItem):
            messages.extend(mcp_messages(item.id, mcp_tool_name(item.server_label, item.name),
                                         item.arguments, item.output or _error_text(item.error)))
    return messages


def mcp_messages(call_id: str, name: str, arguments: str, output: str) -> list[pb.ChatMessage]:
    """A server-side tool call and its result, as the model saw them."""
    return [
        pb.ChatMessage(role="assistant", tool_calls=[pb.ToolCall(id=call_id, type="function", name=name,
                                                                 arguments_json=arguments)]),
        pb.ChatMessage(role="tool", tool_call_id=call_id, name=name, content=[pb.ContentPart(text=output)]),
    ]


def _error_text(error: Any) -> str:
    if error is None:
        return ""
    if isinstance(error, dict):
        content = error.get("content", error.get("message", ""))
        return content if isinstance(content, str) else json.dumps(content)
    return str(error)


def output_messages(output: list[dict[str, Any]]) -> list[pb.ChatMessage]:
    """A response's output items as the assistant turn(s) a continuation replays."""
    messages: list[pb.ChatMessage] = []
    for item in output:
        if item["type"] == "message":
            text = "".join(part["text"] for part in item["content"])
            messages.append(pb.ChatMessage(role="assistant", content=[pb.ContentPart(text=text)]))
        elif item["type"] == "function_call":
            name = item["name"]
            if item.get("namespace"):
                name = f"{item['namespace']}{NAMESPACE_SEPARATOR}{name}"
            _add_call(messages, pb.ToolCall(id=item["call_id"], type="function", name=name,
                                            arguments_json=item["arguments"]))
        elif item["type"] == "mcp_call":
            messages.extend(mcp_messages(item["id"], mcp_tool_name(item["server_label"], item["name"]),
                                         item["arguments"], item.get("output") or _error_text(item.get("error"))))
    return messages


def _unsupported(body: ResponsesRequest) -> None:
    if body.background:
        raise _bad("background", "background responses are not supported")
    if body.conversation is not None:
        raise _bad("conversation", "conversations are not supported; use previous_response_id")
    if body.prompt is not None:
        raise _bad("prompt", "prompt templates are not supported")


def to_proto(body: ResponsesRequest, response_id: str,
             history: list[pb.ChatMessage], own: list[pb.ChatMessage]) -> pb.GenerateRequest:
    """The GenerateRequest for a body, after ``history`` (the previous response's conversation)."""
    _unsupported(body)
    request = pb.GenerateRequest(model=body.model, request_id=response_id)
    if body.instructions:
        request.chat.messages.add(role="system").content.add(text=body.instructions)
    request.chat.messages.extend(history)
    request.chat.messages.extend(own)
    if not history and not own:
        raise _bad("input", "input is required (a string or a list of items)")
    if body.reasoning is not None and body.reasoning.effort is not None:
        request.chat.reasoning_effort = REASONING_EFFORTS[body.reasoning.effort]
    if body.max_output_tokens is not None:
        request.stopping.max_tokens = min(body.max_output_tokens, 2**31 - 1)
    for name in ("temperature", "top_p", "seed"):
        if (value := getattr(body, name)) is not None:
            setattr(request.sampling, name, value)
    if LOGPROBS_INCLUDE in (body.include or []):
        request.options.logprobs = True
        request.options.top_logprobs = body.top_logprobs or 0
    _apply_text_format(request, body)
    _apply_tools(request, body)
    return request


def _apply_text_format(request: pb.GenerateRequest, body: ResponsesRequest) -> None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return
    if fmt.type == "json_object":
        request.response_format.json_object.SetInParent()
        return
    if not fmt.schema_:
        raise _bad("text.format.schema", "text.format.schema is required for json_schema")
    js = request.response_format.json_schema
    js.name = fmt.name or "response"
    js.schema_json = json.dumps(fmt.schema_)
    js.strict = bool(fmt.strict)


def _apply_tools(request: pb.GenerateRequest, body: ResponsesRequest) -> None:
    for i, tool in enumerate(body.tools or []):
        if isinstance(tool, FunctionTool):
            _add_function(request, tool, tool.name)
        elif isinstance(tool, NamespaceTool):
            for fn in tool.tools:
                _add_function(request, fn, f"{tool.name}{NAMESPACE_SEPARATOR}{fn.name}")
        elif isinstance(tool, McpTool):
            request.mcp_tools.append(_mcp_toolset(tool, i))
    if body.parallel_tool_calls is False:
        request.max_tool_calls = 1
    choice = body.tool_choice
    if choice is None:
        return
    if isinstance(choice, str):
        request.tool_choice.mode = TOOL_CHOICE_MODES[choice]
        return
    name = choice.get("name")
    if choice.get("type") != "function" or not isinstance(name, str) or not name:
        raise _bad("tool_choice", "tool_choice must be auto, none, required or "
                   '{"type": "function", "name": ...}')
    namespace = choice.get("namespace")
    request.tool_choice.function_name = namespaced_name(namespace if isinstance(namespace, str) else None,
                                                        name, body)


def _add_function(request: pb.GenerateRequest, tool: FunctionTool, name: str) -> None:
    request.tools.add(type="function", function=pb.FunctionDefinition(
        name=name, description=tool.description or "",
        parameters_json=json.dumps(tool.parameters or {"type": "object", "properties": {}})))


def _mcp_toolset(tool: McpTool, index: int) -> pb.McpToolset:
    if tool.server_url:
        raise _bad(f"tools[{index}].server_url", "only MCP servers configured on the server "
                   "(--mcp-config) can be used; name one by server_label")
    if tool.require_approval not in (None, "never"):
        raise _bad(f"tools[{index}].require_approval", "tool approvals are not supported; "
                   'use require_approval "never"')
    allowed = tool.allowed_tools
    names = allowed.tool_names if isinstance(allowed, McpToolFilter) else allowed
    return pb.McpToolset(server_label=tool.server_label, allowed_tools=names or [])


def split_mcp_name(name: str, labels: list[str]) -> tuple[str, str]:
    """(server_label, tool) of a SERVER__TOOL name, preferring the request's own labels."""
    for label in sorted(labels, key=len, reverse=True):
        if name.startswith(label + MCP_SEPARATOR):
            return label, name[len(label) + len(MCP_SEPARATOR):]
    label, _, tool = name.partition(MCP_SEPARATOR)
    return (label, tool) if tool else ("", name)


def echo_tools(body: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's tools as the Response object repeats them."""
    tools = []
    for tool in body.tools or []:
        data = tool.model_dump(by_alias=True, exclude_none=True)
        if isinstance(tool, FunctionTool):
            data.setdefault("parameters", None)
            data.setdefault("strict", None)
        tools.append(data)
    return tools
