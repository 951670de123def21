"""The one adapter over mlx-vlm's continuous-batching ``BatchGenerator``.

Same interface as ``batching.ModelBatch``. mlx-vlm samples a whole batch with
one sampler, so per-request sampling (temperature, top-p, seed) is applied
as a per-request logits processor (Gumbel-max) in front of its argmax; its
stop criterion is the model's EOS for the whole batch, so per-request stop
token ids are checked here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generation_stream as mlx_lm_generation_stream
from mlx_vlm.generate import BatchGenerator

from .batching import StepToken
from .params import ResolvedSampling
from .sampling import LogitsProcessor, make_sampling_processor


class VisionBatch:
    def __init__(self, model: Any, processor: Any, *, max_num_seqs: int, prefill_batch_size: int,
                 prefill_step_size: int) -> None:
        self._model = model
        self._generator = BatchGenerator(
            model.language_model, processor,
            completion_batch_size=max_num_seqs,
            prefill_batch_size=min(prefill_batch_size, max_num_seqs),
            prefill_step_size=prefill_step_size,
            # Keeps mlx-vlm on its general decode path, which runs logits processors.
            compute_logprobs=True,
            # mlx-vlm's default is a thread-local stream, whose worker MLX never
            # joins when the engine thread ends: the process then aborts at exit.
            stream=mlx_lm_generation_stream,
        )
        self._stops: dict[int, set[int]] = {}

    def __len__(self) -> int:
        return len(self._stops)

    @property
    def caching(self) -> bool:
        return False

    @property
    def running(self) -> int:
        return len(self._generator._generation_batch)

    def insert(self, prompt: list[int], *, max_tokens: int, sampling: ResolvedSampling,
               processors: list[LogitsProcessor], stop_token_ids: list[int], vocab_size: int,
               model_inputs: dict[str, Any] | None = None,
               guard: Callable[[BaseException], None] | None = None,
               speculative: bool = True) -> tuple[int, int]:
        del speculative  # no speculative decoding for vision batches
        sampler = make_sampling_processor(sampling, vocab_size)
        if sampler is not None and guard is not None:
            sampler = _guarded_processor(sampler, guard)
        inputs = {k: mx.array(v) for k, v in (model_inputs or {}).items()}
        input_ids = mx.array(np.asarray(prompt, dtype=np.int32))[None]
        mask = inputs.pop("attention_mask", None)
        pixel_values = inputs.pop("pixel_values", None)
        embedded = self._model.get_input_embeddings(input_ids, pixel_values, mask=mask, **inputs)
        prompt_kwargs = {**inputs, **{k: v for k, v in embedded.to_dict().items() if v is not None}}
        (uid,) = self._generator.insert(
            [prompt], max_tokens=[max_tokens], prompt_kwargs=[prompt_kwargs],
            logits_processors=[[*processors, *([sampler] if sampler else [])]],
        )
        self._stops[uid] = set(stop_token_ids)
        return uid, 0

    def remove(self, uids: list[int], *, keep_cache: bool = False) -> None:
        for uid in uids:
            if self._stops.pop(uid, None) is not None:
                self._generator.remove(uid)

    def step(self) -> tuple[list[int], list[StepToken]]:
        _, generated = self._generator.next()
        tokens, stopped = [], []
        for r in generated:
            if r.uid not in self._stops:
                continue
            reason = r.finish_reason
            if reason is None and r.token in self._stops[r.uid]:
                reason = "stop"
                stopped.append(r.uid)
            if reason is not None:
                self._stops.pop(r.uid, None)
            tokens.append(StepToken(r.uid, r.token, None, reason))  # type: ignore[arg-type]
        for uid in stopped:
            self._generator.remove(uid)
        return [], tokens

    def close(self) -> None:
        self._generator.close()


def _guarded_processor(processor: LogitsProcessor, guard: Callable[[BaseException], None]) -> LogitsProcessor:
    """Sampling (Gumbel-max) whose failure is recorded for its request, not raised."""

    def process(tokens: mx.array, logits: mx.array) -> mx.array:
        try:
            return processor(tokens, logits)
        except Exception as exc:
            guard(exc)
            return logits

    return process
