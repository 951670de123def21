"""The one adapter over mlx-lm's continuous-batching ``BatchGenerator``.

mlx-lm changes this API between minor releases (``insert`` arguments and
response fields moved in 0.30, 0.31 and 0.32); everything else in mlxrpc goes
through this module, so an upgrade touches one file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences

from .sampling import LogitsProcessor, Sampler


@dataclass
class StepToken:
    """One generated token of one sequence."""

    uid: int
    token: int
    logprobs: mx.array
    # "length", "stop" (a stop token id), or None.
    finish_reason: str | None


class ModelBatch:
    """The running batch of one model: sequences join and leave between steps."""

    def __init__(
        self, model: Any, *, max_num_seqs: int, prefill_batch_size: int, prefill_step_size: int
    ) -> None:
        self._generator = BatchGenerator(
            model,
            completion_batch_size=max_num_seqs,
            prefill_batch_size=prefill_batch_size,
            prefill_step_size=prefill_step_size,
        )
        self._live: set[int] = set()

    def __len__(self) -> int:
        return len(self._live)

    def insert(
        self,
        prompt: list[int],
        *,
        max_tokens: int,
        sampler: Sampler,
        processors: list[LogitsProcessor],
        stop_token_ids: list[int],
    ) -> int:
        stops = StopSequences([(t,) for t in stop_token_ids]) if stop_token_ids else StopSequences()
        (uid,) = self._generator.insert(
            [prompt],
            max_tokens=[max_tokens],
            samplers=[sampler],
            logits_processors=[processors],
            stop_sequences=[stops],
        )
        self._live.add(uid)
        return uid

    def remove(self, uids: list[int]) -> None:
        uids = [u for u in uids if u in self._live]
        if uids:
            self._generator.remove(uids)
            self._live.difference_update(uids)

    def step(self) -> tuple[list[int], list[StepToken]]:
        """One scheduling step: (uids whose prefill progressed, generated tokens)."""
        prompt_responses, generated = self._generator.next()
        tokens = []
        for r in generated:
            if r.finish_reason is not None:
                self._live.discard(r.uid)
            tokens.append(StepToken(r.uid, r.token, r.logprobs, r.finish_reason))
        return [r.uid for r in prompt_responses], tokens

    @property
    def running(self) -> int:
        """Sequences decoding now (not waiting for prefill)."""
        return len(self._generator._generation_batch)

    def close(self) -> None:
        self._generator.close()
