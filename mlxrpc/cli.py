"""Command line: ``mlxrpc serve | gateway | generate``.

Every ``serve`` flag is a Settings field; values resolve CLI > MLXRPC_* env > defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import fields

from .settings import Settings, parse_bool

HELP = {
    "model": "model to serve: a Hugging Face id or local path, or ALIAS=SOURCE; repeatable "
    "(default: the built-in demo model)",
    "host": "address to bind (default 0.0.0.0)",
    "grpc_port": "gRPC port (default 50051; 0 picks a free one)",
    "http_port": "OpenAI REST sidecar port (default 8000)",
    "workers": "sidecar processes: a count, or a fraction of CPU cores (1.0 = all)",
    "max_tokens": "default and cap of generated tokens per request (default 32768)",
    "stream_interval": "tokens per stream message (default 1)",
    "max_num_seqs": "sequences decoded together in one batch (default 32)",
    "prefill_batch_size": "prompts processed together (default 8)",
    "prefill_step_size": "prompt tokens per model call (default 2048)",
    "max_queue": "requests waiting for a slot before new ones are refused (default 256)",
    "prompt_cache_size": "prefix cache entries kept for reuse (default 16; 0 disables)",
    "prompt_cache_bytes": "prefix cache size bound in bytes (default 2 GiB)",
    "temperature": "default sampling temperature (default 1.0)",
    "top_p": "default nucleus sampling mass (default 1.0)",
    "top_k": "default top-k (default 0 = off)",
    "min_p": "default min-p (default 0 = off)",
    "grace_period": "seconds in-flight requests get on SIGTERM (default 30)",
    "max_message_bytes": "largest gRPC message / HTTP body in bytes (default 64 MiB)",
    "log_level": "DEBUG, INFO, WARNING or ERROR (default INFO)",
    "api_key": "API key clients must send (Authorization: Bearer); repeatable",
    "cors_origin": "browser origin allowed to call the REST API (CORS); repeatable, * for any",
    "admin_key": "key for loading and unloading models (model management is off without it)",
    "load_on_demand": "load a model the first time a request names it (true/false)",
    "max_models": "most models loaded at once; the least recently used idle one is unloaded (0: no limit)",
    "max_image_bytes": "largest image accepted, in bytes (default 20 MiB)",
    "max_image_pixels": "largest image accepted, in pixels (default 4096x4096)",
    "max_request_pixels": "most pixels of all the images of one request together (default 2x4096x4096)",
    "max_prompt_bytes": "most bytes of prompt text in one request, all messages together (default 4 MiB)",
    "max_messages": "most chat messages in one request (default 4096)",
    "allow_request_chat_template": "let requests send their own Jinja chat template in "
    "chat_template_kwargs (true/false; it is code the server runs)",
    "max_images": "most images per request (default 8)",
    "image_fetch_timeout": "seconds to fetch an image URL (default 10)",
    "allow_private_image_urls": "let image URLs reach private and loopback addresses (true/false)",
    "allow_local_image_paths": "let requests name image files on the server (true/false)",
    "tls_cert": "PEM certificate chain: serve gRPC over TLS",
    "tls_key": "PEM private key of --tls-cert",
    "tls_client_ca": "PEM CA: require client certificates signed by it (mTLS)",
    "max_model_bytes": "most bytes of model weights loaded at once; least recently used idle models "
    "are unloaded to make room (0: no limit)",
    "responses_store_size": "Responses API: most stored responses for previous_response_id "
    "(default 1000; 0 disables storing)",
    "responses_store_bytes": "Responses API: most bytes of stored responses (default 256 MiB)",
    "responses_store_ttl": "Responses API: seconds a stored response is kept after its last use "
    "(default 3600)",
    "mcp_config": "JSON file of MCP servers (vllm-mlx's \"servers\" or the common \"mcpServers\" format) "
    "whose tools requests may let the server run",
    "mcp_max_steps": "most generations in one request's MCP tool loop; the last answers without tools "
    "(default 8, at least 2)",
    "mcp_call_timeout": "seconds one MCP tool call may take (default 60; a server's \"timeout\" wins)",
    "mcp_max_result_bytes": "bytes of an MCP tool result kept for the model (default 64 KiB)",
    "blas": "Linux CPU: auto (use the system OpenBLAS if present), bundled, or a library path",
    "chat_template": "[ID=]FILE: a Jinja chat template replacing the model's (no ID: every model); repeatable",
    "chat_template_args": "[ID=]JSON: default chat-template arguments, e.g. '{\"enable_thinking\": false}'; "
    "requests' chat_template_kwargs win; repeatable",
    "adapter_path": "[ID=]PATH: LoRA adapters to apply to the model (mlx-lm's adapter folder); repeatable",
    "trust_remote_code": "let checkpoints run their own tokenizer code (true/false)",
    "speculative": "[ID=]METHOD: speculative decoding: ngram (prompt lookup), draft (--draft-model) "
    "or off (default off); repeatable",
    "draft_model": "[ID=]PATH: draft model for speculative decoding (same tokenizer as the target); "
    "implies --speculative draft; repeatable",
    "num_draft_tokens": "[ID=]N: draft tokens verified per decode step (default 4); repeatable",
    "ngram_size": "[ID=]N: longest n-gram prompt lookup matches (default 3); repeatable",
    "speculative_max_batch": "[ID=]N: speculate only in steps where at most N sequences decode "
    "(default 4; larger batches are compute-bound); repeatable",
    "parallel": "shard the model over a distributed world: tensor or pipeline (the world comes from "
    "mlx.launch, MLX_HOSTFILE + MLX_RANK, JACCL or MPI variables, or --ranks)",
    "ranks": "with --parallel: start this many local ranks over the ring backend (127.0.0.1)",
    "distributed_timeout": "seconds joining the world or one collective may take before the server "
    "exits (default 60)",
    "kv_bits": "[ID=]BITS: store the KV cache quantized to 4 or 8 bits (default: the model's dtype); repeatable",
    "kv_group_size": "[ID=]N: quantization group size of --kv-bits: 32, 64 or 128 (default 64); repeatable",
    "max_kv_size": "[ID=]TOKENS: a rotating KV cache keeping the last TOKENS tokens per sequence "
    "(mlx-lm's --max-kv-size); repeatable",
    "kv_cache_bytes": "KV bytes running requests may reserve, prompt + max_tokens each; others wait "
    "(default 0: a quarter of the machine's memory)",
    "prompt_cache_dir": "keep prefix-cache entries on disk in this folder too; they survive a restart",
    "prompt_cache_disk_bytes": "bound of --prompt-cache-dir in bytes (default 10 GiB)",
    "use_paged_cache": "requests sharing a prompt prefix with one still prefilling reuse its KV "
    "instead of computing it again (true/false)",
}


# Flags other servers use for the same settings (vllm-mlx's --port).
ALIASES = {"http_port": ["--port"]}
# Boolean flags that also work bare, as vllm-mlx spells them (--use-paged-cache).
BARE_BOOLS = {"use_paged_cache"}


def _add_settings_flags(parser: argparse.ArgumentParser, names: list[str]) -> None:
    kinds = {f.name: f.type for f in fields(Settings)}
    for name in names:
        flags = ["--" + name.replace("_", "-"), *ALIASES.get(name, [])]
        kind = kinds[name]
        help_text = HELP[name] + f" [env MLXRPC_{name.upper()}]"
        if str(kind) == "list[str]":
            parser.add_argument(*flags, dest=name, action="append", default=None, help=help_text)
        elif name in BARE_BOOLS:
            parser.add_argument(*flags, dest=name, type=parse_bool, nargs="?", const=True, default=None,
                                help=help_text)
        else:
            converter = {"int": int, "float": float, "bool": parse_bool}.get(str(kind), str)
            parser.add_argument(*flags, dest=name, type=converter, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxrpc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve models over gRPC and the OpenAI REST API")
    serve.add_argument("models", nargs="*", metavar="MODEL",
                       help="models to serve, as with --model (vllm-mlx style: serve MODEL)")
    _add_settings_flags(serve, [f.name for f in fields(Settings)])
    serve.add_argument("--no-http", action="store_true", help="serve gRPC only, no sidecar")
    # vllm-mlx's flag, accepted so its commands work: batching is always
    # continuous (its --use-paged-cache is a Settings flag).
    serve.add_argument("--continuous-batching", action="store_true", help=argparse.SUPPRESS)

    gateway = sub.add_parser("gateway", help="run the OpenAI REST sidecar alone")
    gateway.add_argument(
        "--upstream", action="append", default=None,
        help="engine gRPC address (host:port, unix:path, or dns:///name); repeatable "
        "[env MLXRPC_UPSTREAM]",
    )
    _add_settings_flags(gateway, ["host", "http_port", "workers", "max_message_bytes", "log_level",
                                  "cors_origin", "grace_period"])
    gateway.add_argument("--upstream-ca", default=None, help="PEM CA to verify TLS engines")
    gateway.add_argument("--upstream-cert", default=None, help="PEM client certificate (mTLS)")
    gateway.add_argument("--upstream-key", default=None, help="PEM client key (mTLS)")
    gateway.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    # Set by `mlxrpc serve` / a gateway supervisor: stop when that process is gone.
    gateway.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)

    generate = sub.add_parser("generate", help="stream one completion from a running server")
    generate.add_argument("prompt")
    generate.add_argument("--target", default="127.0.0.1:50051")
    generate.add_argument("--model", default="")
    generate.add_argument("--max-tokens", type=int, default=64)
    generate.add_argument("--chat", action="store_true", help="send the prompt as a user message")
    return parser


def settings_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """Settings from parsed arguments (None = not given), then MLXRPC_* env, then defaults."""
    values = {k: v for k, v in vars(args).items() if v is not None}
    if getattr(args, "models", None):
        values["model"] = [*args.models, *(args.model or [])]
    return Settings.resolve(values, env)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"mlxrpc: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        from .backend import missing_backend

        if problem := missing_backend():
            print(problem, file=sys.stderr)
            return 1
        from .blas import reexec_with
        from .serve import serve
        from .service.mcp import check_settings as check_mcp

        try:
            check_mcp(settings)  # a bad --mcp-config stops start-up here, with its message
            reexec_with(settings.blas)
        except ValueError as exc:
            print(f"mlxrpc: {exc}", file=sys.stderr)
            return 2
        if settings.parallel or settings.ranks:
            exit_now(_serve_distributed(settings, with_sidecar=not args.no_http))
        code = asyncio.run(serve(settings, with_sidecar=not args.no_http))
        exit_now(code)
    if args.command == "gateway":
        from .gateway.http.upstream import UpstreamTLS
        from .sidecars import run_gateway

        tls = UpstreamTLS.from_files(args.upstream_ca, args.upstream_cert, args.upstream_key)
        return run_gateway(settings, args.upstream, reuse_port=args.reuse_port, tls=tls,
                           parent_pid=args.parent_pid)
    if args.command == "generate":
        return asyncio.run(_generate(args))
    return 2


def _serve_distributed(settings: Settings, with_sidecar: bool) -> int:
    """Joins the world (starting --ranks local ranks); rank 0 serves, the others follow."""
    from .distributed.run import run_follower, start_world
    from .distributed.spawn import stop_local_ranks
    from .distributed.world import WorldError
    from .serve import serve

    try:
        world, children = start_world(settings)
    except WorldError as exc:
        print(f"mlxrpc: {exc}", file=sys.stderr)
        return 2
    if not world.leader:
        return run_follower(settings, world)
    try:
        code = asyncio.run(serve(settings, with_sidecar=with_sidecar, world=world))
    except WorldError as exc:  # the model cannot be split this way (found while loading it)
        print(f"mlxrpc: {exc}", file=sys.stderr)
        code = 2
    stop_local_ranks(children, timeout=10.0 if code == 0 else 2.0)
    return code


def exit_now(code: int) -> None:
    """Exits without running C++ static destructors.

    The server has drained and stopped by now. MLX can abort the process
    ("terminate called without an active exception") while tearing down the
    streams of an engine thread that has ended, which would turn a clean exit 0
    into 134; nothing is left to clean up, so skip that phase.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _generate(args: argparse.Namespace) -> int:
    """Streams one completion to stdout: a smoke test of a running server."""
    import grpc

    from .v1 import inference_pb2 as pb
    from .v1 import inference_pb2_grpc as pb_grpc

    request = pb.GenerateRequest(model=args.model)
    if args.chat:
        request.chat.messages.add(role="user").content.add(text=args.prompt)
    else:
        request.text = args.prompt
    request.stopping.max_tokens = args.max_tokens
    async with grpc.aio.insecure_channel(args.target) as channel:
        try:
            async for message in pb_grpc.InferenceStub(channel).StreamGenerate(request):
                print(message.text, end="", flush=True)
                if message.HasField("finish"):
                    print(f"\n[{pb.StopReason.Name(message.finish.reason)}, "
                          f"{message.finish.usage.completion_tokens} tokens]")
        except grpc.aio.AioRpcError as exc:
            print(f"mlxrpc: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
