"""The lockstep batch: rank 0 records what changed, every rank replays it, then all step.

Rank 0's ``LeaderBatch`` is the engine core's ``ModelBatch`` that journals
every change of the batch (admissions with their prompt ids, removals,
prompt-logprob passes) and, before each step, broadcasts the journal with the
tokens rank 0 sampled for the next step. A follower applies the journal to its
own ``ModelBatch``, puts rank 0's tokens in place of its own samples, and
steps: every rank runs the same forward passes (whose collectives pair up)
and appends the same tokens, so grammars, logits processors and seeds need to
run on rank 0 only. Each rank's prefix cache sees the same inserts in the
same order; rank 0 sends its entry count so that byte-bounded eviction,
whose sizes differ per pipeline stage, evicts the same entries everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx

from ..engine.batching import ModelBatch
from ..engine.params import ResolvedSampling
from .channel import Channel

log = logging.getLogger(__name__)


GREEDY = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)


@dataclass
class Insert:
    prompt: list[int]
    max_tokens: int
    stop_token_ids: list[int]
    cached: int  # prompt tokens rank 0 served from its prefix cache
    cache_entries: int  # rank 0's prefix cache entries before the fetch


@dataclass
class Remove:
    uids: list[int]
    keep_cache: bool
    cache_entries: int  # after the removal


@dataclass
class PromptLogprobs:
    prompt: list[int]


@dataclass
class Message:
    """What changed since the last message; ``step``: then step with ``tokens``."""

    ops: list[Insert | Remove | PromptLogprobs] = field(default_factory=list)
    step: bool = False
    tokens: list[int] | None = None
    cache_entries: int = 0  # after rank 0's previous step


class DivergedError(RuntimeError):
    """A follower's state no longer matches rank 0's: the world cannot go on."""


class LeaderBatch(ModelBatch):
    """Rank 0's batch: journals every change and broadcasts it before each step."""

    def __init__(self, model: Any, channel: Channel, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._channel = channel
        self._journal: list[Insert | Remove | PromptLogprobs] = []
        self._entries_after_step = 0

    def insert(self, prompt: list[int], **kwargs: Any) -> tuple[int, int]:
        entries = self.cache_entries
        uid, cached = super().insert(prompt, **kwargs)
        self._journal.append(Insert(list(prompt), kwargs["max_tokens"], list(kwargs["stop_token_ids"]),
                                    cached, entries))
        return uid, cached

    def remove(self, uids: list[int], *, keep_cache: bool = False) -> None:
        live = [uid for uid in uids if uid in self._live]
        super().remove(live, keep_cache=keep_cache)
        if live:  # the core calls this after every step, mostly with nothing to remove
            self._journal.append(Remove(live, keep_cache, self.cache_entries))

    def prompt_logprobs(self, prompt: list[int]) -> list[mx.array]:
        """A forward pass outside the batch: every rank runs it now."""
        self._journal.append(PromptLogprobs(list(prompt)))
        self._send(step=False)
        return super().prompt_logprobs(prompt)

    def step(self) -> tuple[list[int], list[Any]]:
        self._send(step=True)
        with self._channel.collective():
            result = super().step()
        self._entries_after_step = self.cache_entries
        return result

    def _send(self, step: bool) -> None:
        tokens = self.next_tokens() if step else None
        message = Message(self._journal, step, tokens, self._entries_after_step)
        self._journal = []
        self._channel.exchange(message)


def heartbeat(channel: Channel) -> None:
    """Rank 0, idle: tells followers it is alive."""
    channel.exchange(Message())


def stop_followers(channel: Channel) -> None:
    """Rank 0, stopping: followers leave their loop and exit 0."""
    channel.exchange(None)


class FollowerBatch:
    """A follower's copy of rank 0's batch, driven by rank 0's messages."""

    def __init__(self, model: Any, vocab_size: int, channel: Channel, **kwargs: Any) -> None:
        # Byte-bounded eviction is rank 0's decision (its entry counts arrive
        # with each message); this copy only ever trims to them.
        kwargs["prompt_cache_bytes"] = 1 << 62 if kwargs.get("prompt_cache_bytes") else 0
        self._batch = ModelBatch(model, **kwargs)
        self._vocab_size = vocab_size
        self._channel = channel

    def follow(self) -> None:
        """Applies rank 0's messages until it says stop."""
        while (message := self._channel.exchange()) is not None:
            self.apply(message)

    def apply(self, message: Message) -> None:
        batch = self._batch
        if message.ops or message.step:
            batch.trim_cache(message.cache_entries)
        for op in message.ops:
            if isinstance(op, Insert):
                batch.trim_cache(op.cache_entries)
                _, cached = batch.insert(op.prompt, max_tokens=op.max_tokens, sampling=GREEDY, processors=[],
                                         stop_token_ids=op.stop_token_ids, vocab_size=self._vocab_size)
                if cached != op.cached:
                    raise DivergedError(f"prefix cache diverged: rank 0 reused {op.cached} prompt tokens, "
                                        f"this rank {cached}")
            elif isinstance(op, Remove):
                batch.remove(op.uids, keep_cache=op.keep_cache)
                batch.trim_cache(op.cache_entries)
            else:
                with self._channel.collective():
                    batch.prompt_logprobs(op.prompt)
        if message.step:
            batch.impose_tokens(message.tokens)
            with self._channel.collective():
                batch.step()

    def close(self) -> None:
        self._batch.close()
