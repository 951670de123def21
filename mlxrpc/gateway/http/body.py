"""Request bodies: the pydantic bases every surface's request models extend, and the one body parser.

The parser refuses what would fail later and worse (nesting that overflows the
recursion limit, non-JSON constants, lone surrogates protobuf cannot encode)
with a 400 naming the place, before pydantic sees the body.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from ...limits import MAX_JSON_DEPTH, json_depth
from .errors import ApiError, from_validation_error

# The body's own nesting (messages[].tool_calls[].function.arguments) around
# the free JSON values the engine bounds at MAX_JSON_DEPTH.
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8

Body = TypeVar("Body", bound=BaseModel)


class Strict(BaseModel):
    """The base of every request model. Known fields take their JSON type only
    (no ``"0.5"`` or ``false`` for a number, as OpenAI answers); unknown fields
    are accepted and ignored (clients send many)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False, strict=True)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def parse_body(request: web.Request, schema: type[Body]) -> Body:
    """The request's JSON body as ``schema``, or an ApiError (400) naming what is wrong."""
    raw = await request.read()
    # Deeper JSON would overflow the recursion limit (here, in pydantic or json.dumps): a 400, not a 500.
    if json_depth(raw) > MAX_BODY_DEPTH:
        raise ApiError(400, f"the request body is nested more than {MAX_BODY_DEPTH} levels deep",
                       code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    if (where := lone_surrogate(data)) is not None:
        raise ApiError(400, f"{where or 'the body'}: text holds a lone surrogate, which is not valid "
                       "Unicode", param=where or None, code="invalid_value")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path (``messages[0].content``) of the first string holding a lone
    surrogate (JSON's ``"\\ud800"``), which protobuf refuses to encode; None if none."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not _encodes(str(key)):
                return where
            if (found := lone_surrogate(item, where)) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := lone_surrogate(item, f"{path}[{i}]")) is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
