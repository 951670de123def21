"""Rank 0's messages to every rank, as collectives, and the watchdog over them.

A message is bytes broadcast with ``all_sum`` (rank 0 contributes the bytes,
the others zeros): one fixed-size frame per step, a second collective only
for a message longer than a frame (an admission's long prompt). Every rank
calls ``exchange`` at the same points, so the collectives pair up.

A dead peer makes the ring backend raise at once; a peer that stalls (or a
network that drops silently) does not, so a watchdog thread ends the process
when one collective region has taken longer than the world's timeout.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generation_stream

from .world import EXIT_WORLD_FAILED, World

log = logging.getLogger(__name__)

FRAME = 2048
_HEADER = struct.Struct("<I")


class Channel:
    """Broadcasts rank 0's messages; times every collective region."""

    def __init__(self, world: World, on_stall: Callable[[], None] | None = None) -> None:
        self.world = world
        self._on_stall = on_stall
        self._busy_since: float | None = None
        self._lock = threading.Lock()
        # Called with each exchange's seconds (the engine's /metrics histogram).
        self.on_exchange: Callable[[float], None] | None = None
        threading.Thread(target=self._watch, name="mlxrpc-collective-watchdog", daemon=True).start()

    @contextmanager
    def collective(self) -> Iterator[None]:
        """Marks a region of collectives (an exchange, a model step) for the watchdog."""
        with self._lock:
            self._busy_since = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._busy_since = None

    def exchange(self, message: Any = None) -> Any:
        """Rank 0 sends ``message``; every rank returns it."""
        started = time.perf_counter()
        with self.collective():
            frame = np.zeros(FRAME, np.uint8)
            payload = b""
            if self.world.leader:
                payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                head = _HEADER.pack(len(payload)) + payload[:FRAME - _HEADER.size]
                frame[:len(head)] = np.frombuffer(head, np.uint8)
            received = np.array(self._all_sum(frame), copy=False)
            (length,) = _HEADER.unpack(received[:_HEADER.size].tobytes())
            data = received[_HEADER.size:_HEADER.size + length].tobytes()
            rest = length - len(data)
            if rest > 0:
                tail = np.zeros(rest, np.uint8)
                if self.world.leader:
                    tail[:] = np.frombuffer(payload[len(data):], np.uint8)
                data += np.array(self._all_sum(tail), copy=False).tobytes()
        if self.on_exchange is not None:
            self.on_exchange(time.perf_counter() - started)
        return message if self.world.leader else pickle.loads(data)

    def _all_sum(self, values: np.ndarray) -> mx.array:
        # On the stream the model's forward passes run on (mlx-lm's generation
        # stream), so this collective queues after theirs on every rank: two
        # streams could run collectives at once, and the peers pair them wrongly.
        result = mx.distributed.all_sum(mx.array(values), group=self.world.group, stream=generation_stream)
        mx.eval(result)
        return result

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            with self._lock:
                since = self._busy_since
            if since is not None and time.monotonic() - since > self.world.timeout:
                log.critical("rank %d: a collective has not completed in %.0fs (--distributed-timeout): "
                             "a rank stalled or the network dropped; exiting", self.world.rank,
                             self.world.timeout)
                if self._on_stall is not None:
                    try:
                        self._on_stall()
                    except Exception:
                        log.exception("the stall callback failed")
                os._exit(EXIT_WORLD_FAILED)
