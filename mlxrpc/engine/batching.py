"""The one adapter over mlx-lm's continuous-batching ``BatchGenerator``.

mlx-lm changes this API between minor releases (``insert`` arguments and
response fields moved in 0.30, 0.31 and 0.32); everything else in mlxrpc goes
through this module, so an upgrade touches one file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator, StopSequences
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

from .params import ResolvedSampling
from .sampling import LogitsProcessor, Sampler, greedy, make_request_sampler
from .speculative import Speculator


@dataclass
class StepToken:
    """One generated token of one sequence."""

    uid: int
    token: int
    logprobs: mx.array
    # "length", "stop" (a stop token id), or None.
    finish_reason: str | None


def guarded_sampler(sampler: Sampler, guard: Callable[[BaseException], None]) -> Sampler:
    def sample(logprobs: mx.array) -> mx.array:
        try:
            return sampler(logprobs)
        except Exception as exc:
            guard(exc)
            return greedy(logprobs)

    return sample


def _skip_context(processor: LogitsProcessor, skip: int) -> LogitsProcessor:
    return lambda tokens, logits: processor(tokens[skip:], logits)


class ModelBatch:
    """The running batch of one model: sequences join and leave between steps.

    With a prompt cache, the KV cache of every sequence that ends is kept
    (mlx-lm's LRU trie, bounded by entries and bytes); a new prompt sharing a
    prefix with one of them starts from a copy and prefills only the rest.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_num_seqs: int,
        prefill_batch_size: int,
        prefill_step_size: int,
        prompt_cache_size: int = 0,
        prompt_cache_bytes: int = 0,
        speculator: Speculator | None = None,
    ) -> None:
        self._generator = BatchGenerator(
            model,
            completion_batch_size=max_num_seqs,
            prefill_batch_size=prefill_batch_size,
            prefill_step_size=prefill_step_size,
        )
        self._live: set[int] = set()
        # Per sequence: (stop token ids, max_tokens), to finish a first token
        # emitted straight after prefill; and the uids whose first token was
        # emitted early (mlx-lm returns it again one step later).
        self._limits: dict[int, tuple[frozenset[int], int]] = {}
        self._early: set[int] = set()
        self._prompt_cache = (
            LRUPromptCache(max_size=prompt_cache_size, max_bytes=prompt_cache_bytes)
            if prompt_cache_size > 0 and prompt_cache_bytes > 0
            else None
        )
        # Speculative decoding (speculative.py) replaces the decode step.
        self.speculator = speculator
        if self.speculator is not None:
            self.speculator.install(self._generator._generation_batch)

    def __len__(self) -> int:
        return len(self._live)

    def insert(
        self,
        prompt: list[int],
        *,
        max_tokens: int,
        sampling: ResolvedSampling,
        processors: list[LogitsProcessor],
        stop_token_ids: list[int],
        vocab_size: int,
        model_inputs: dict[str, Any] | None = None,
        guard: Callable[[BaseException], None] | None = None,
        speculative: bool = True,
    ) -> tuple[int, int]:
        """Queues a sequence; returns (uid, prompt tokens served from the prompt cache).

        ``guard`` receives a failure of this sequence's sampler (which then
        falls back to argmax), so one request's error never aborts the step.
        ``speculative=False`` keeps drafts away from a sequence whose logits
        processors keep state between calls (grammars).
        """
        sampler = make_request_sampler(sampling, vocab_size)
        if guard is not None:
            sampler = guarded_sampler(sampler, guard)
        stops = StopSequences([(t,) for t in stop_token_ids]) if stop_token_ids else StopSequences()
        cache, rest = self._fetch(prompt)
        cached = len(prompt) - len(rest)
        if cached:
            # mlx-lm's token context starts with the cached prompt tokens; show
            # processors (penalties) the same context as an uncached run.
            processors = [_skip_context(p, cached) for p in processors]
        (uid,) = self._generator.insert(
            [rest],
            max_tokens=[max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[prompt[:cached]],
            samplers=[sampler],
            logits_processors=[processors],
            stop_sequences=[stops],
        )
        self._live.add(uid)
        self._limits[uid] = (frozenset(stop_token_ids), max_tokens)
        if self.speculator is not None and not speculative:
            self.speculator.excluded.add(uid)
        return uid, cached

    def remove(self, uids: list[int], *, keep_cache: bool = False) -> None:
        """Drops sequences; ``keep_cache`` saves their KV caches for reuse first."""
        uids = [u for u in uids if u in self._live]
        if uids:
            caches = self._generator.remove(uids, return_prompt_caches=keep_cache and self.caching)
            for cache, tokens in caches.values():
                self._store(tokens, cache)
            self._live.difference_update(uids)
            self._forget(uids)

    def _forget(self, uids: list[int]) -> None:
        for uid in uids:
            self._limits.pop(uid, None)
            self._early.discard(uid)
            if self.speculator is not None:
                self.speculator.forget(uid)

    @property
    def caching(self) -> bool:
        return self._prompt_cache is not None

    @property
    def cache_bytes(self) -> int:
        return self._prompt_cache.nbytes if self._prompt_cache is not None else 0

    def _fetch(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        if self._prompt_cache is None:
            return None, prompt
        cache, rest = self._prompt_cache.fetch_nearest_cache(None, prompt)
        if cache is not None and not rest:
            # The whole prompt is cached: recompute its last token, which
            # produces the first logits.
            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _store(self, tokens: list[int] | None, cache: list[Any] | None) -> None:
        if self._prompt_cache is not None and tokens and cache:
            self._prompt_cache.insert_cache(None, list(tokens), cache)

    def step(self) -> tuple[list[int], list[StepToken]]:
        """One scheduling step: (uids whose prefill progressed, generated tokens)."""
        prompt_responses, generated = self._generator.next()
        tokens = []
        for r in generated:
            if r.uid in self._early:
                self._early.discard(r.uid)
                if r.finish_reason is None:
                    continue  # already emitted straight after prefill
            if r.finish_reason is not None:
                self._live.discard(r.uid)
                self._forget([r.uid])
                self._store(r.all_tokens, r.prompt_cache)
            tokens.append(StepToken(r.uid, r.token, r.logprobs, r.finish_reason))
        tokens.extend(self._first_tokens([r.uid for r in prompt_responses if r.end_of_prompt]))
        return [r.uid for r in prompt_responses], tokens

    def _first_tokens(self, started: list[int]) -> list[StepToken]:
        """The first token of sequences whose prefill just ended, without waiting a step.

        mlx-lm samples it when a sequence joins the generation batch but hands
        it out only at the next ``next()``, one whole decode step later. It is
        evaluated and emitted here instead; the repeat is dropped next step. A
        first token that ends the sequence (a stop id, max_tokens 1) finishes
        it now; the caller then removes it.
        """
        batch = self._generator._generation_batch
        position = {uid: i for i, uid in enumerate(batch.uids)}
        rows = [(uid, position[uid]) for uid in started if uid in position and uid in self._limits]
        if not rows:
            return []
        mx.eval(batch._next_tokens, [batch._next_logprobs[i] for _, i in rows])
        values = batch._next_tokens.tolist()
        out = []
        for uid, i in rows:
            token = values[i]
            stops, max_tokens = self._limits[uid]
            reason = "stop" if token in stops else "length" if max_tokens <= 1 else None
            if reason is None:
                self._early.add(uid)
            out.append(StepToken(uid, token, batch._next_logprobs[i], reason))
        return out

    @property
    def running(self) -> int:
        """Sequences decoding now (not waiting for prefill)."""
        return len(self._generator._generation_batch)

    def close(self) -> None:
        self._generator.close()


def prompt_logprobs(model: Any, prompt: list[int], chunk: int = 512) -> list[mx.array]:
    """Log-probabilities the model gives each prompt token after the first
    (one row per position), computed in chunks with a KV cache so memory stays
    bounded by ``chunk`` rows of the vocabulary."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    rows: list[mx.array] = []
    for start in range(0, len(prompt) - 1, chunk):
        tokens = mx.array(prompt[start:min(start + chunk, len(prompt) - 1)])[None]
        logits = model(tokens, cache=cache)[0].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        mx.eval(logprobs)
        rows.extend(logprobs)
    return rows
