"""The sidecar's OpenAPI description, built from the request schemas.

``python -m mlxrpc.docgen`` rewrites docs/openapi.json; a test fails when the
committed file drifts from the schemas.
"""

from __future__ import annotations

import json
from typing import Any

from .schema import ChatCompletionRequest, CompletionRequest

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type", "param", "code"],
        }
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "OpenAI error body",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _generation(summary: str, schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
            },
            "responses": {
                "200": {
                    "description": "A completion (JSON), or with stream=true server-sent events "
                    "ending in `data: [DONE]`",
                    "content": {"application/json": {}, "text/event-stream": {}},
                },
                **_errors(400, 404, 413, 429, 500, 501, 503, 504),
            },
        }
    }


def build() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    for model in (ChatCompletionRequest, CompletionRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlxrpc OpenAI-compatible REST sidecar", "version": "1"},
        "paths": {
            "/v1/chat/completions": _generation("Chat completion", "ChatCompletionRequest"),
            "/v1/completions": _generation("Text completion", "CompletionRequest"),
            "/v1/models": {"get": {"summary": "List models",
                                   "responses": {"200": {"description": "Model list"}}}},
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model",
                    "parameters": [{"name": "model", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "Model"}, **_errors(404)},
                }
            },
            "/health": {"get": {"summary": "Engine health", "responses": {
                "200": {"description": "serving"}, "503": {"description": "not serving"}}}},
        },
        "components": {"schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"
