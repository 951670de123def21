"""Docs that code must keep true: the REST ⇄ proto table, the OpenAPI file, the settings table."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from mlxrpc import docgen
from mlxrpc.gateway import openapi
from mlxrpc.gateway.schema import ChatCompletionRequest, CompletionRequest, Message
from mlxrpc.settings import Settings
from mlxrpc.v1 import inference_pb2 as pb

DOCS = Path(__file__).resolve().parents[1] / "docs"


def api_table() -> list[tuple[str, str]]:
    text = (DOCS / "api.md").read_text()
    section = text.split("## Field mapping", 1)[1]
    rows = re.findall(r"^\| `([^`]+)`[^|]*\| (`[^`]+`|—) \|", section, re.M)
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
    assert (DOCS / "openapi.json").read_text() == openapi.render(), (
        "docs/openapi.json drifted: run make docs")


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert docgen.configuration_doc(text) == text, "the settings table drifted: run make docs"
    for f in fields(Settings):
        assert f"MLXRPC_{f.name.upper()}" in text
