"""The sidecar's OpenAPI description, built from the pydantic schemas.

``python -m mlxrpc.docgen`` rewrites docs/openapi.json; a test fails when the
committed file drifts from the schemas, and tests/test_fuzz_rest.py fuzzes the
live sidecar with it (schemathesis), so the document is as strict as the
server: request bounds and enums come from the request models' field limits,
and every answer has a schema to be checked against. It is built from the
operations the app serves (``app.OPERATIONS``), so a route documents itself.
"""

from __future__ import annotations

import json
import re
from typing import Any, get_args

from pydantic import BaseModel

from .operations import Operation


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _stream_event(model: type[BaseModel], error: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event: JSON of ``model`` or an error, or the closing [DONE]."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [
            {"const": "[DONE]"},
            {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"anyOf": [_ref(model.__name__), _ref(error.__name__)]}},
        ]}},
    }


def _named_events(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """One server-sent event named by its ``type``: each name with its own model."""
    return {"anyOf": [
        {"type": "object", "required": ["event", "data"], "properties": {
            "event": {"enum": list(get_args(model.model_fields["type"].annotation))},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": _ref(model.__name__)}}}
        for model in models]}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for name in re.findall(r"\{(\w+)\}", op.documented_path)]
    params += [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
               for name in op.query]
    return params


def _operation(op: Operation) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if op.response is not None:
        content[op.media_type] = {"schema": _ref(op.response.__name__)}
    else:
        content[op.media_type] = {"schema": {"type": "string"}}
    if op.stream is not None:
        content["text/event-stream"] = {"schema": _stream_event(op.stream, op.dialect.body)}
    elif op.events:
        content["text/event-stream"] = {"schema": _named_events(op.events)}
    responses: dict[str, Any] = {str(op.status): {"description": op.summary, "content": content}}
    for status in op.also:
        responses[str(status)] = {"description": op.summary, "content": content}
    for status in op.errors:
        responses[str(status)] = {"description": "error body",
                                  "content": {"application/json": {"schema": _ref(op.dialect.body.__name__)}}}
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if params := _parameters(op):
        out["parameters"] = params
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _ref(op.request.__name__)}}}
    return out


def _add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
        if schemas.setdefault(name, definition) != definition:
            raise ValueError(f"two different schemas are named {name}")


def build(operations: list[Operation]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for op in operations:
        for model in (op.request, op.response, op.stream, op.dialect.body, *op.events):
            if model is not None:
                _add_schema(schemas, model)
        paths.setdefault(op.documented_path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlxrpc OpenAI-compatible REST sidecar", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def render(operations: list[Operation]) -> str:
    return json.dumps(build(operations), indent=2, sort_keys=True) + "\n"
