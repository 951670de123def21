"""Speculative decoding inside the running batch (prompt lookup, draft model).

mlx-lm's speculative path decodes one sequence and mlx_lm.server turns
batching off to use it. Here one decode step of the whole batch verifies
drafts instead: every row feeds its pending token followed by its draft
tokens (rows without a proposal feed only padding after it), the target runs
ONE forward pass over ``(batch, k + 1)`` tokens, and each row keeps the
longest run of drafts its own sampler reproduces, plus the sampler's token at
the first mismatch (so every step emits at least what a plain step would).

Exactness. The draft of a row is a deterministic function of its tokens (a
point mass), so the rejection rule "accept draft ``d`` with probability
``p(d)``, else sample from ``p`` without ``d``, renormalised" is the same as
"sample ``t ~ p`` with the request's own sampler, accept iff ``t == d``":
``P(t = d) = p(d)`` and, given ``t != d``, ``t`` follows ``p`` without ``d``.
Greedy rows take argmax at each position, so their output is the plain
output. Logits processors (logit_bias, penalties) see the context each
position would have had; rows whose processors keep state across calls
(grammars, min_tokens) get no drafts (``speculative=False`` at insert).

The KV caches are rolled back per row: all rows are trimmed by the fewest
rejected positions, and a row that rejected more is shifted right by the
difference, its stale tail becoming left padding (mlx-lm's own
``prepare(right_padding)`` / ``finalize`` of ``BatchKVCache``). Caches of
other kinds (rotating, quantized, recurrent) turn speculation off.

Draft length adapts per row: a row proposes ``num_draft_tokens`` at first,
then twice its last length after a full acceptance and one more than its
accepted run after a rejection; after drafts that all failed it pauses (1, 3,
7, 15, then 16 plain steps as failures repeat), after finding nothing to
propose one step, and a step where no row may draft stays mlx-lm's pipelined
plain step.

When: only in steps where at most ``max_batch`` rows decode. Verifying ``k``
drafts costs a ``k + 1``-token forward pass; that is nearly free while
decoding is memory-bound (few rows) and a loss once the batch is large
enough to be compute-bound, where plain steps run instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import GenerationBatch
from mlx_lm.models.cache import BatchKVCache

from .draft import DraftModelProposer, NgramProposer, Proposer

METHODS = ("off", "ngram", "draft")


@dataclass(frozen=True)
class Speculation:
    """One model's speculative decoding settings (``--speculative`` and friends)."""

    method: str = "ngram"
    num_draft_tokens: int = 4
    ngram_size: int = 3
    max_batch: int = 4
    # The draft model's path or hub id (method "draft").
    draft_model: str | None = None
    # Adapt each row's draft length to its acceptance (off: always num_draft_tokens).
    adaptive: bool = True


@dataclass
class SpeculationStats:
    steps: int = 0
    proposed: int = 0
    accepted: int = 0


def rollback(caches: list[Any], rejected: list[int]) -> None:
    """Drops each row's last ``rejected[i]`` positions from every layer's cache."""
    least = min(rejected)
    shifts = [r - least for r in rejected]
    for c in caches:
        if least:
            c.trim(least)
        if any(shifts):
            c.prepare(right_padding=shifts)
            c.finalize()


def supported(caches: list[Any]) -> bool:
    return bool(caches) and all(type(c) is BatchKVCache for c in caches)


