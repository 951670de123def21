"""Request size and shape limits, checked before any work is done.

Each check here is cheap (lengths, a bracket scan) and guards a step that is
not: tokenizing a 10 MB prompt stalls the request side for seconds, a JSON
document nested a thousand levels deep overflows Python's recursion limit
in json.loads, grammar compilation and template rendering, and a client's own
Jinja template (``chat_template_kwargs.chat_template``) runs arbitrary loops
on the server. Every refusal is INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import json

from ..engine.errors import invalid
from ..limits import MAX_JSON_DEPTH, json_depth
from ..settings import ServiceSettings
from ..v1 import inference_pb2 as pb

# chat_template_kwargs keys that replace the model's template with the client's.
TEMPLATE_KEYS = ("chat_template", "tools_template")


def check_limits(request: pb.GenerateRequest, settings: ServiceSettings) -> None:
    """Refuses a Generate request over a limit; runs before model lookup or parsing."""
    which = request.WhichOneof("input")
    if which == "text":
        _check_prompt_bytes(len(request.text.encode()), "text", settings)
    elif which == "chat":
        _check_chat(request.chat, settings)
    if request.response_format.WhichOneof("format") == "json_schema":
        check_json_depth(request.response_format.json_schema.schema_json, "response_format.json_schema")
    _check_tools(request.tools)


def check_tokenize_limits(request: pb.TokenizeRequest, settings: ServiceSettings) -> None:
    """The Tokenize RPC's input goes through the same prompt limits as Generate's."""
    if request.WhichOneof("input") == "text":
        _check_prompt_bytes(len(request.text.encode()), "text", settings)
    elif request.WhichOneof("input") == "chat":
        _check_chat(request.chat, settings)
    _check_tools(request.tools)


def _check_prompt_bytes(size: int, field: str, settings: ServiceSettings) -> None:
    if size > settings.max_prompt_bytes:
        raise invalid(field, f"the prompt is {size} bytes, more than the server's limit of "
                             f"{settings.max_prompt_bytes} (--max-prompt-bytes)")


def _check_chat(chat: pb.ChatInput, settings: ServiceSettings) -> None:
    if len(chat.messages) > settings.max_messages:
        raise invalid("messages", f"{len(chat.messages)} messages, more than the server's limit of "
                                  f"{settings.max_messages} (--max-messages)")
    size = images = 0
    for i, message in enumerate(chat.messages):
        size += len(message.name.encode()) + len(message.tool_call_id.encode())
        for part in message.content:
            if part.WhichOneof("part") == "image":
                images += 1
            else:
                size += len(part.text.encode())
        for j, call in enumerate(message.tool_calls):
            size += len(call.arguments_json.encode()) + len(call.name.encode())
            check_json_depth(call.arguments_json, f"messages[{i}].tool_calls[{j}].arguments")
    _check_prompt_bytes(size, "messages", settings)
    if images > settings.max_images:
        raise invalid("images", f"{images} images, more than the server's limit of {settings.max_images} "
                                "(--max-images)")
    check_json_depth(chat.template_kwargs_json, "chat_template_kwargs")
    _check_template_kwargs(chat.template_kwargs_json, settings)


def _check_tools(tools: list[pb.Tool]) -> None:
    for i, tool in enumerate(tools):
        check_json_depth(tool.function.parameters_json, f"tools[{i}].function.parameters")


def _check_template_kwargs(text: str, settings: ServiceSettings) -> None:
    """A client-supplied template is code the server runs: only with the operator's consent."""
    if settings.allow_request_chat_template or not text:
        return
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError:
        return  # the conversion names the bad JSON
    for key in TEMPLATE_KEYS:
        if isinstance(kwargs, dict) and key in kwargs:
            raise invalid(f"chat_template_kwargs.{key}",
                          f"chat_template_kwargs.{key}: this server does not accept chat templates "
                          "in requests (the operator can allow them with --allow-request-chat-template)")


def check_json_depth(text: str, field: str) -> None:
    if text and json_depth(text) > MAX_JSON_DEPTH:
        raise invalid(field, f"{field} is nested more than {MAX_JSON_DEPTH} levels deep")
