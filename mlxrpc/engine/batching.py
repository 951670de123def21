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

from .disk_cache import DiskPromptCache, common_prefix
from .kv_cache import KVLayout
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


# Shared-prefix waiting (--use-paged-cache) pays only for this many tokens or more.
MIN_SHARED_PREFIX = 64


@dataclass
class _Sequence:
    """A sequence's insert arguments, kept while it waits for a shared prefix."""

    uid: int
    prompt: list[int]
    max_tokens: int
    sampler: Sampler
    processors: list[LogitsProcessor]
    stops: StopSequences
    speculative: bool = True


class ModelBatch:
    """The running batch of one model: sequences join and leave between steps.

    With a prompt cache, the KV cache of every sequence that ends is kept
    (mlx-lm's LRU trie, bounded by entries and bytes); a new prompt sharing a
    prefix with one of them starts from a copy and prefills only the rest.

    With ``share_prefixes`` (--use-paged-cache), each prompt's KV goes into
    the prompt cache as soon as it is prefilled (not only when its sequence
    ends), and a prompt sharing a longer prefix with a sequence still
    prefilling (its leader) than the cache offers waits for it, then starts
    from its KV: requests arriving together with one system prompt prefill it
    once, and those arriving while it decodes reuse it at once. Uids are this class's own (a
    waiting sequence has no generator uid yet).
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
        kv: KVLayout | None = None,
        speculator: Speculator | None = None,
        disk: DiskPromptCache | None = None,
        share_prefixes: bool = False,
    ) -> None:
        self._model = model
        self._kv = kv or KVLayout()
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
        self._disk = disk if self._prompt_cache is not None else None
        self._share = share_prefixes and self._prompt_cache is not None
        self._next_uid = 0
        self._to_gen: dict[int, int] = {}
        self._from_gen: dict[int, int] = {}
        # Shared prefixes: prompts still prefilling (by uid), the sequences
        # waiting for each, and (uid, cached tokens) of those started since the last step.
        self._prefilling: dict[int, list[int]] = {}
        self._followers: dict[int, list[_Sequence]] = {}
        self._forked: list[tuple[int, int]] = []
        # Speculative decoding (speculative.py) replaces the decode step; it
        # knows rows by their generator uids.
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
        seq = _Sequence(self._next_uid, prompt, max_tokens, sampler, processors, stops, speculative)
        self._next_uid += 1
        self._live.add(seq.uid)
        self._limits[seq.uid] = (frozenset(stop_token_ids), max_tokens)
        if (leader := self._leader_for(prompt)) is not None:
            self._followers.setdefault(leader, []).append(seq)
            return seq.uid, 0
        return seq.uid, self._start(seq)

    def _start(self, seq: _Sequence) -> int:
        """Hands a sequence to the generator; returns its prompt tokens served from the cache."""
        prompt, processors = seq.prompt, seq.processors
        cache, rest = self._fetch(prompt)
        cached = len(prompt) - len(rest)
        if cache is None:
            cache = self._kv.make_cache(self._model)
        if cached:
            # mlx-lm's token context starts with the cached prompt tokens; show
            # processors (penalties) the same context as an uncached run.
            processors = [_skip_context(p, cached) for p in processors]
        (gen,) = self._generator.insert(
            [rest],
            max_tokens=[seq.max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[prompt[:cached]],
            samplers=[seq.sampler],
            logits_processors=[processors],
            stop_sequences=[seq.stops],
        )
        self._to_gen[seq.uid], self._from_gen[gen] = gen, seq.uid
        if self.speculator is not None and not seq.speculative:
            self.speculator.excluded.add(gen)
        if self._share:
            self._prefilling[seq.uid] = prompt
        return cached

    def _leader_for(self, prompt: list[int]) -> int | None:
        """The prefilling sequence worth waiting for: the longest shared prefix
        (at least MIN_SHARED_PREFIX tokens) beyond what the prompt cache has."""
        if not self._share or not self._prefilling:
            return None
        leader, shared = max(((uid, common_prefix(p, prompt)) for uid, p in self._prefilling.items()),
                             key=lambda x: x[1])
        if shared < MIN_SHARED_PREFIX or shared <= self._cached_prefix(prompt) + MIN_SHARED_PREFIX // 2:
            return None
        return leader

    def _cached_prefix(self, prompt: list[int]) -> int:
        """Prompt tokens the prompt cache could serve now (without copying a cache)."""
        assert self._prompt_cache is not None
        found = self._prompt_cache._trie.search(None, prompt)
        if found.exact is not None:
            return len(prompt)
        return max(len(found.shorter or ()), found.common_prefix if found.longer is not None else 0)

    def _prefix_ready(self, uid: int) -> None:
        """A prompt is in (or its sequence left): its KV goes into the prompt cache,
        for its followers and for prompts arriving while it decodes; the followers start."""
        prompt = self._prefilling.pop(uid, [])
        followers = self._followers.pop(uid, [])
        gen = self._to_gen.get(uid)
        if gen is not None and self._prompt_cache is not None and len(prompt) >= MIN_SHARED_PREFIX:
            for cache, tokens in self._generator.extract_cache([gen]).values():
                self._prompt_cache.insert_cache(None, list(tokens), cache)
        for seq in followers:
            if (leader := self._leader_for(seq.prompt)) is not None:
                self._followers.setdefault(leader, []).append(seq)
            else:
                self._forked.append((seq.uid, self._start(seq)))

    def forked(self) -> list[tuple[int, int]]:
        """(uid, prompt tokens served from the cache) of waiting sequences started since the last call."""
        forked, self._forked = self._forked, []
        return forked

    def remove(self, uids: list[int], *, keep_cache: bool = False) -> None:
        """Drops sequences; ``keep_cache`` saves their KV caches for reuse first."""
        uids = [u for u in uids if u in self._live]
        if not uids:
            return
        gone = set(uids)
        for leader, waiting in list(self._followers.items()):
            self._followers[leader] = [s for s in waiting if s.uid not in gone]
        gens = [self._to_gen[u] for u in uids if u in self._to_gen]
        caches = self._generator.remove(gens, return_prompt_caches=keep_cache and self.caching) if gens else {}
        for cache, tokens in caches.values():
            self._store(tokens, cache)
        self._live.difference_update(uids)
        self._forget(uids)
        for uid in uids:
            if uid in self._prefilling:
                self._prefix_ready(uid)

    def _forget(self, uids: list[int]) -> None:
        for uid in uids:
            self._limits.pop(uid, None)
            self._early.discard(uid)
            gen = self._to_gen.pop(uid, None)
            if gen is not None:
                self._from_gen.pop(gen, None)
                if self.speculator is not None:
                    self.speculator.forget(gen)

    @property
    def caching(self) -> bool:
        return self._prompt_cache is not None

    @property
    def kv_bytes(self) -> int:
        """Bytes of KV the batch's sequences hold now (waiting, prefilling and decoding)."""
        return self._generator.prompt_cache_nbytes

    @property
    def cache_bytes(self) -> int:
        return self._prompt_cache.nbytes if self._prompt_cache is not None else 0

    def _fetch(self, prompt: list[int]) -> tuple[list[Any] | None, list[int]]:
        if self._prompt_cache is None:
            return None, prompt
        cache, rest = self._prompt_cache.fetch_nearest_cache(None, prompt)
        if self._disk is not None and self._load_from_disk(prompt, len(prompt) - len(rest)):
            cache, rest = self._prompt_cache.fetch_nearest_cache(None, prompt)
        if cache is not None and not rest:
            # The whole prompt is cached: recompute its last token, which
            # produces the first logits.
            if not can_trim_prompt_cache(cache):
                return None, prompt
            trim_prompt_cache(cache, 1)
            rest = prompt[-1:]
        return cache, rest

    def _load_from_disk(self, prompt: list[int], cached: int) -> bool:
        """Moves the disk entry sharing a longer prefix than ``cached`` into memory."""
        assert self._disk is not None and self._prompt_cache is not None
        hit = self._disk.best(prompt, trimmable=self._kv.max_size is None)
        if hit is None or hit[1] <= cached:
            return False
        cache = self._disk.load(hit[0])
        if cache is None:
            return False
        self._prompt_cache.insert_cache(None, list(hit[0].tokens), cache)
        return True

    def _store(self, tokens: list[int] | None, cache: list[Any] | None) -> None:
        if self._prompt_cache is not None and tokens and cache:
            self._prompt_cache.insert_cache(None, list(tokens), cache)
            if self._disk is not None:
                self._disk.store(list(tokens), cache)

    def step(self) -> tuple[list[int], list[StepToken]]:
        """One scheduling step: (uids whose prefill progressed, generated tokens)."""
        prompt_responses, generated = self._generator.next()
        tokens = []
        for r in generated:
            uid = self._from_gen[r.uid]
            if uid in self._early:
                self._early.discard(uid)
                if r.finish_reason is None:
                    continue  # already emitted straight after prefill
            if r.finish_reason is not None:
                self._live.discard(uid)
                self._forget([uid])
                self._store(r.all_tokens, r.prompt_cache)
            tokens.append(StepToken(uid, r.token, r.logprobs, r.finish_reason))
        started = [self._from_gen[r.uid] for r in prompt_responses if r.end_of_prompt]
        tokens.extend(self._first_tokens(started))
        for uid in started:
            if uid in self._prefilling:
                self._prefix_ready(uid)
        return [self._from_gen[r.uid] for r in prompt_responses], tokens

    def _first_tokens(self, started: list[int]) -> list[StepToken]:
        """The first token of sequences whose prefill just ended, without waiting a step.

        mlx-lm samples it when a sequence joins the generation batch but hands
        it out only at the next ``next()``, one whole decode step later. It is
        evaluated and emitted here instead; the repeat is dropped next step. A
        first token that ends the sequence (a stop id, max_tokens 1) finishes
        it now; the caller then removes it.
        """
        batch = self._generator._generation_batch
        position = {self._from_gen[gen]: i for i, gen in enumerate(batch.uids)}
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

    def prompt_logprobs(self, prompt: list[int]) -> list[mx.array]:
        with mx.stream(self._generator.stream):  # after the batch's own work, as every rank orders it
            return prompt_logprobs(self._generator.model, prompt)

    # What every rank of a distributed world must share (distributed/lockstep.py).

    @property
    def cache_entries(self) -> int:
        return len(self._prompt_cache) if self._prompt_cache is not None else 0

    def trim_cache(self, entries: int) -> None:
        """Evicts least recently used prefix-cache entries down to ``entries``."""
        if self._prompt_cache is not None:
            self._prompt_cache.trim_to(n_sequences=entries)

    def next_tokens(self) -> list[int] | None:
        """The tokens sampled for the next decode step, one per decoding sequence."""
        batch = self._generator._generation_batch
        if not len(batch) or batch._next_tokens is None:
            return None
        return batch._next_tokens.tolist()

    def impose_tokens(self, tokens: list[int] | None) -> None:
        """Makes the next decode step feed ``tokens`` (rank 0's samples) instead of this rank's."""
        batch = self._generator._generation_batch
        if len(batch) != len(tokens or ()):
            raise RuntimeError(f"lockstep lost: {len(batch)} sequences decode here, {len(tokens or ())} on rank 0")
        if tokens:
            batch._next_tokens = mx.array(tokens, dtype=batch._next_tokens.dtype)

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