@dataclass
class Speculator:
    """Replaces ``GenerationBatch.next`` of one batch by a verifying step."""

    config: Speculation
    proposer: Proposer
    # uids of rows that must not get drafts (stateful logits processors).
    excluded: set[int] = field(default_factory=set)
    stats: SpeculationStats = field(default_factory=SpeculationStats)
    # Per row: how many drafts to propose next (adapted to its acceptance), and
    # after drafts that all failed, (decode steps without drafts left, failures in a row).
    lengths: dict[int, int] = field(default_factory=dict)
    pauses: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Told (drafts proposed, accepted) after each verifying step (metrics).
    on_verify: Callable[[int, int], None] | None = None

    def install(self, batch: GenerationBatch) -> None:
        batch.next = lambda: self.next(batch)  # type: ignore[method-assign]

    def forget(self, uid: int) -> None:
        self.excluded.discard(uid)
        self.lengths.pop(uid, None)
        self.pauses.pop(uid, None)
        self.proposer.forget(uid)

    def _rooms(self, batch: GenerationBatch) -> list[int]:
        """Drafts each row may get this step (0: none), before its pending token is known."""
        rooms = []
        for i, uid in enumerate(batch.uids):
            room = min(self.lengths.get(uid, self.config.num_draft_tokens),
                       batch.max_tokens[i] - batch._num_tokens[i] - 1)
            rooms.append(0 if room <= 0 or uid in self.excluded or self._paused(uid) else room)
        return rooms

    def next(self, batch: GenerationBatch) -> list[GenerationBatch.Response]:
        if not batch.uids or len(batch.uids) > self.config.max_batch or not supported(batch.prompt_cache):
            return GenerationBatch.next(batch)
        rooms = self._rooms(batch)
        if not any(rooms):  # keeps mlx-lm's pipelined step: no wait for the pending tokens
            return GenerationBatch.next(batch)
        mx.eval(batch._next_tokens)
        pending = batch._next_tokens.tolist()
        drafts = []
        for i, uid in enumerate(batch.uids):
            draft = self.proposer.propose(uid, batch.tokens[i] + [pending[i]], rooms[i]) if rooms[i] else []
            if rooms[i] and not draft and self.config.adaptive:
                self._adapt(uid, 0, 0)  # nothing to propose: look again after a pause
            drafts.append(draft)
        width = max(len(d) for d in drafts)
        if width == 0:
            return GenerationBatch.next(batch)
        return self._verify(batch, pending, drafts, width)

    def _verify(self, batch: GenerationBatch, pending: list[int], drafts: list[list[int]],
                width: int) -> list[GenerationBatch.Response]:
        rows = len(batch.uids)
        inputs = [[pending[i], *d, *[pending[i]] * (width - len(d))] for i, d in enumerate(drafts)]
        logits = batch.model(mx.array(inputs), cache=batch.prompt_cache)
        samples, logprobs = [], []
        for i in range(rows):
            n = len(drafts[i]) + 1
            row_logits = self._process(batch, i, inputs[i], logits[i, :n])
            row_logprobs = row_logits - mx.logsumexp(row_logits, axis=-1, keepdims=True)
            sampler = (batch.samplers[i] if batch.samplers else None) or batch.fallback_sampler
            samples.append(sampler(row_logprobs))
            logprobs.append(row_logprobs)
        mx.eval(samples, logprobs)
        responses, keep, rejected, bonus = [], [], [], []
        proposed, taken = self.stats.proposed, self.stats.accepted
        for i in range(rows):
            sampled, draft = samples[i].tolist(), drafts[i]
            accepted = 0
            while accepted < len(draft) and sampled[accepted] == draft[accepted]:
                accepted += 1
            self.stats.proposed += len(draft)
            self.stats.accepted += accepted
            if draft and self.config.adaptive:
                self._adapt(batch.uids[i], len(draft), accepted)
            emit = [pending[i], *draft[:accepted]]
            emit_logprobs = [batch._next_logprobs[i], *logprobs[i][:accepted]]
            emitted, finish = self._emit(batch, i, emit)
            batch.tokens[i].extend(emit[:emitted])
            if batch.logits_processors[i]:
                batch._token_context[i].update_and_fetch(mx.array(emit[:emitted]))
            rejected.append(width + 1 - emitted)
            bonus.append((sampled[accepted], logprobs[i][accepted]))
            responses.append([(emit[j], emit_logprobs[j], finish if j == emitted - 1 else None)
                              for j in range(emitted)])
            if finish is None:
                keep.append(i)
        self.stats.steps += 1
        if self.on_verify is not None:
            self.on_verify(self.stats.proposed - proposed, self.stats.accepted - taken)
        rollback(batch.prompt_cache, rejected)
        out = []
        for i, row in enumerate(responses):
            for token, lp, finish in row:
                out.append(GenerationBatch.Response(
                    uid=batch.uids[i], token=token, logprobs=lp, finish_reason=finish,
                    prompt_cache=batch.extract_cache(i) if finish else None,
                    all_tokens=batch.tokens[i] if finish else None,
                ))
        batch._next_tokens = mx.array([t for t, _ in bonus], dtype=mx.uint32)
        batch._next_logprobs = [lp for _, lp in bonus]
        if len(keep) < rows:
            batch.filter(keep)
        return out

    def _adapt(self, uid: int, proposed: int, accepted: int) -> None:
        """Next draft length: twice as long after a full acceptance, the accepted
        run plus one otherwise, so rows whose drafts fail stop paying for them.
        The length depends only on past steps, so the proposal stays
        independent of this step's sampling (the exactness argument holds)."""
        failures = self.pauses.get(uid, (0, 0))[1]
        if not proposed:  # nothing to propose: look again after one plain step
            self.pauses[uid] = (1, failures)
            return
        longest = self.config.num_draft_tokens
        self.lengths[uid] = min(longest, 2 * proposed) if accepted == proposed else accepted + 1
        failures = failures + 1 if accepted == 0 else 0
        self.pauses[uid] = (min(2 ** failures - 1, 16), failures)

    def _paused(self, uid: int) -> bool:
        """Counts down a row's pause: 1, 3, 7, 15, 16 plain steps after 1, 2, 3, ... failed drafts in a row."""
        left, failures = self.pauses.get(uid, (0, 0))
        if left > 0:
            self.pauses[uid] = (left - 1, failures)
        return left > 0

    @staticmethod
    def _process(batch: GenerationBatch, i: int, fed: list[int], logits: mx.array) -> mx.array:
        """The row's logits processors at each verified position, with that position's context."""
        processors = batch.logits_processors[i]
        if not processors:
            return logits
        before = batch._token_context[i].tokens
        out = []
        for j in range(logits.shape[0]):
            context = mx.concatenate([before, mx.array(fed[: j + 1], dtype=before.dtype)])
            row = logits[j : j + 1]
            for processor in processors:
                row = processor(context, row)
            out.append(row)
        return mx.concatenate(out, axis=0)

    @staticmethod
    def _emit(batch: GenerationBatch, i: int, tokens: list[int]) -> tuple[int, str | None]:
        """Counts the row's tokens against max_tokens and its stop sequences;
        (tokens emitted, finish reason)."""
        for n, token in enumerate(tokens, 1):
            batch._num_tokens[i] += 1
            finish = "length" if batch._num_tokens[i] >= batch.max_tokens[i] else None
            if batch._matchers[i].advance(token):
                finish = "stop"
            if finish is not None:
                return n, finish
        return len(tokens), None


def make_speculator(config: Speculation | None, draft: Any = None) -> Speculator | None:
    """The speculator of one batch of a model (``draft``: its loaded draft model)."""
    if config is None or config.method == "off":
        return None
    if config.method == "draft":
        assert draft is not None, "the draft model is loaded with its target"
        return Speculator(config, DraftModelProposer(draft))
    return Speculator(config, NgramProposer(config.ngram_size))
