"""Draft proposals for speculative decoding: prompt lookup and a draft model.

Both are deterministic functions of a row's tokens (the draft model proposes
its argmax), which is what makes ``speculative.py``'s acceptance rule exact.
"""

from __future__ import annotations

from typing import Any, Protocol

import mlx.core as mx
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import invalid


class Proposer(Protocol):
    def propose(self, uid: int, context: list[int], k: int) -> list[int]:
        """Up to ``k`` tokens likely to follow ``context`` (the row's tokens so far)."""

    def forget(self, uid: int) -> None:
        """The row left the batch."""


def propose_ngram(context: np.ndarray, ngram_size: int, k: int) -> list[int]:
    """Prompt lookup: the ``k`` tokens that followed the latest earlier
    occurrence of the context's last n tokens (longest n first, n ≥ 1).

    The latest occurrence followed by ``k`` whole tokens wins over a later one
    the context's end cuts short: in a loop, the latest match is one period
    back and would propose only the rest of that period."""
    length = len(context)
    for n in range(min(ngram_size, length - 1), 0, -1):
        tail = context[length - n:]
        windows = sliding_window_view(context[: length - 1], n)
        hits = np.flatnonzero((windows == tail).all(axis=1))
        if hits.size:
            whole = hits[hits + n + k <= length]
            start = int(whole[-1] if whole.size else hits[-1]) + n
            return context[start:start + k].tolist()
    return []


class NgramProposer:
    def __init__(self, ngram_size: int) -> None:
        self.ngram_size = ngram_size

    def propose(self, uid: int, context: list[int], k: int) -> list[int]:
        return propose_ngram(np.asarray(context, dtype=np.int64), self.ngram_size, k)

    def forget(self, uid: int) -> None:
        pass


class DraftModelProposer:
    """Greedy proposals of a small model sharing the target's tokenizer.

    Each row keeps its own single-sequence KV cache of the draft and the
    tokens in it; a proposal trims that cache to the longest prefix it shares
    with the row's tokens (rejected drafts fall away there), feeds the rest,
    then decodes ``k`` tokens. Rows are drafted one after another: a draft is
    small and speculation runs only while few rows decode.
    """

    def __init__(self, model: Any, prefill_step: int = 512) -> None:
        self.model = model
        self.prefill_step = prefill_step
        self._rows: dict[int, tuple[list[Any], list[int]]] = {}

    def propose(self, uid: int, context: list[int], k: int) -> list[int]:
        from mlx_lm.models.cache import make_prompt_cache

        cache, fed = self._rows.get(uid) or (make_prompt_cache(self.model), [])
        common = 0
        for a, b in zip(fed, context, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(context) - 1)  # feed at least one token for logits
        if len(fed) > common:
            for c in cache:
                c.trim(len(fed) - common)
        inputs = mx.array(context[common:])[None]
        while inputs.shape[1] > self.prefill_step:  # a new row's prompt: bounded chunks
            self.model(inputs[:, : self.prefill_step], cache=cache)
            mx.eval([c.state for c in cache])
            inputs = inputs[:, self.prefill_step:]
        drafts: list[int] = []
        for _ in range(k):
            logits = self.model(inputs, cache=cache)[:, -1, :]
            token = mx.argmax(logits, axis=-1)
            drafts.append(int(token.item()))
            inputs = token[None]
        self._rows[uid] = (cache, context + drafts[:-1])
        return drafts

    def forget(self, uid: int) -> None:
        self._rows.pop(uid, None)


def load_draft(path: str, target_tokenizer: Any) -> Any:
    """The draft model at ``path``; INVALID_ARGUMENT unless its tokenizer is the target's."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(path)
    if tokenizer.get_vocab() != target_tokenizer.get_vocab():
        raise invalid("draft_model", f"--draft-model {path}: its tokenizer differs from the target's "
                      "(speculative decoding needs the same vocabulary, token for token)")
    from mlx_lm.models.cache import make_prompt_cache

    if not all(c.is_trimmable() for c in make_prompt_cache(model)):
        raise invalid("draft_model", f"--draft-model {path}: its KV cache cannot be rolled back")
    return model
