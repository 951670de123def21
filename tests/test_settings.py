"""Settings precedence: CLI > MLXRPC_* environment > defaults; each layer gets its part."""

from dataclasses import fields

import pytest

from mlxrpc.cli import build_parser, settings_from_args
from mlxrpc.settings import (
    EngineSettings,
    GatewaySettings,
    McpSettings,
    ServiceSettings,
    Settings,
    resolve_workers,
)


def resolve(argv: list[str], env: dict[str, str]) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]), env)


def test_defaults_apply_when_nothing_is_set() -> None:
    s = resolve([], {})
    assert (s.grpc_port, s.http_port, s.max_tokens, s.stream_interval) == (50051, 8000, 32768, 1)


def test_environment_overrides_defaults() -> None:
    s = resolve([], {"MLXRPC_MAX_TOKENS": "99", "MLXRPC_WORKERS": "0.5", "MLXRPC_MODEL": "a,b"})
    assert s.max_tokens == 99 and s.workers == "0.5" and s.model == ["a", "b"]


def test_cli_overrides_environment() -> None:
    s = resolve(["--max-tokens", "7", "--model", "x", "--workers", "3"],
                {"MLXRPC_MAX_TOKENS": "99", "MLXRPC_MODEL": "a", "MLXRPC_WORKERS": "2"})
    assert s.max_tokens == 7 and s.model == ["x"] and s.workers == "3"


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="MLXRPC_GRPC_PORT"):
        resolve([], {"MLXRPC_GRPC_PORT": "many"})


@pytest.mark.parametrize(("spec", "cores", "expected"), [
    ("4", 8, 4), ("1.0", 8, 8), ("0.5", 8, 4), ("0.1", 2, 1), ("1", 2, 1),
])
def test_workers_count_or_fraction_of_cores(spec: str, cores: int, expected: int) -> None:
    assert resolve_workers(spec, cores) == expected


@pytest.mark.parametrize("spec", ["0", "-1", "1.5", "lots"])
def test_invalid_workers_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="workers"):
        resolve_workers(spec, 4)


def test_vllm_mlx_command_line_is_accepted() -> None:
    s = resolve(["mlx-community/Qwen3-0.6B-8bit", "--port", "8001", "--continuous-batching",
                 "--use-paged-cache", "--max-tokens", "100", "--stream-interval", "5"], {})
    assert (s.model, s.http_port, s.max_tokens, s.stream_interval) == (
        ["mlx-community/Qwen3-0.6B-8bit"], 8001, 100, 5)


PARTS = (EngineSettings, ServiceSettings, GatewaySettings, McpSettings)


def test_each_layer_gets_its_part_with_the_resolved_values() -> None:
    s = resolve(["--max-tokens", "7", "--api-key", "k", "--cors-origin", "*"],
                {"MLXRPC_MCP_MAX_STEPS": "3", "MLXRPC_HOST": "127.0.0.1"})
    engine, service = s.part(EngineSettings), s.part(ServiceSettings)
    gateway, mcp = s.part(GatewaySettings), s.part(McpSettings)
    assert type(engine) is EngineSettings and engine.max_tokens == 7
    assert not hasattr(engine, "api_key") and not hasattr(service, "max_num_seqs")
    assert service.api_key == ["k"] and service.host == gateway.host == "127.0.0.1"
    assert gateway.cors_origin == ["*"] and mcp.mcp_max_steps == 3


def test_every_flag_belongs_to_a_part_or_to_the_process() -> None:
    in_parts = {f.name for part in PARTS for f in fields(part)}
    assert {f.name for f in fields(Settings)} - in_parts == {"blas", "ranks", "distributed_timeout"}
