"""OpenAI request bodies, validated with pydantic; the limits live on the fields.

Unknown fields are accepted and ignored (clients send many); known fields of
the wrong type or out of range are a 400 naming the field. The bounds are the
proto's (uint32 token ids, int32 top_k, uint64 seed) and the engine's (top_p,
penalties, 20 top logprobs), so nothing that passes here fails to fit the
proto, and docs/openapi.json (built from these models) is as strict as the server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ..http.body import Strict

MAX_INT32 = 2**31 - 1
MAX_UINT32 = 2**32 - 1
MAX_UINT64 = 2**64 - 1
MAX_TOP_LOGPROBS = 20

TokenId = Annotated[int, Field(ge=0, le=MAX_UINT32)]


class ImageURL(Strict):
    url: str = Field(min_length=1)
    detail: str | None = None


class ContentPart(Strict):
    """A text part (``input_text`` as the Responses API names it) or an image; other
    keys (``cache_control`` from Anthropic-minded clients) are ignored."""

    type: Literal["text", "input_text", "image_url"]
    text: str | None = None
    image_url: ImageURL | str | None = None


class FunctionCall(Strict):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(Strict):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    # The legacy functions API: an assistant's call, answered by role "function".
    function_call: FunctionCall | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class JsonSchemaSpec(Strict):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class FunctionDefinition(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(Strict):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class McpToolDefinition(Strict):
    """Tools of a server-configured MCP server (--mcp-config) that the server runs
    itself (an mlxrpc extension, shaped as the Responses API's mcp tool)."""

    type: Literal["mcp"]
    server_label: str = Field(min_length=1)
    allowed_tools: list[str] | None = None


class NamedFunction(Strict):
    name: str = Field(min_length=1)


class NamedToolChoice(Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class Sampling(Strict):
    """Fields shared by chat and text completions (OpenAI's, and vLLM's and mlx servers' extras)."""

    model: str = ""
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, le=MAX_INT32, description="-1 or 0 disables")
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, description="token id (as a string) → bias")
    seed: int | None = Field(default=None, ge=0, le=MAX_UINT64)
    stop: str | list[str] | None = None
    stop_token_ids: list[TokenId] | None = None
    ignore_eos: bool = False
    n: int | None = Field(default=1, ge=1, le=1, description="only 1 is supported")
    best_of: int | None = Field(default=None, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Any = None
    response_format: ResponseFormat | None = None
    # vLLM extensions.
    min_tokens: int | None = Field(default=None, ge=0, le=MAX_UINT32)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool | None = None
    prompt_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    guided_json: dict[str, Any] | None = None
    guided_regex: str | None = Field(default=None, min_length=1)
    guided_choice: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)


class ChatCompletionRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_INT32)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolDefinition | McpToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = Field(default=None, min_length=1)
    function_call: Literal["auto", "none"] | NamedFunction | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = Field(default=None, description="not supported")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    # FastMLX: image URL(s) for the last user message.
    image: str | list[str] | None = None
    # vLLM extras.
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True


class CompletionRequest(Sampling):
    prompt: (Annotated[str, Field(min_length=1)]
             | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
             | Annotated[list[TokenId], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]],
                         Field(min_length=1, max_length=1)])
    logprobs: bool | Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool = False
    suffix: str | None = Field(default=None, description="not supported: only empty")


class LoadModelBody(Strict):
    """POST /v1/models: load a model (admin key)."""

    model: str = Field(min_length=1)
    id: str | None = None



# ------------------------------------------------- answers (docs/openapi.json)
# What the sidecar answers: the OpenAPI document, schemathesis' response checks,
# and the serializers of completions, models and usage (http/answers.py).

FinishReason = Literal["stop", "length", "tool_calls", "function_call"]


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[Annotated[int, Field(ge=0, le=255)]] | None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None


class CalledFunction(BaseModel):
    name: str
    arguments: str = Field(description="JSON text")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: CalledFunction


class FunctionDelta(BaseModel):
    name: str | None = None
    arguments: str | None = Field(default=None, description="a fragment of the JSON text")


class ToolCallDelta(BaseModel):
    """A piece of a streamed call: the first has id, type and name (arguments ""), the next its arguments."""

    index: int = Field(ge=0)
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class Usage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    prompt_tokens_details: dict[Literal["cached_tokens"], Annotated[int, Field(ge=0)]]
    completion_tokens_details: dict[Literal["reasoning_tokens"], Annotated[int, Field(ge=0)]]


class McpCallOut(BaseModel):
    """A tool of a configured MCP server that the server ran itself (an mlxrpc extension)."""

    id: str
    type: Literal["mcp_call"]
    name: str = Field(description="SERVER__TOOL")
    arguments: str = Field(description="JSON text")
    output: str | None
    is_error: bool


class McpCallDelta(BaseModel):
    """A streamed MCP call: the call when it starts (id, type, name, arguments), its output when it ends."""

    index: int = Field(ge=0)
    id: str
    type: Literal["mcp_call"] | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    is_error: bool | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = Field(default=None, description="a reasoning model's thinking")
    tool_calls: list[ToolCallOut] | None = None
    function_call: CalledFunction | None = Field(default=None, description="when the request used functions")
    mcp_calls: list[McpCallOut] | None = Field(default=None, description="MCP tools the server ran")


class ChatChoice(BaseModel):
    index: int = Field(ge=0)
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason


PromptLogprobs = list[dict[str, dict[str, Any]] | None]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice] = Field(min_length=1, max_length=1)
    usage: Usage
    system_fingerprint: str | None
    prompt_logprobs: PromptLogprobs | None = Field(default=None, description="vLLM's, when asked for")


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: FunctionDelta | None = None
    mcp_calls: list[McpCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int = Field(ge=0)
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` event of a chat stream; the last (with ``include_usage``) has
    no choices and the usage."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice] = Field(max_length=1)
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[Annotated[int, Field(ge=0)]]


class CompletionChoice(BaseModel):
    index: int = Field(ge=0)
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None
    prompt_logprobs: PromptLogprobs | None = Field(default=None, description="vLLM's, when asked for")


class Completion(BaseModel):
    """A text completion, or one ``data:`` event of its stream (the last, with
    ``include_usage``, has no choices)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice] = Field(max_length=1)
    usage: Usage | None = None


class Parallelism(BaseModel):
    """How the model is split over a distributed world (``mlxrpc serve --parallel``)."""

    mode: Literal["tensor", "pipeline"]
    world_size: int = Field(ge=2)
    backend: str


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["text", "vision", "embedding"]
    aliases: list[str]
    context_length: int = Field(ge=0)
    quantization: str
    capabilities: list[str]
    embedding_dimensions: int | None = Field(default=None, ge=1)
    parallelism: Parallelism | None = Field(default=None, description="with --parallel")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class DeletedModel(BaseModel):
    id: str
    object: Literal["model"]
    deleted: Literal[True]
