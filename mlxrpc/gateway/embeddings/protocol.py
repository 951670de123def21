"""OpenAI's embeddings request and answer.

``input`` is a string, a list of strings, a list of token ids or a list of
token-id lists, as the OpenAI API takes it; ``encoding_format: "base64"`` gives
each vector as the base64 of its little-endian float32 bytes, which the openai
SDK asks for by default and decodes itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, WithJsonSchema

from ..http.answers import Count
from ..http.body import Strict

MAX_TOKEN_ID = 2**32 - 1
_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}}
_TEXT = {"type": "string", "minLength": 1}
INPUT_SCHEMA = {"anyOf": [_TEXT, _TOKENS, {"type": "array", "minItems": 1, "items": {"anyOf": [_TEXT, _TOKENS]}}]}


class EmbeddingRequest(Strict):
    """OpenAI's CreateEmbeddingRequest."""

    model: str | None = None
    # Checked by to_inputs (its 400s name input[i]); the document states the shapes exactly.
    input: Annotated[str | list[Any], WithJsonSchema(INPUT_SCHEMA)] = Field(
        description="a string, a list of token ids, or a list of strings and token-id lists")
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1, le=MAX_TOKEN_ID)
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: Count
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingUsage(BaseModel):
    prompt_tokens: Count
    total_tokens: Count


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
