"""Anthropic Messages API bodies and answers (POST /v1/messages, /v1/messages/count_tokens).

As in every surface's requests, unknown fields (``metadata``, ``service_tier``, cache
controls, ...) are accepted and ignored; known fields of the wrong type, and
block, source and tool types this server cannot honour (documents, files,
server tools), are a 400 naming the field.
"""

from __future__ import annotations

import base64
import operator
from functools import reduce
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, Discriminator, Field, Tag, WithJsonSchema

from ..http.answers import Count
from ..http.body import Strict

# Unions list the block form first, so a malformed block is reported as itself
# rather than as "Input should be a valid string".


def _tagged(*models: type[Strict]) -> Any:
    """A union chosen by ``type``, tagged by class name so error params read
    ``messages[0].content[1].text`` (errors.py drops class names from locs)."""
    tags = {get_args(m.model_fields["type"].annotation)[0]: m.__name__ for m in models}

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return tags.get(kind) if isinstance(kind, str) else None

    members = reduce(operator.or_, (Annotated[m, Tag(m.__name__)] for m in models))
    return Annotated[members, Discriminator(
        tag, custom_error_type="invalid_type",
        custom_error_message=f"type must be one of: {', '.join(tags)}")]


class TextBlock(Strict):
    type: Literal["text"]
    text: str


def _base64(value: Any) -> Any:
    """Decoded while validating, so a bad payload is a 400 naming its own field."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise ValueError("not valid base64") from None


class Base64Source(Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: Annotated[bytes, BeforeValidator(_base64), Field(min_length=1),
                    WithJsonSchema({"type": "string", "contentEncoding": "base64", "minLength": 1})]


class UrlSource(Strict):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(Strict):
    type: Literal["image"]
    source: _tagged(Base64Source, UrlSource)


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


ToolResultContent = _tagged(TextBlock, ImageBlock)


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: list[ToolResultContent] | str = ""
    # Accepted; the proto's tool message has no error flag (the content says it).
    is_error: bool = False


class ThinkingBlock(Strict):
    """Earlier thinking sent back as history: accepted, not shown to the model
    (chat templates drop past reasoning, and the proto has no field for it)."""

    type: Literal["thinking"]
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(Strict):
    type: Literal["redacted_thinking"]
    data: str = ""


ContentBlock = _tagged(TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock,
                       RedactedThinkingBlock)


class MessageParam(Strict):
    # "system" as a message is the newer SDKs' SystemMessageParam.
    role: Literal["user", "assistant", "system"]
    content: list[ContentBlock] | str


class Tool(Strict):
    """A client tool; server tools (web search, bash, ...) have other types and are refused."""

    type: Literal["custom"] | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    # Required for type "tool".
    name: str | None = None
    disable_parallel_tool_use: bool = False


class ThinkingConfig(Strict):
    """Turns a reasoning model's thinking on or off through its chat template.

    ``budget_tokens`` (with ``enabled``) is enforced: when the model has thought
    that many tokens, the server closes its thinking block and it answers.
    """

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=1)


class JsonOutputFormat(Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Strict):
    format: JsonOutputFormat | None = None
    # Accepted and ignored: the proto's reasoning effort refuses models without one.
    effort: str | None = None


class _Conversation(Strict):
    """What the model is shown: shared by messages and count_tokens."""

    model: str
    messages: list[MessageParam] = Field(min_length=1, max_length=100_000)
    system: list[TextBlock] | str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(_Conversation):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, lt=2**31)
    stream: bool = False
    output_config: OutputConfig | None = None
    # Accepted and ignored (Anthropic's end-user id).
    metadata: dict[str, Any] | None = None


class CountTokensRequest(_Conversation):
    """The conversation alone: counting needs no sampling or stopping."""


# ------------------------------------------------------------------ answers


class AnthropicErrorDetail(BaseModel):
    type: Literal["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                  "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error"]
    message: str


class AnthropicError(BaseModel):
    """Anthropic's in-band ``error`` event, after which the stream ends."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicErrorBody(AnthropicError):
    """Anthropic's error body on the /v1/messages routes."""

    request_id: str


class AnthropicUsage(BaseModel):
    input_tokens: Count
    output_tokens: Count
    cache_creation_input_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    output_tokens_details: dict[Literal["thinking_tokens"], Count] | None = None


class TextContent(BaseModel):
    type: Literal["text"]
    text: str


class ThinkingContent(BaseModel):
    type: Literal["thinking"]
    thinking: str
    signature: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


AnthropicContent = TextContent | ThinkingContent | ToolUseContent
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"]


class AnthropicMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicContent]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: AnthropicUsage


class TokenCount(BaseModel):
    input_tokens: Count


class MessageStart(BaseModel):
    type: Literal["message_start"]
    message: AnthropicMessage


class Ping(BaseModel):
    type: Literal["ping"]


class ContentBlockStart(BaseModel):
    type: Literal["content_block_start"]
    index: Count
    content_block: AnthropicContent


class TextDelta(BaseModel):
    type: Literal["text_delta"]
    text: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"]
    thinking: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"]
    partial_json: str


class ContentBlockDelta(BaseModel):
    type: Literal["content_block_delta"]
    index: Count
    delta: TextDelta | ThinkingDelta | InputJsonDelta


class ContentBlockStop(BaseModel):
    type: Literal["content_block_stop"]
    index: Count


class StopDelta(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None


class MessageDelta(BaseModel):
    type: Literal["message_delta"]
    delta: StopDelta
    usage: AnthropicUsage


class MessageStop(BaseModel):
    type: Literal["message_stop"]


ANTHROPIC_EVENTS = (MessageStart, Ping, ContentBlockStart, ContentBlockDelta, ContentBlockStop, MessageDelta,
                    MessageStop, AnthropicError)
