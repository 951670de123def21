"""Admission by KV-cache bytes (--kv-cache-bytes).

Slots (--max-num-seqs) bound how many sequences run, not how much memory
their KV caches take: sixteen 8k-token prompts on Llama 3 8B need 16 GiB of
KV in bf16. Each request reserves, before it joins the batch, the KV its
sequence can grow to — (prompt + max_tokens) × the model's bytes per token
(rounded up to mlx-lm's 256-token allocation step; a rotating cache only its
window) — and waits in arrival order while the reservations of the running
ones leave no room. A request that could not fit even alone is refused with
the numbers. The core owns one instance (engine thread only); ``usage`` is a
snapshot any thread may read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EngineError, ErrorCode
from .kv_cache import KVLayout

STEP = 256  # mlx-lm's KV caches grow in steps of 256 tokens


@dataclass(frozen=True)
class KVUsage:
    """KV bytes of one model: the budget (shared by all models), reserved by
    admitted requests, held now by its batch, kept by its prefix cache."""

    budget: int = 0
    reserved: int = 0
    in_use: int = 0
    cached: int = 0
    waiting: int = 0


def default_budget() -> int:
    """A quarter of the machine's memory (0 when it cannot be read: no budget)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 0


def reservation(token_bytes: int, layout: KVLayout, prompt_tokens: int, max_tokens: int,
                prefill_step: int) -> int:
    """Bytes one sequence's KV can grow to."""
    tokens = prompt_tokens + max_tokens
    if layout.max_size is not None:
        # The window, plus one prefill chunk while the prompt goes in.
        tokens = min(tokens, layout.max_size + prefill_step)
    return -(-tokens // STEP) * STEP * token_bytes


class KVBudget:
    """Reservations against one byte budget, and the requests waiting for room."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._held: dict[object, tuple[str, int]] = {}
        self.reserved = 0
        self.peak_reserved = 0

    def check(self, need: int, prompt_tokens: int, max_tokens: int) -> None:
        """Refuses (INVALID_ARGUMENT) a request that cannot fit even with nothing else running."""
        if self.total and need > self.total:
            raise EngineError(
                ErrorCode.INVALID_ARGUMENT,
                f"this request needs {need} bytes of KV cache ({prompt_tokens} prompt + {max_tokens} "
                f"max_tokens) but the server's KV budget (--kv-cache-bytes) is {self.total} bytes; "
                "lower max_tokens or shorten the prompt",
                field="max_tokens", reason="KV_BUDGET_EXCEEDED",
            )

    def try_reserve(self, key: object, model_id: str, need: int) -> bool:
        if self.total and self.reserved + need > self.total and self._held:
            return False
        self._held[key] = (model_id, need)
        self.reserved += need
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return True

    def release(self, key: object) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self.reserved -= held[1]

    def held(self) -> list[tuple[str, int]]:
        return list(self._held.values())

    def reserved_by(self, model_id: str) -> int:
        return sum(n for m, n in self._held.values() if m == model_id)

