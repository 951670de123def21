"""Answers written by their protocol models: one description per shape, serialized by pydantic-core.

A model writes the fields it was built with, explicit nulls included, and
leaves out the defaults nobody set (``usage`` on a mid-stream chunk), so the
builders say what a body holds by building it.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

# A count in an answer (tokens, items).
Count = Annotated[int, Field(ge=0)]


def to_json(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model, exclude_unset=True)


def json_answer(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=to_json(model), status=status, headers=headers, content_type="application/json",
                        charset="utf-8")


def sse_data(model: BaseModel) -> bytes:
    """One ``data:`` event holding the model's JSON."""
    return b"data: " + to_json(model) + b"\n\n"
