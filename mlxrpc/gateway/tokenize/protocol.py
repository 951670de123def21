"""vLLM's tokenize and detokenize bodies and answers.

Clients written for vLLM (prompt budgeting, RL trainers) count tokens with these
routes; the shapes follow vLLM's TokenizeRequest / DetokenizeRequest.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..http.answers import Count
from ..http.body import Strict
from ..openai.protocol import Message, ToolDefinition

TokenId = Annotated[int, Field(ge=0, lt=2**32)]


class TokenizeBody(Strict):
    """vLLM's TokenizeCompletionRequest (``prompt``) or TokenizeChatRequest (``messages``)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool | None = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[ToolDefinition] | None = None


class DetokenizeBody(Strict):
    model: str | None = None
    tokens: list[TokenId]


class TokenizeResult(BaseModel):
    count: Count
    max_model_len: Count
    tokens: list[Count]
    token_strs: list[str] | None


class DetokenizeResult(BaseModel):
    prompt: str
