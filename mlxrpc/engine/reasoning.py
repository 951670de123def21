"""Reasoning models: their thinking split from the answer.

Families mark thinking with a pair of markers (Qwen3, QwQ and the DeepSeek-R1
distills: ``<think>``/``</think>``; mlx-lm infers the pair from the vocabulary:
``tokenizer.think_start``/``think_end``). A request starts inside the block
when its rendered prompt leaves one open (DeepSeek-R1's template writes
``<think>\\n`` itself), and the model opens it otherwise. Text before the end
marker is reasoning; text after it is the answer, which is where response
grammars and tool-call extraction apply (see docs/api.md, "Reasoning models").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .prompts import template_source
from .stopping import StopStringMatcher


@dataclass(frozen=True)
class ReasoningFormat:
    start: str
    end: str
    # The markers' token ids (one id: a grammar names the marker by it).
    end_tokens: tuple[int, ...]
    start_tokens: tuple[int, ...] = ()


def reasoning_format(tokenizer: Any) -> ReasoningFormat | None:
    """The model's thinking markers, or None for a model that does not think."""
    if not getattr(tokenizer, "has_thinking", False):
        return _bracket_think(tokenizer)
    start, end = tokenizer.think_start, tokenizer.think_end
    if not start or not end:
        return None
    return ReasoningFormat(start, end, tuple(tokenizer.think_end_tokens or ()),
                           tuple(tokenizer.think_start_tokens or ()))


def starts_in_reasoning(fmt: ReasoningFormat, prompt_text: str) -> bool:
    """Whether the prompt leaves a thinking block open for the model to continue."""
    opened = prompt_text.rfind(fmt.start)
    return opened >= 0 and prompt_text.rfind(fmt.end) < opened


def thinking_enabled(fmt: ReasoningFormat | None, prompt_text: str, template_kwargs: dict[str, Any]) -> bool:
    """Whether the model will think first: the block is open, or the template
    was not told to skip it (mlx-lm turns thinking on by default)."""
    if fmt is None:
        return False
    if starts_in_reasoning(fmt, prompt_text):
        return True
    if template_kwargs.get("enable_thinking") is False or template_kwargs.get("thinking") is False:
        return False
    # A template that closed an empty block itself (thinking off) leaves the end last.
    return not prompt_text.rstrip().endswith(fmt.end)


class ReasoningSplitter:
    """Splits streamed text into (reasoning, answer), never leaking a partial marker."""

    def __init__(self, fmt: ReasoningFormat, in_reasoning: bool) -> None:
        self._fmt = fmt
        self.in_reasoning = in_reasoning
        self.done = False  # the thinking block has ended (at most one per answer)
        self._start = StopStringMatcher([fmt.start])
        self._end = StopStringMatcher([fmt.end])
        self._seen_answer = False
        self._after_block = False

    def feed(self, text: str) -> tuple[str, str]:
        reasoning = answer = ""
        while text:
            if self.in_reasoning:
                emitted, matched = self._end.feed(text)
                reasoning += emitted
                if matched is None:
                    break
                text, self.in_reasoning, self.done = self._end.remainder, False, True
                self._after_block = True
            elif not self.done and not self._seen_answer:
                emitted, matched = self._start.feed(text)
                if matched is not None:
                    answer += emitted
                    text, self.in_reasoning = self._start.remainder, True
                    continue
                if emitted.strip():
                    # An answer without thinking: no block follows, nothing to hold back.
                    self._seen_answer = True
                    emitted += self._start.flush()
                answer += emitted
                break
            else:
                if self._after_block:  # the newlines a template puts after the block
                    text = text.lstrip("\n")
                    self._after_block = not text
                answer += text
                break
        return reasoning, answer

    def flush(self) -> tuple[str, str]:
        """Held-back text once generation ended."""
        if self.in_reasoning:
            return self._end.flush(), ""
        return "", self._start.flush()


def _bracket_think(tokenizer: Any) -> ReasoningFormat | None:
    """Mistral's [THINK] … [/THINK] control tokens, which mlx-lm does not look for."""
    vocab = tokenizer.get_vocab()
    if "[THINK]" not in vocab or "[/THINK]" not in vocab or "[THINK]" not in template_source(tokenizer):
        return None
    return ReasoningFormat("[THINK]", "[/THINK]", (vocab["[/THINK]"],), (vocab["[THINK]"],))
