"""Joining the distributed world MLX's launchers describe, or refusing with a message.

mlx.launch (and exo) start every rank with its environment: MLX_RANK and
MLX_HOSTFILE for the ring backend, MLX_JACCL_COORDINATOR / MLX_IBV_DEVICES for
JACCL over RDMA, the MPI launcher's variables for MPI, NCCL_HOST_IP for NCCL.
Bad settings fail here, before any model loads; a peer that never shows up
fails after ``--distributed-timeout`` instead of blocking start-up forever.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import Settings

log = logging.getLogger(__name__)

MODES = ("tensor", "pipeline")
# Exit code of a rank that cannot join the world or whose world broke.
EXIT_WORLD_FAILED = 70


class WorldError(ValueError):
    """Distributed settings that cannot work; the message says what to fix."""


@dataclass(frozen=True)
class World:
    """This process's place in the distributed world."""

    mode: str
    rank: int
    size: int
    backend: str
    group: Any  # mx.distributed.Group
    timeout: float

    @property
    def leader(self) -> bool:
        return self.rank == 0


def backend_from_env(env: dict[str, str]) -> str:
    """The backend the launcher's variables describe; WorldError when none does."""
    if env.get("MLX_JACCL_COORDINATOR") or env.get("MLX_IBV_DEVICES"):
        return "jaccl"
    if env.get("MLX_HOSTFILE") or env.get("MLX_RANK"):
        return "ring"
    if any(env.get(k) for k in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")):
        return "mpi"
    if env.get("NCCL_HOST_IP"):
        return "nccl"
    raise WorldError("--parallel needs a distributed world: start the ranks with mlx.launch, set "
                     "MLX_HOSTFILE and MLX_RANK (ring), or let mlxrpc start local ranks with --ranks N")


def check_ring_env(env: dict[str, str]) -> int:
    """Validates MLX_RANK and MLX_HOSTFILE; returns the world size the hostfile lists."""
    raw_rank, hostfile = env.get("MLX_RANK", ""), env.get("MLX_HOSTFILE", "")
    if not raw_rank or not hostfile:
        raise WorldError(f"the ring backend needs both MLX_RANK and MLX_HOSTFILE (got MLX_RANK={raw_rank!r}, "
                         f"MLX_HOSTFILE={hostfile!r})")
    try:
        hosts = json.loads(Path(hostfile).read_text())
    except OSError as exc:
        raise WorldError(f"MLX_HOSTFILE {hostfile}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise WorldError(f"MLX_HOSTFILE {hostfile} is not JSON: {exc}") from None
    if (not isinstance(hosts, list) or len(hosts) < 2
            or not all(isinstance(h, list) and h and all(isinstance(a, str) and ":" in a for a in h)
                       for h in hosts)):
        raise WorldError(f"MLX_HOSTFILE {hostfile} must list at least two ranks, each a list of "
                         '"ip:port" strings, e.g. [["10.0.0.1:5000"], ["10.0.0.2:5000"]]')
    try:
        rank = int(raw_rank)
    except ValueError:
        raise WorldError(f"MLX_RANK={raw_rank!r} is not an integer") from None
    if not 0 <= rank < len(hosts):
        raise WorldError(f"MLX_RANK={rank} is outside the {len(hosts)} ranks of {hostfile}")
    return len(hosts)


def check_settings(settings: Settings) -> None:
    """What a distributed world refuses, before anything starts."""
    if settings.parallel not in MODES:
        raise WorldError(f"--parallel must be one of {', '.join(MODES)}, got {settings.parallel!r}")
    if settings.ranks < 0 or settings.ranks == 1:
        raise WorldError(f"--ranks must be at least 2, got {settings.ranks}")
    if len(settings.model) > 1:
        raise WorldError("a distributed world serves one model; give --model once")
    if settings.load_on_demand:
        raise WorldError("--load-on-demand is not supported with --parallel (one model per world)")
    if settings.adapter_path:
        raise WorldError("LoRA adapters are not supported with --parallel (as in mlx_lm.server)")
    if settings.distributed_timeout <= 0:
        raise WorldError("--distributed-timeout must be positive")
    # The lockstep followers replay plain float KV caches and an in-memory prefix cache.
    for flag, value in (("--kv-bits", settings.kv_bits), ("--max-kv-size", settings.max_kv_size),
                        ("--prompt-cache-dir", settings.prompt_cache_dir),
                        ("--use-paged-cache", settings.use_paged_cache),
                        # Nor the speculator's verify steps (engine/speculative.py).
                        ("--speculative", [v for v in settings.speculative if not v.endswith("off")]),
                        ("--draft-model", settings.draft_model)):
        if value:
            raise WorldError(f"{flag} is not supported with --parallel yet")


def join(settings: Settings, env: dict[str, str] | None = None, startup_grace: float = 0.0) -> World:
    """Initializes MLX's distributed group described by the environment.

    Blocks until every rank has joined, at most ``distributed_timeout``
    seconds (plus ``startup_grace`` for ranks this process has just started);
    then the process exits 1 (MLX's own wait has no end).
    """
    import mlx.core as mx

    env = dict(os.environ if env is None else env)
    check_settings(settings)
    backend = backend_from_env(env)
    size = check_ring_env(env) if backend == "ring" else 0
    if settings.ranks and size and size != settings.ranks:
        raise WorldError(f"--ranks {settings.ranks} but MLX_HOSTFILE lists {size} ranks")
    # MLX waits for missing peers forever, holding the interpreter: only a C-level
    # timer can end that wait (it prints the Python stack and exits 1).
    wait = settings.distributed_timeout + startup_grace
    log.info("joining the %s world: waiting up to %.0fs (--distributed-timeout) for every rank", backend, wait)
    faulthandler.dump_traceback_later(wait, exit=True)
    try:
        group = mx.distributed.init(strict=True, backend=backend)
    except RuntimeError as exc:
        raise WorldError(f"cannot join the {backend} world: {exc}") from None
    finally:
        faulthandler.cancel_dump_traceback_later()
    if group.size() < 2:
        raise WorldError(f"the {backend} world has {group.size()} rank; --parallel needs at least 2")
    if settings.ranks and group.size() != settings.ranks:
        raise WorldError(f"--ranks {settings.ranks} but the {backend} world has {group.size()} ranks")
    world = World(settings.parallel, group.rank(), group.size(), backend, group, settings.distributed_timeout)
    log.info("joined the %s world as rank %d of %d (%s parallel)", backend, world.rank, world.size, world.mode)
    return world
