"""Docs that code must keep true: the REST routes and REST ⇄ proto tables, the OpenAPI file, the settings table."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

from mlxrpc import docgen
from mlxrpc.gateway.app import OPERATIONS
from mlxrpc.gateway.http import openapi
from mlxrpc.gateway.openai.protocol import ChatCompletionRequest, CompletionRequest, Message
from mlxrpc.settings import Settings
from mlxrpc.v1 import inference_pb2 as pb

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section(title: str) -> str:
    """One ``## title`` section of docs/api.md, up to the next ``## ``."""
    return (DOCS / "api.md").read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def api_table() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| `([^`]+)`[^|]*\| (`[^`]+`|—) \|", section("Field mapping"), re.M)
    assert rows, "the field mapping table is empty"
    return rows


def test_every_rest_field_is_in_the_mapping_table() -> None:
    documented = {rest.split("[]")[0].split(".")[0] for rest, _ in api_table()}
    documented |= {rest.split("[].")[1] for rest, _ in api_table() if rest.startswith("messages[].")}
    schema_fields = set(ChatCompletionRequest.model_fields) | set(CompletionRequest.model_fields)
    schema_fields |= set(Message.model_fields) - {"role"}
    missing = schema_fields - documented
    assert not missing, f"REST fields missing from docs/api.md: {sorted(missing)}"


def test_every_mapped_proto_field_exists() -> None:
    for rest, proto in api_table():
        if proto == "—":
            continue
        descriptor = pb.GenerateRequest.DESCRIPTOR
        for part in proto.strip("`").split("."):
            assert descriptor is not None and part in descriptor.fields_by_name, (
                f"{rest} maps to {proto}, which GenerateRequest does not have")
            descriptor = descriptor.fields_by_name[part].message_type


def test_openapi_file_matches_the_schemas() -> None:
    assert (DOCS / "openapi.json").read_text() == openapi.render(OPERATIONS), (
        "docs/openapi.json drifted: run make docs")


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert docgen.configuration_doc(text) == text, "the settings table drifted: run make docs"
    for f in fields(Settings):
        assert f"MLXRPC_{f.name.upper()}" in text


def _route(method: str, path: str) -> str:
    """``POST /chat/completions``: the /v1 twin folded in, path parameters unnamed."""
    path = re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])
    return f"{method} {path.removeprefix('/v1') or '/'}"


def test_routes_table_is_one_table_listing_every_route() -> None:
    """A blank line inside a markdown table ends it: the rows after it stop rendering."""
    from mlxrpc.gateway.app import create_app

    blocks = re.findall(r"(?:^\|.*\n)+", section("REST routes"), re.M)
    assert len(blocks) == 1, "the REST routes table is split in two"
    documented = {_route(m, p) for m, p in re.findall(r"`(GET|POST|PUT|PATCH|DELETE) ([^`]+)`", blocks[0])}
    app = create_app(["127.0.0.1:1"], 1 << 20)
    served = {_route(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method in ("GET", "POST", "PUT", "PATCH", "DELETE")}
    assert served - documented == set(), "routes missing from docs/api.md"
    assert documented - served == set(), "docs/api.md lists routes the sidecar does not serve"


def test_every_route_is_in_the_openapi_document() -> None:
    from mlxrpc.gateway.app import create_app

    app = create_app(["127.0.0.1:1"], 1 << 20)
    served = {_route(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method in ("GET", "POST", "PUT", "PATCH", "DELETE")}
    document = openapi.build(OPERATIONS)
    described = {_route(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served - described == set(), "routes missing from docs/openapi.json"
    assert described - served == set(), "docs/openapi.json describes routes the sidecar does not serve"


def test_tokenize_table_matches_the_schema_and_proto() -> None:
    from mlxrpc.gateway.tokenize.protocol import TokenizeBody

    rows = re.findall(r"^\| (`[^|]+`) \| (`[^`]+`|—) \|", section("Tokenize and detokenize"), re.M)
    documented = {name for names, _ in rows for name in re.findall(r"`([^`]+)`", names)}
    assert documented == set(TokenizeBody.model_fields)
    for _, proto in rows:
        descriptor = pb.TokenizeRequest.DESCRIPTOR
        for part in proto.strip("`").split(".") if proto != "—" else []:
            assert descriptor is not None and part in descriptor.fields_by_name, proto
            descriptor = descriptor.fields_by_name[part].message_type


def _event_model(models: tuple, kind: str) -> Any:
    (model,) = [m for m in models if kind in get_args(m.model_fields["type"].annotation)]
    return model


def test_the_documented_events_fit_what_the_stream_builders_send() -> None:
    """Tool calls, thinking, MCP calls and errors rarely come out of the fuzzed model: checked here."""
    from mlxrpc.gateway.anthropic.events import MessageStream
    from mlxrpc.gateway.anthropic.protocol import ANTHROPIC_EVENTS
    from mlxrpc.gateway.http.errors import ApiError
    from mlxrpc.gateway.openai import protocol
    from mlxrpc.gateway.openai.events import ChatStream, fold_chat
    from mlxrpc.gateway.responses.events import ResponseBuilder
    from mlxrpc.gateway.responses.protocol import RESPONSE_EVENTS, ResponseObject, ResponsesRequest

    finish = pb.Finish(reason=pb.STOP_REASON_TOOL_CALLS, usage=pb.Usage(prompt_tokens=3, completion_tokens=5,
                                                                          reasoning_tokens=2))
    finish.tool_calls.add(id="call_1", name="get_time", arguments_json='{"zone": "UTC"}')
    messages = [pb.GenerateStreamResponse(reasoning="hmm"), pb.GenerateStreamResponse(text="ok"),
                pb.GenerateStreamResponse(tool_event=pb.ToolEvent(call=pb.ToolCall(
                    id="m1", name="demo__echo", arguments_json="{}"))),
                pb.GenerateStreamResponse(tool_event=pb.ToolEvent(result=pb.ToolResult(
                    call_id="m1", content="x"))),
                pb.GenerateStreamResponse(text="done", finish=finish)]
    anthropic = MessageStream("msg_1")
    responses = ResponseBuilder("resp_1", 0, ResponsesRequest(input="Hi", tools=[
        {"type": "mcp", "server_label": "demo"}]), want_logprobs=True)
    for builder, models in ((anthropic, ANTHROPIC_EVENTS), (responses, RESPONSE_EVENTS)):
        events = builder.start("m")
        for message in messages:
            events += builder.feed(message)
        events += builder.finish(finish) + builder.fail(ApiError(503, "the server is shutting down"))
        for event in events:
            _event_model(models, event["type"]).model_validate(event)
        assert {e["type"] for e in events} >= {"error"}

    body = ChatCompletionRequest(messages=[{"role": "user", "content": "Hi"}], stream=True,
                                 stream_options={"include_usage": True})
    chat = ChatStream("chatcmpl-1", 0, body)
    chunks = chat.start("m") + [c for m in messages for c in chat.feed(m)] + chat.finish(finish)
    for chunk in chunks:
        protocol.ChatCompletionChunk.model_validate(chunk)
    whole = protocol.ChatCompletion.model_validate(fold_chat(chunks, chat, body))
    assert whole.choices[0].message.mcp_calls[0].output == "x"
    ResponseObject.model_validate(responses.response())
    assert [item["type"] for item in responses.response()["output"]] == [
        "reasoning", "message", "mcp_call", "message", "function_call"]
