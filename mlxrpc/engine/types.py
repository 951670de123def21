"""Plain request and event types exchanged between callers and the engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextPrompt:
    text: str


@dataclass
class ImageInput:
    """One image of a chat prompt: a URL, encoded bytes, or a server path."""

    url: str = ""
    data: bytes = b""
    path: str = ""


@dataclass
class ChatPrompt:
    """Messages in the OpenAI/Hugging Face chat-template shape.

    Image parts appear in message content as {"type": "image"}; ``images``
    holds them in order of appearance.
    """

    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    images: list[ImageInput] = field(default_factory=list)
    # "low" / "medium" / "high" / "none", mapped onto what the template understands.
    reasoning_effort: str = ""


@dataclass
class TokenPrompt:
    ids: list[int]


Prompt = TextPrompt | ChatPrompt | TokenPrompt


@dataclass
class SamplingParams:
    """Unset (None) fields take the server defaults."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None


@dataclass
class StoppingParams:
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    # EOS and stop token ids are masked until this many tokens were generated.
    min_tokens: int = 0
    include_stop_str_in_output: bool = False


@dataclass(frozen=True)
class ResponseFormat:
    """What the output must match; exactly one field is set."""

    json_object: bool = False
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    choices: tuple[str, ...] | None = None


class ToolChoice(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    FUNCTION = "function"  # the named function in GenerationRequest.tool_function


@dataclass
class GenerationRequest:
    model: str
    prompt: Prompt
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stopping: StoppingParams = field(default_factory=StoppingParams)
    logprobs: bool = False
    top_logprobs: int = 0
    echo_input: bool = False
    request_id: str = ""
    response_format: ResponseFormat | None = None
    # Tools themselves travel in ChatPrompt.tools (the template renders them).
    tool_choice: ToolChoice = ToolChoice.AUTO
    tool_function: str = ""
    # At most this many tool calls in the answer (0: no limit).
    max_tool_calls: int = 0
    # At most this many thinking tokens (0: the reasoning effort's budget, if any).
    thinking_budget: int = 0
    skip_special_tokens: bool = True
    # Log-probabilities of the prompt's tokens (with echo of the input).
    prompt_logprobs: bool = False


class StopReason(enum.Enum):
    LENGTH = "length"
    STOP_SEQUENCE = "stop_sequence"
    EOS = "eos"
    STOP_TOKEN = "stop_token"
    TOOL_CALLS = "tool_calls"
    CONTEXT_LENGTH = "context_length"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Timings:
    queue_seconds: float = 0.0
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0
    decode_tokens_per_second: float = 0.0


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)
    # The token's own bytes (a partial UTF-8 character stays partial here).
    token_bytes: bytes = b""
    top_bytes: list[bytes] = field(default_factory=list)
    # Characters of text before this token (generated text, or the prompt's).
    text_offset: int = 0


@dataclass
class ToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass
class ToolCallDelta:
    """A piece of a tool call as the model writes it.

    A call's first delta has its ``index``, ``id`` and ``name``; later ones
    carry only text to append to its JSON ``arguments``. The concatenation of
    a call's deltas equals its ``ToolCall`` in ``Finish.tool_calls``.
    """

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Finish:
    reason: StopReason
    usage: Usage
    timings: Timings
    stop_sequence: str = ""
    stop_token_id: int | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    seed: int = 0


@dataclass
class InputDetails:
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Chunk:
    """One hand-off to the caller: a text delta and the tokens behind it.

    The first chunk carries ``input`` (when asked for); the last one ``finish``.
    """

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: Finish | None = None
    input: InputDetails | None = None
    # A reasoning model's thinking, apart from the answer in ``text``.
    reasoning: str = ""
    # The model's own tool calls as they are written (see ToolCallDelta).
    tool_call_deltas: list[ToolCallDelta] = field(default_factory=list)


class ModelKind(enum.Enum):
    TEXT = "text"
    VISION = "vision"
    EMBEDDING = "embedding"


@dataclass(frozen=True)
class Parallelism:
    """How a model is split over a distributed world (distributed/)."""

    mode: str
    world_size: int
    backend: str


@dataclass(frozen=True)
class KVCacheInfo:
    """A model's KV-cache layout and its bytes now (see engine/kv_budget.py)."""

    bytes_per_token: int = 0
    bits: int = 0
    group_size: int = 0
    max_kv_size: int = 0
    budget_bytes: int = 0
    reserved_bytes: int = 0
    in_use_bytes: int = 0
    cached_bytes: int = 0
    waiting: int = 0


@dataclass
class ModelDescription:
    id: str
    aliases: list[str]
    kind: ModelKind
    source: str
    loaded: bool
    created: int
    context_length: int
    vocab_size: int
    quantization: str
    architecture: str
    eos_token_ids: list[int]
    has_chat_template: bool
    # Length of an embedding vector (embedding models), else 0.
    embedding_dimensions: int = 0
    capabilities: list[str] = field(default_factory=list)
    parallelism: Parallelism | None = None
    kv_cache: KVCacheInfo | None = None
