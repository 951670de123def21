"""Server settings: typed parts per layer, resolved together CLI > ``MLXRPC_*`` environment > defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, get_type_hints

ENV_PREFIX = "MLXRPC_"


@dataclass
class EngineSettings:
    """What the engine is configured by: models' options, batching, defaults, memory."""

    # Per-model options, each [ID=]VALUE (without ID: every model), as
    # mlx_lm.server has them: a Jinja chat template file replacing the model's,
    # default chat-template arguments (a JSON object, e.g. {"enable_thinking":
    # false}; requests' chat_template_kwargs win), LoRA adapters.
    chat_template: list[str] = field(default_factory=list)
    chat_template_args: list[str] = field(default_factory=list)
    adapter_path: list[str] = field(default_factory=list)
    # Let checkpoints run their own tokenizer code (Hugging Face remote code).
    trust_remote_code: bool = False
    # Speculative decoding, per model ([ID=]VALUE like the options above):
    # "ngram" (prompt lookup), "draft" (a draft model, same tokenizer) or
    # "off" (the default); draft tokens verified per step; longest n-gram
    # looked up; speculation runs only in steps where at most
    # speculative_max_batch sequences decode (engine/speculative.py).
    speculative: list[str] = field(default_factory=list)
    draft_model: list[str] = field(default_factory=list)
    num_draft_tokens: list[str] = field(default_factory=list)
    ngram_size: list[str] = field(default_factory=list)
    speculative_max_batch: list[str] = field(default_factory=list)
    # Default and cap of tokens generated per request (clamped to the context).
    max_tokens: int = 32768
    # Tokens per stream message.
    stream_interval: int = 1
    # Sequences decoded together in one batch.
    max_num_seqs: int = 32
    # Sequences whose prompts are processed together.
    prefill_batch_size: int = 8
    # Prompt tokens processed per model call.
    prefill_step_size: int = 2048
    # Requests waiting for a batch slot before new ones get RESOURCE_EXHAUSTED.
    max_queue: int = 256
    # Prefix cache: KV caches of finished sequences kept for reuse, bounded by
    # entries and bytes (0 disables it).
    prompt_cache_size: int = 16
    prompt_cache_bytes: int = 2 * 1024**3
    # Default sampling for requests that leave these unset.
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    # Most models loaded at once; loading one more unloads the least recently
    # used idle one (0: no limit).
    max_models: int = 0
    # Most bytes of weights loaded at once, with the same LRU unloading (0: no limit).
    max_model_bytes: int = 0
    # Pixels of one image (vision models), checked again when it is decoded.
    max_image_pixels: int = 4096 * 4096
    # Distributed serving (docs/deployment.md): one model sharded over several
    # processes or Macs. "tensor" or "pipeline" joins the world MLX's launcher
    # describes (mlx.launch, MLX_HOSTFILE + MLX_RANK, JACCL or MPI variables).
    parallel: str = ""
    # KV cache (docs/configuration.md). Per model, [ID=]VALUE: quantized KV (bits 4 or 8,
    # group size 32/64/128), or a rotating KV window of most tokens.
    kv_bits: list[str] = field(default_factory=list)
    kv_group_size: list[str] = field(default_factory=list)
    max_kv_size: list[str] = field(default_factory=list)
    # Bytes of KV all running sequences may reserve (prompt + max_tokens each);
    # 0: a quarter of the machine's memory. Requests wait while it is full.
    kv_cache_bytes: int = 0
    # Keep prefix-cache entries on disk here too (bounded by bytes), reloaded after a restart.
    prompt_cache_dir: str = ""
    prompt_cache_disk_bytes: int = 10 * 1024**3
    # Requests sharing a prompt prefix with one still prefilling wait for it and reuse its KV.
    use_paged_cache: bool = False


