"""Start-up of a distributed world: validate, start local ranks, join; and a follower's life.

Every rank runs ``mlxrpc serve`` with the same flags. Rank 0 goes on to serve
(serve.py); the others load their shard, warm up as rank 0 does (the same
forward passes, so their collectives pair up) and follow rank 0's messages
until it says stop (exit 0) or the world breaks (exit 70).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess

from ..settings import Settings
from .channel import Channel
from .world import EXIT_WORLD_FAILED, World, WorldError, check_settings, join

log = logging.getLogger(__name__)

# Extra seconds the world may take to form when this process started its ranks.
LOCAL_STARTUP_SECONDS = 60.0


def start_world(settings: Settings) -> tuple[World, list[subprocess.Popen]]:
    """Checks the settings and the model, starts ``--ranks`` local ranks if asked, joins.

    Raises WorldError with a message for the user.
    """
    from ..engine.registry import local_path
    from ..serve import model_sources
    from .loading import check_architecture

    check_settings(settings)
    source = model_sources(settings)[0]
    try:
        check_architecture(local_path(source.source), settings.parallel)
    except WorldError:
        raise
    except (OSError, ValueError) as exc:
        raise WorldError(f"cannot load '{source.source}': {exc}") from None
    children: list[subprocess.Popen] = []
    if settings.ranks and "MLX_RANK" not in os.environ:
        from .spawn import spawn_local_ranks

        children = spawn_local_ranks(settings.ranks)
    try:
        # Local ranks first start an interpreter and import MLX: not a stall.
        return join(settings, startup_grace=LOCAL_STARTUP_SECONDS if children else 0.0), children
    except BaseException:
        for child in children:
            child.kill()
        raise


def run_follower(settings: Settings, world: World) -> int:
    """A rank other than 0: load the shard, warm up, follow rank 0; the exit code."""
    from ..engine.core import warm_up
    from ..engine.model_options import model_options
    from ..engine.registry import load_model, local_path
    from ..serve import model_sources
    from .lockstep import FollowerBatch

    # A follower ends when rank 0 tells it to or its world breaks: Ctrl-C or a
    # launcher's SIGTERM reach every rank at once, and rank 0 still drains
    # through the others.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    channel = Channel(world)
    try:
        source = model_sources(settings)[0]
        source = dataclasses.replace(source, options=model_options(settings, source.id))
        loaded = load_model(source, local_path(source.source))
        warm_up(loaded, settings)
        batch = FollowerBatch(loaded.model, loaded.vocab_size, channel, max_num_seqs=settings.max_num_seqs,
                              prefill_batch_size=settings.prefill_batch_size,
                              prefill_step_size=settings.prefill_step_size,
                              prompt_cache_size=settings.prompt_cache_size,
                              prompt_cache_bytes=settings.prompt_cache_bytes)
        log.info("rank %d: following rank 0", world.rank)
        batch.follow()
    except WorldError as exc:  # rank 0 reports the same and exits 2
        log.critical("rank %d: %s", world.rank, exc)
        return 2
    except Exception:
        log.critical("rank %d: the distributed world broke; exiting", world.rank, exc_info=True)
        return EXIT_WORLD_FAILED
    log.info("rank %d: rank 0 stopped; exiting", world.rank)
    return 0
