"""A thinking budget: a reasoning model's thinking block closed when it is spent.

Anthropic's ``thinking.budget_tokens`` and a budget implied by
``reasoning_effort`` bound how long a model thinks before it answers. When a
request's thinking has used its budget, this logits processor forces the
family's end-of-thinking marker (``</think>``; each of its tokens in turn
where it spans several), so the answer (and any grammar waiting for the end
of thinking) follows within the same ``max_tokens``.
"""

from __future__ import annotations

from typing import Any

from .prepare import PreparedRequest
from .types import ChatPrompt

# reasoning_effort as a thinking budget, in tokens (docs/api.md, "Reasoning models").
EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}


def thinking_budget(p: PreparedRequest) -> int:
    """The request's budget: its own, else its reasoning effort's; 0 for none."""
    if p.request.thinking_budget:
        return p.request.thinking_budget
    prompt = p.request.prompt
    return EFFORT_BUDGETS.get(prompt.reasoning_effort, 0) if isinstance(prompt, ChatPrompt) else 0


class ThinkingBudgetProcessor:
    """Counts thinking tokens; once ``budget`` are spent, writes the end marker.

    mlx-lm calls it with the token context (its last entry the token just
    sampled; on the first call, the last prompt token) and logits (1, vocab).
    """

    def __init__(self, budget: int, start_tokens: tuple[int, ...], end_tokens: tuple[int, ...],
                 in_thinking: bool) -> None:
        self._budget = budget
        self._start = list(start_tokens)
        self._end = list(end_tokens)
        self._thinking = in_thinking
        self._done = False  # one block per answer
        self._spent = 0
        self._forcing = 0  # how many end-marker tokens were forced so far
        self._calls = 0
        self._recent: list[int] = []

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        self._calls += 1
        if self._done:
            return logits
        if self._calls > 1:
            self._see(int(tokens[-1].item()))
            if self._done:
                return logits
        if not self._thinking or (self._spent < self._budget and not self._forcing):
            return logits
        if self._forcing >= len(self._end):  # the marker is written
            self._done = True
            return logits
        forced = self._end[self._forcing]
        self._forcing += 1
        only = mx.arange(logits.shape[-1]) == forced
        return mx.where(only, mx.zeros_like(logits), mx.full(logits.shape, -mx.inf, dtype=logits.dtype))

    def _see(self, token: int) -> None:
        """Follows the block: its opening, its tokens, its end."""
        self._recent = (self._recent + [token])[-max(len(self._start), len(self._end), 1):]
        if not self._thinking:
            if self._start and self._recent[-len(self._start):] == self._start:
                self._thinking = True
            return
        if self._end and self._recent[-len(self._end):] == self._end:
            self._thinking, self._done = False, True
            return
        if not self._forcing:
            self._spent += 1


def budget_processor(p: PreparedRequest) -> ThinkingBudgetProcessor | None:
    """The request's thinking-budget processor; None when it does not think or has no budget."""
    fmt = p.reasoning
    budget = thinking_budget(p)
    if fmt is None or not budget or not fmt.end_tokens:
        return None
    start = tuple(p.model.tokenizer.encode(fmt.start, add_special_tokens=False))
    return ThinkingBudgetProcessor(budget, start, fmt.end_tokens, p.starts_in_reasoning)
