"""Request side, after each step: one request's tokens turned into output chunks.

Detokenizing, stop strings, tool-call extraction, logprobs and the final
usage/timings happen here, per request. The core calls ``on_token`` inside
that request's guard, so whatever the model's output contains, a failure here
ends this request alone. (It runs on the engine thread: on 2 cores a hand-off
to another thread costs more than the work; see benchmarks/RESULTS.md.)
"""

from __future__ import annotations

from typing import Any

from ..metrics import Metrics
from .detokenizer import IncrementalDetokenizer
from .prepare import PreparedRequest
from .reasoning import ReasoningSplitter
from .stopping import StopStringMatcher
from .token_bytes import text_of
from .tool_deltas import ToolDeltaStreamer
from .tools import ToolCallExtractor
from .types import Chunk, Finish, InputDetails, StopReason, Timings, TokenLogprob, Usage


class OutputProcessor:
    """Turns one request's generated tokens into chunks for its handle."""

    def __init__(self, prepared: PreparedRequest, cached_tokens: int, stream_interval: int,
                 metrics: Metrics) -> None:
        self.prepared = prepared
        self.cached_tokens = cached_tokens
        self._interval = stream_interval
        self._metrics = metrics
        request, model = prepared.request, prepared.model
        self._detokenizer = IncrementalDetokenizer(model.tokenizer)
        self._matcher = StopStringMatcher(request.stopping.stop)
        self._tools = None
        self._deltas: ToolDeltaStreamer | None = None
        markers: set[int] = set()
        if prepared.tool_format is not None:
            fmt = prepared.tool_format
            self._tools = ToolCallExtractor(fmt, request.prompt.tools or [],  # type: ignore[union-attr]
                                            request.max_tool_calls)
            self._deltas = ToolDeltaStreamer(fmt)
            markers.update(fmt.start_tokens, fmt.end_tokens)
        self._reasoning = None
        if prepared.reasoning is not None:
            self._reasoning = ReasoningSplitter(prepared.reasoning, prepared.starts_in_reasoning)
            markers.update(prepared.reasoning.end_tokens)
        # Special tokens stay out of the text unless asked for; markers the
        # parsers need (Llama's <|python_tag|>) go through to them.
        self._hidden = model.special_ids - markers if request.skip_special_tokens else frozenset()
        self._pending = Chunk()
        self._pending_tokens = 0
        if request.echo_input:
            self._pending.input = InputDetails(token_ids=list(prepared.prompt_ids), text=prepared.prompt_text,
                                               logprobs=prepared.prompt_logprobs)
        self.prefill_started: float | None = None
        self._first_token_at: float | None = None
        self._last_token_at: float | None = None
        self.generated = 0
        self.reasoning_tokens = 0
        self._generated_ids: list[int] = []

    def on_token(self, token: int, logprobs: Any, finish_reason: str | None, now: float) -> tuple[Chunk | None, bool]:
        """Folds in one token: (a chunk to send now or None, whether the request finished)."""
        p, request = self.prepared, self.prepared.request
        if self._first_token_at is None:
            self._first_token_at = now
        elif self._last_token_at is not None:
            self._metrics.itl.labels(p.model.id).observe(now - self._last_token_at)
        self._last_token_at = now
        self.generated += 1
        if self._reasoning is not None and self._reasoning.in_reasoning:
            self.reasoning_tokens += 1
        chunk = self._pending
        chunk.token_ids.append(token)
        self._pending_tokens += 1
        if request.logprobs:
            entry = self._logprob(token, logprobs)
            # Offsets from decoding the whole prefix: a streaming detokenizer's
            # per-token pieces drift (SentencePiece drops a leading space).
            entry.text_offset = len(p.model.tokenizer.decode(
                self._generated_ids, skip_special_tokens=request.skip_special_tokens))
            chunk.logprobs.append(entry)
        self._generated_ids.append(token)
        reason: StopReason | None = None
        stop_sequence = ""
        if finish_reason == "stop":
            reason = StopReason.STOP_TOKEN if token in p.stop_token_ids else StopReason.EOS
        else:
            if token not in self._hidden:
                self._detokenizer.add_token(token)
                text, matched = self._matcher.feed(self._detokenizer.last_segment)
                self._emit(chunk, text)
                if matched is not None:
                    reason, stop_sequence = StopReason.STOP_SEQUENCE, matched
            if reason is None and finish_reason == "length":
                reason = StopReason.CONTEXT_LENGTH if p.context_capped else StopReason.LENGTH
        if reason is not None:
            self._finish(chunk, reason, stop_sequence, token, now)
        if reason is not None or self._pending_tokens >= self._interval:
            self._pending = Chunk()
            self._pending_tokens = 0
            return chunk, reason is not None
        return None, False

    def _emit(self, chunk: Chunk, text: str) -> None:
        """Routes generated text: thinking to ``reasoning``, the answer past tool-call markup."""
        if not text:
            return
        if self._reasoning is not None:
            thought, text = self._reasoning.feed(text)
            chunk.reasoning += thought
        self._answer(chunk, text)

    def _answer(self, chunk: Chunk, text: str) -> None:
        """Answer text, less any tool-call markup (held for parsing at the end)."""
        if text:
            chunk.text += self._tools.feed(text) if self._tools is not None else text
        if self._deltas is not None and self._tools is not None:
            chunk.tool_call_deltas += self._deltas.feed(self._tools.captured)

    def _finish(self, chunk: Chunk, reason: StopReason, stop_sequence: str, token: int, now: float) -> None:
        if reason is not StopReason.STOP_SEQUENCE:
            self._detokenizer.finalize()
            text, matched = self._matcher.feed(self._detokenizer.last_segment)
            self._emit(chunk, text)
            if matched is not None:
                reason, stop_sequence = StopReason.STOP_SEQUENCE, matched
            else:
                self._emit(chunk, self._matcher.flush())
        if stop_sequence and self.prepared.request.stopping.include_stop_str_in_output:
            self._emit(chunk, stop_sequence)
        if self._reasoning is not None:
            thought, answer = self._reasoning.flush()
            chunk.reasoning += thought
            self._answer(chunk, answer)
        tool_calls = []
        if self._tools is not None:
            held = self._tools.flush()
            tool_calls, unparsed = self._tools.calls()
            cut = reason in (StopReason.LENGTH, StopReason.CONTEXT_LENGTH)
            if cut:
                # A call cut off by the budget: what was written of it, its
                # markup kept out of content; the finish reason stays.
                held, unparsed = "", ""
            tool_calls, deltas = self._deltas.finish(self._tools.captured, tool_calls, cut)  # type: ignore[union-attr]
            chunk.tool_call_deltas += deltas
            chunk.text += held
            chunk.text += unparsed
            if tool_calls and not cut:
                reason = StopReason.TOOL_CALLS
        chunk.finish = self._finish_record(reason, stop_sequence, token, now)
        chunk.finish.tool_calls = tool_calls

    def _finish_record(self, reason: StopReason, stop_sequence: str, token: int, now: float) -> Finish:
        p = self.prepared
        first = self._first_token_at or now
        decode_time = now - first
        m, model = self._metrics, p.model.id
        m.ttft.labels(model).observe(first - p.arrival)
        m.queue_time.labels(model).observe((self.prefill_started or first) - p.arrival)
        m.prompt_tokens.labels(model).inc(len(p.prompt_ids))
        m.cached_tokens.labels(model).inc(self.cached_tokens)
        m.generation_tokens.labels(model).inc(self.generated)
        return Finish(
            reason=reason,
            stop_sequence=stop_sequence,
            stop_token_id=token if reason in (StopReason.EOS, StopReason.STOP_TOKEN) else None,
            usage=Usage(
                prompt_tokens=len(p.prompt_ids),
                completion_tokens=self.generated,
                cached_tokens=self.cached_tokens,
                reasoning_tokens=self.reasoning_tokens,
            ),
            timings=Timings(
                queue_seconds=(self.prefill_started or first) - p.arrival,
                time_to_first_token_seconds=first - p.arrival,
                total_seconds=now - p.arrival,
                decode_tokens_per_second=(self.generated - 1) / decode_time if decode_time > 0 else 0.0,
            ),
            seed=p.sampling.seed,
        )

    def _logprob(self, token: int, lp: Any) -> TokenLogprob:
        return token_logprob(self.prepared.model.token_bytes, token, lp, self.prepared.request.top_logprobs)


def token_logprob(token_bytes: Any, token: int, lp: Any, top_n: int) -> TokenLogprob:
    """One position's logprob and its ``top_n`` alternatives, from a row of log-probabilities."""
    import mlx.core as mx

    top: list[tuple[int, str, float]] = []
    top_bytes: list[bytes] = []
    if top_n:
        ids = mx.argpartition(-lp, kth=top_n - 1)[:top_n]
        values = lp[ids]
        pairs = sorted(zip(ids.tolist(), values.tolist(), strict=True), key=lambda p: -p[1])
        top_bytes = [token_bytes(i) for i, _ in pairs]
        top = [(i, text_of(b), v) for (i, v), b in zip(pairs, top_bytes, strict=True)]
    own = token_bytes(token)
    return TokenLogprob(token, text_of(own), lp[token].item(), top, own, top_bytes)
