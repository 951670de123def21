"""Pure translation: OpenAI's four input shapes → EmbedRequest, EmbedResponse → OpenAI's list."""

from __future__ import annotations

import base64
import struct
from typing import Any

from ...v1 import inference_pb2 as pb
from ..http.errors import ApiError
from .protocol import MAX_TOKEN_ID, Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _is_token(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKEN_ID


def _token_ids(values: list[Any], param: str) -> pb.EmbedInput:
    if not all(_is_token(v) for v in values):
        raise _bad(param, f"{param} must hold token ids (integers from 0 to {MAX_TOKEN_ID})")
    return pb.EmbedInput(token_ids=pb.TokenIds(ids=values))


def to_inputs(value: str | list[Any]) -> list[pb.EmbedInput]:
    """OpenAI's four input shapes as EmbedInputs; emptiness and lengths are the engine's to check."""
    if isinstance(value, str):
        return [pb.EmbedInput(text=value)]
    if value and all(type(v) is int for v in value):  # one input as token ids
        return [_token_ids(value, "input")]
    inputs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            inputs.append(pb.EmbedInput(text=item))
        elif isinstance(item, list):
            inputs.append(_token_ids(item, f"input[{i}]"))
        else:
            raise _bad(f"input[{i}]", f"input[{i}] must be a string or a list of token ids")
    return inputs


def to_proto(body: EmbeddingRequest) -> pb.EmbedRequest:
    return pb.EmbedRequest(model=body.model or "", inputs=to_inputs(body.input), dimensions=body.dimensions or 0)


def encode(values: list[float], encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return list(values)


def to_response(reply: pb.EmbedResponse, encoding_format: str | None) -> EmbeddingList:
    return EmbeddingList(
        object="list",
        data=[Embedding(object="embedding", index=i, embedding=encode(list(e.values), encoding_format))
              for i, e in enumerate(reply.embeddings)],
        model=reply.model,
        usage=EmbeddingUsage(prompt_tokens=reply.usage.prompt_tokens, total_tokens=reply.usage.total_tokens))
