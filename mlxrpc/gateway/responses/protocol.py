"""OpenAI Responses API bodies and answers (POST /v1/responses), validated with pydantic.

As in every surface's requests, unknown fields are accepted and ignored; known fields of the
wrong type, and item, part and tool types this server cannot honour, are a
400 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag

from ..http.answers import Count
from ..http.body import Strict


def _tag_of(value: Any) -> str | None:
    """The ``type`` of an item or tool; None unless it is a string (a 400 then, not a crash)."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if isinstance(kind, str) else None


def _text_or(items: Any) -> Any:
    """``str | list[...]`` whose errors name the list element, not the string branch.

    The tags are capitalised so the 400's param leaves them out (see errors._param).
    """
    return Annotated[Annotated[str, Tag("Text")] | Annotated[items, Tag("Items")],
                     Discriminator(lambda v: "Text" if isinstance(v, str) else "Items")]


# ------------------------------------------------------------------ input items


class InputContentPart(Strict):
    type: Literal["input_text", "output_text", "refusal", "input_image"]
    text: str | None = None
    refusal: str | None = None
    # input_image: an http(s) or data: URL (file ids need a files API this server lacks).
    image_url: str | None = None
    detail: str | None = None


class MessageItem(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: _text_or(list[InputContentPart])
    id: str | None = None
    status: str | None = None


class FunctionCallItem(Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    # A call of a tool in a namespace tool (see NamespaceTool).
    namespace: str | None = None
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None


class OutputTextPart(Strict):
    type: Literal["input_text", "output_text"]
    text: str


class FunctionCallOutputItem(Strict):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: _text_or(list[OutputTextPart])
    id: str | None = None
    status: str | None = None


class ReasoningItem(Strict):
    """Accepted so clients can send back a whole previous output; not shown to the model."""

    type: Literal["reasoning"]
    id: str | None = None


class McpCallItem(Strict):
    """A server-side tool call from an earlier response, sent back as history."""

    type: Literal["mcp_call"]
    id: str = ""
    server_label: str
    name: str
    arguments: str = "{}"
    output: str | None = None
    error: Any = None


_ITEM_TAGS = {"message": "MessageItem", "function_call": "FunctionCallItem",
              "function_call_output": "FunctionCallOutputItem", "reasoning": "ReasoningItem",
              "mcp_call": "McpCallItem"}


def _item_tag(value: Any) -> str | None:
    """Items without a type are messages (the SDK's EasyInputMessage)."""
    kind = _tag_of(value)
    if kind is None and isinstance(value, dict) and value.get("role"):
        kind = "message"
    return _ITEM_TAGS.get(kind or "")


InputItem = Annotated[
    Annotated[MessageItem, Tag("MessageItem")]
    | Annotated[FunctionCallItem, Tag("FunctionCallItem")]
    | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutputItem")]
    | Annotated[ReasoningItem, Tag("ReasoningItem")]
    | Annotated[McpCallItem, Tag("McpCallItem")],
    Discriminator(_item_tag, custom_error_type="invalid_item",
                  custom_error_message="unsupported input item type; this server takes message, "
                  "function_call, function_call_output, reasoning and mcp_call items"),
]

# ------------------------------------------------------------------ tools


class FunctionTool(Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class McpToolFilter(Strict):
    tool_names: list[str] | None = None


class McpTool(Strict):
    """A server configured with --mcp-config, by its name; the service runs its tools."""

    type: Literal["mcp"]
    server_label: str = Field(min_length=1)
    allowed_tools: list[str] | McpToolFilter | None = None
    require_approval: Literal["never"] | dict[str, Any] | None = None
    server_url: str | None = None


class NamespaceTool(Strict):
    """A group of function tools (Codex's ``multi_agent_v1``, ...): the model sees each as
    ``NAMESPACE.NAME``, and its calls come back as ``name`` with ``namespace``."""

    type: Literal["namespace"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    tools: list[FunctionTool] = Field(max_length=128)


# OpenAI's hosted tools, and tools whose calls need item types this server
# does not write: left out of the prompt and named in the X-Skipped-Tools header.
HOSTED_TOOLS = ("web_search", "web_search_preview", "web_search_preview_2025_03_11", "file_search",
                "code_interpreter", "computer_use_preview", "computer_use", "image_generation", "local_shell",
                "shell", "apply_patch", "custom", "tool_search")


class HostedTool(BaseModel):
    """A tool only OpenAI (or a client item type this server lacks) can run; its settings are kept as sent."""

    model_config = {"extra": "allow"}

    type: Literal[HOSTED_TOOLS]  # type: ignore[valid-type]


_TOOL_TAGS = {"function": "FunctionTool", "mcp": "McpTool", "namespace": "NamespaceTool",
              **dict.fromkeys(HOSTED_TOOLS, "HostedTool")}
ToolSpec = Annotated[
    Annotated[FunctionTool, Tag("FunctionTool")] | Annotated[McpTool, Tag("McpTool")]
    | Annotated[NamespaceTool, Tag("NamespaceTool")] | Annotated[HostedTool, Tag("HostedTool")],
    Discriminator(lambda v: _TOOL_TAGS.get(_tag_of(v) or ""), custom_error_type="invalid_tool",
                  custom_error_message="unsupported tool type; this server takes function, namespace and mcp "
                  f"tools (hosted ones are skipped: {', '.join(HOSTED_TOOLS)})"),
]

# ------------------------------------------------------------------ options


class TextFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesRequest(Strict):
    model: str = ""
    input: _text_or(list[InputItem]) = Field(
        default="", description="required (not empty) unless previous_response_id continues a conversation")
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[ToolSpec] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[str] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    user: str | None = None
    stream: bool = False
    store: bool = True
    truncation: Literal["auto", "disabled"] | None = None
    # Not offered here: a 400 when set.
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    # mlx/vLLM extension: per-request seed.
    seed: int | None = Field(default=None, ge=0)


# ------------------------------------------------------------------ answers


class OutputTextContent(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[dict[str, Any]] | None = None


class ReasoningTextContent(BaseModel):
    type: Literal["reasoning_text"]
    text: str


ItemStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    status: ItemStatus
    content: list[OutputTextContent]


class OutputReasoning(BaseModel):
    id: str
    type: Literal["reasoning"]
    status: ItemStatus
    summary: list[Any]
    content: list[ReasoningTextContent]


class OutputFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"]
    call_id: str
    name: str
    # Set on a call of a tool in a namespace tool.
    namespace: str | None = None
    arguments: str = Field(description="JSON text")
    status: ItemStatus


class OutputMcpCall(BaseModel):
    id: str
    type: Literal["mcp_call"]
    server_label: str
    name: str
    arguments: str
    output: str | None
    error: dict[str, Any] | None
    status: ItemStatus


OutputItem = OutputMessage | OutputReasoning | OutputFunctionCall | OutputMcpCall


class ResponseUsage(BaseModel):
    input_tokens: Count
    input_tokens_details: dict[Literal["cached_tokens", "cache_write_tokens"], Count]
    output_tokens: Count
    output_tokens_details: dict[Literal["reasoning_tokens"], Count]
    total_tokens: Count


class ResponseFailure(BaseModel):
    code: Literal["server_error", "rate_limit_exceeded"]
    message: str


class ResponseReasoning(BaseModel):
    effort: str | None
    summary: str | None


class ResponseObject(BaseModel):
    """A response, as created, streamed (in lifecycle events), fetched or stored."""

    id: str
    object: Literal["response"]
    created_at: int
    status: ItemStatus
    background: bool
    error: ResponseFailure | None
    incomplete_details: dict[Literal["reason"], str] | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ResponseReasoning
    store: bool
    temperature: float | None
    text: dict[Literal["format"], dict[str, Any]]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    top_p: float | None
    truncation: Literal["auto", "disabled"]
    usage: ResponseUsage | None
    user: str | None
    metadata: dict[str, str]


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"]
    deleted: Literal[True]


class _Sequenced(BaseModel):
    sequence_number: Count


class ResponseLifecycleEvent(_Sequenced):
    type: Literal["response.created", "response.in_progress", "response.completed", "response.incomplete",
                  "response.failed"]
    response: ResponseObject


class OutputItemEvent(_Sequenced):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: Count
    item: OutputItem


class _ItemEvent(_Sequenced):
    item_id: str
    output_index: Count


class ContentPartEvent(_ItemEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    content_index: Count
    part: OutputTextContent | ReasoningTextContent


class TextDeltaEvent(_ItemEvent):
    type: Literal["response.output_text.delta", "response.reasoning_text.delta"]
    content_index: Count
    delta: str
    logprobs: list[dict[str, Any]] | None = None


class TextDoneEvent(_ItemEvent):
    type: Literal["response.output_text.done", "response.reasoning_text.done"]
    content_index: Count
    text: str
    logprobs: list[dict[str, Any]] | None = None


class ArgumentsDeltaEvent(_ItemEvent):
    type: Literal["response.function_call_arguments.delta", "response.mcp_call_arguments.delta"]
    delta: str


class ArgumentsDoneEvent(_ItemEvent):
    type: Literal["response.function_call_arguments.done", "response.mcp_call_arguments.done"]
    arguments: str
    name: str | None = None


class McpCallEvent(_ItemEvent):
    type: Literal["response.mcp_call.in_progress", "response.mcp_call.completed", "response.mcp_call.failed"]


class ResponseErrorEvent(_Sequenced):
    """An in-band error; ``response.failed`` follows it."""

    type: Literal["error"]
    code: str | None
    message: str
    param: str | None


RESPONSE_EVENTS = (ResponseLifecycleEvent, OutputItemEvent, ContentPartEvent, TextDeltaEvent, TextDoneEvent,
                   ArgumentsDeltaEvent, ArgumentsDoneEvent, McpCallEvent, ResponseErrorEvent)