@dataclass
class ServiceSettings:
    """What the gRPC service is configured by: address, limits, keys, images, TLS, store."""

    # Models: Hugging Face ids or local paths, optionally "alias=source".
    # Empty: the built-in demo model.
    model: list[str] = field(default_factory=list)
    host: str = "0.0.0.0"
    grpc_port: int = 50051
    # Seconds in-flight requests get to finish on SIGTERM.
    grace_period: float = 30.0
    # Largest gRPC message and HTTP body accepted, in bytes.
    max_message_bytes: int = 64 * 1024 * 1024
    # Request limits checked before any work: bytes of prompt text (all
    # messages together) and number of chat messages.
    max_prompt_bytes: int = 4 * 1024 * 1024
    max_messages: int = 4096
    # Let requests replace the model's chat template with their own Jinja
    # (chat_template_kwargs.chat_template): code the server runs, off by default.
    allow_request_chat_template: bool = False
    # API keys accepted on both surfaces (empty: no authentication).
    api_key: list[str] = field(default_factory=list)
    # Key for LoadModel/UnloadModel and the REST model routes (empty: disabled).
    admin_key: str = ""
    # Load a model the first time a request names it (a hub id or server path).
    load_on_demand: bool = False
    # Images (vision models): size and count limits, fetch timeout, and whether
    # URLs may point at private/loopback addresses or requests may name server paths.
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # Pixels of all the images of one request together.
    max_request_pixels: int = 2 * 4096 * 4096
    max_images: int = 8
    image_fetch_timeout: float = 10.0
    allow_private_image_urls: bool = False
    allow_local_image_paths: bool = False
    # gRPC TLS: server certificate chain and key (PEM); with a client CA,
    # clients must present a certificate signed by it (mTLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Responses API store (previous_response_id, GET/DELETE /v1/responses/{id}):
    # most responses kept, their total bytes, and seconds kept after last use
    # (least recently used first; size 0 disables storing).
    responses_store_size: int = 1000
    responses_store_bytes: int = 256 * 1024 * 1024
    responses_store_ttl: float = 3600.0


@dataclass
class GatewaySettings:
    """What the REST sidecar is configured by."""

    host: str = "0.0.0.0"
    http_port: int = 8000
    # Sidecar processes (an absolute number, or a fraction of CPU cores: 1.0 = all).
    workers: str = "1"
    # Seconds in-flight requests get to finish on SIGTERM.
    grace_period: float = 30.0
    # Largest gRPC message and HTTP body accepted, in bytes.
    max_message_bytes: int = 64 * 1024 * 1024
    # Browser origins the REST sidecar allows (CORS); "*" for any, empty for none.
    cors_origin: list[str] = field(default_factory=list)
    log_level: str = "INFO"


@dataclass
class McpSettings:
    """The service's MCP tool loop (vllm-mlx's --mcp-config).

    A JSON file of MCP servers whose tools requests may let the service run
    (mcp_tools); most generation steps of one request's tool loop, seconds per
    tool call, bytes of a tool result kept.
    """

    mcp_config: str = ""
    mcp_max_steps: int = 8
    mcp_call_timeout: float = 60.0
    mcp_max_result_bytes: int = 64 * 1024


Part = TypeVar("Part", EngineSettings, ServiceSettings, GatewaySettings, McpSettings)


@dataclass
class Settings(McpSettings, GatewaySettings, EngineSettings, ServiceSettings):
    """The command line's view: every part's fields, flat, plus the process's own.

    Each field can be set by the CLI flag of the same name (``--max-tokens``) or
    the environment variable ``MLXRPC_<NAME>`` (``MLXRPC_MAX_TOKENS``). The CLI
    resolves one ``Settings`` and hands each layer only its part (``part``);
    a field two layers read (host, max_message_bytes) is set once.
    """

    log_level: str = "INFO"
    # Linux CPU: "auto" preloads the system OpenBLAS when present, "bundled"
    # keeps the MLX wheel's reference BLAS, or a library path.
    blas: str = "auto"
    # Distributed serving (docs/deployment.md; "parallel" is in EngineSettings):
    # ranks > 1 starts that many local ranks over the ring backend itself;
    # seconds joining the world or one collective may take before the server
    # gives up (a stalled or dead rank).
    ranks: int = 0
    distributed_timeout: float = 60.0

    def part(self, kind: type[Part]) -> Part:
        """The fields of one layer's part, as that part."""
        return kind(**{f.name: getattr(self, f.name) for f in fields(kind)})

    @classmethod
    def resolve(
        cls, cli: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> Settings:
        """CLI values (None = not given) win over the environment, then defaults."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            given = cli.get(f.name)
            if given is not None and given != []:
                values[f.name] = given
            elif (raw := env.get(ENV_PREFIX + f.name.upper())) is not None:
                values[f.name] = _parse_env(hints[f.name], raw, ENV_PREFIX + f.name.upper())
        return cls(**values)


def _parse_env(kind: Any, raw: str, name: str) -> Any:
    try:
        if kind is bool:
            return parse_bool(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind == list[str]:
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from exc


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not a boolean")


def resolve_workers(spec: str, cpu_count: int | None = None) -> int:
    """FastMLX's rule: an integer is a count; a fraction (e.g. 0.5, 1.0) is a share of cores."""
    cores = cpu_count or os.cpu_count() or 1
    try:
        if any(c in spec for c in ".eE"):
            share = float(spec)
            if not 0 < share <= 1:
                raise ValueError
            return max(1, int(cores * share))
        count = int(spec)
        if count < 1:
            raise ValueError
        return count
    except ValueError:
        raise ValueError(
            f"workers must be a positive integer or a fraction of cores in (0, 1], got {spec!r}"
        ) from None
