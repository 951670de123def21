"""The lockstep replay in one process: a follower batch fed rank 0's messages ends
with exactly rank 0's sequences, although it samples nothing itself.

No distributed world is needed: a loopback channel hands each message of the
leader's batch straight to a follower's batch over the same (unsharded) model.
Rank 0 samples at temperature with per-request seeds and penalties, so the
follower's own greedy choices would differ; its prefix cache, bounded by
bytes on rank 0 only, must still hold the same entries in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlxrpc.distributed.lockstep import FollowerBatch, LeaderBatch, Message
from mlxrpc.engine.params import ResolvedSampling
from mlxrpc.engine.sampling import make_request_processors


class Loopback:
    """A channel whose 'other ranks' are one follower batch in this process."""

    def __init__(self) -> None:
        self.world = SimpleNamespace(leader=True)
        self.follower: FollowerBatch | None = None
        self.messages: list[Message] = []

    @contextmanager
    def collective(self) -> Iterator[None]:
        yield

    def exchange(self, message: Any = None) -> Any:
        self.messages.append(message)
        if self.follower is not None and message is not None:
            self.follower.apply(message)
        return message


def _entries(batch: Any) -> list[list[int]]:
    """The prefix cache's token sequences, least recently used first."""
    cache = batch._prompt_cache
    return [list(tokens) for lru in cache._lru._lrus.values() for _, tokens in lru]


@pytest.fixture(scope="module")
def model(model_dir: Path) -> Any:
    import mlx_lm

    return mlx_lm.load(str(model_dir))[0]


def test_a_follower_replays_rank_0_exactly(model: Any) -> None:
    sizes = {"max_num_seqs": 4, "prefill_batch_size": 2, "prefill_step_size": 64, "prompt_cache_size": 16}
    channel = Loopback()
    # Rank 0's cache holds about three short sequences; the follower's is unbounded in bytes.
    leader = LeaderBatch(model, channel, prompt_cache_bytes=60_000, **sizes)  # type: ignore[arg-type]
    follower = FollowerBatch(model, 512, channel, prompt_cache_bytes=60_000, **sizes)  # type: ignore[arg-type]
    channel.follower = follower
    generated: dict[int, list[int]] = {}
    prompts = [[1 + i, 20, 30 + i, 40] * (1 + i % 3) for i in range(6)]
    prompts += [prompts[0] + [7, 8], prompts[1]]  # prefix-cache hits on rank 0, hence on the follower
    pending = list(enumerate(prompts))
    steps = 0
    while pending or len(leader):
        if pending and len(leader) < 3:
            i, prompt = pending.pop(0)
            sampling = ResolvedSampling(0.9, 0.95, 0, 0.0, 1.3, 0.0, 0.0, {}, seed=100 + i)
            processors = make_request_processors(logit_bias={5: 3.0}, repetition_penalty=1.3,
                                                 presence_penalty=None, frequency_penalty=None)
            uid, _ = leader.insert(prompt, max_tokens=6 + i, sampling=sampling, processors=processors,
                                   stop_token_ids=[], vocab_size=512)
            generated[uid] = []
        _, tokens = leader.step()
        steps += 1
        for t in tokens:
            generated[t.uid].append(t.token)
        if steps == 3:  # an abort in flight
            victim = next(uid for uid in generated if generated[uid] and uid in leader._live)
            leader.remove([victim])
    assert any(m is not None and any(type(op).__name__ == "Insert" and op.cached for op in m.ops)
               for m in channel.messages)  # some admissions reused the prefix cache
    assert leader.cache_entries < len(prompts)  # rank 0 evicted by bytes
    # Rank 0's evictions after its last step reach the follower with the next message.
    follower._batch.trim_cache(leader.cache_entries)
    assert _entries(follower._batch) == _entries(leader)
    assert len(follower._batch) == len(leader) == 0
    # The follower decoded rank 0's tokens: its cached sequences end with them.
    sampled = {tuple(v) for v in generated.values() if v}
    assert any(tuple(entry[-len(s):]) == s for entry in _entries(leader) for s in sampled)
    leader.close()
    follower.close()
