"""The engine core: the one thread that owns MLX.

It only admits prepared requests, steps each model's batch, removes rows and
hands chunks back to the callers' event loops. Commands arrive typed on a
queue. Two kinds of failure, kept apart:

- A request's own failure (its grammar, sampler, logits processors, output
  parsing, vision inputs) is caught by that request's guard: the request ends
  INTERNAL (or RESOURCE_EXHAUSTED for out-of-memory), its row leaves the batch,
  and every other request goes on.
- The core's own failure (a batch step that raises, a bug in this loop) is
  fatal: every admitted, queued and future request ends UNAVAILABLE at once,
  ``on_failure`` callbacks fire (health turns NOT_SERVING, the process exits
  for its supervisor), and nothing is left waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..distributed.channel import Channel
from ..metrics import Metrics
from ..settings import EngineSettings
from .batching import ModelBatch, prompt_logprobs
from .disk_cache import DiskPromptCache
from .errors import EngineError, ErrorCode
from .handle import RequestHandle, deliver
from .kv_budget import KVBudget, KVUsage, default_budget, reservation
from .output import OutputProcessor, token_logprob
from .params import ResolvedSampling, resolve_max_tokens
from .prepare import PreparedRequest
from .registry import LoadedModel
from .sampling import make_request_processors, min_tokens_processor
from .speculative import make_speculator
from .structured import GrammarFailure, GrammarProcessor
from .thinking_budget import budget_processor
from .types import ChatPrompt, Chunk, ModelKind, TokenLogprob
from .vision_batching import VisionBatch

log = logging.getLogger(__name__)

# Seconds between heartbeats of an idle rank 0 in a distributed world, so the
# other ranks can tell an idle world from a stalled one.
HEARTBEAT_SECONDS = 1.0

Batch = ModelBatch | VisionBatch


# ------------------------------------------------------------------ commands


@dataclass
class Admit:
    prepared: PreparedRequest
    handle: RequestHandle


@dataclass
class Abort:
    handle: RequestHandle


@dataclass
class Call:
    """Runs ``fn`` on the engine thread (model loads, unloads, embeddings)."""

    fn: Callable[[], Any]
    future: concurrent.futures.Future


@dataclass
class InjectFault:
    """Test hook: the core itself fails after ``after_tokens`` more tokens."""

    after_tokens: int


@dataclass
class Stop:
    pass


Command = Admit | Abort | Call | InjectFault | Stop


# ------------------------------------------------------------------ state


@dataclass
class _Row:
    """One admitted request on the engine thread."""

    handle: RequestHandle
    prepared: PreparedRequest
    output: OutputProcessor | None = None
    uid: int = -1
    # Set by the request's guard when its own code failed during a step.
    error: BaseException | None = None


@dataclass(frozen=True)
class EngineStats:
    waiting: int = 0
    running: int = 0
    in_flight: int = 0
    peak_running: int = 0
    steps: int = 0
    generated_tokens: int = 0


@dataclass
class _Counters:
    peak_running: int = 0
    steps: int = 0
    generated: int = 0
    fault_after: int | None = None
    batches: dict[str, Batch] = field(default_factory=dict)


class CoreFault(RuntimeError):
    """Raised by the InjectFault test hook."""


def classify(exc: BaseException) -> EngineError:
    """A request's failure as the code its client sees (details go to the log)."""
    if isinstance(exc, EngineError):
        return exc
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "out of memory" in text or "bad_alloc" in text:
        return EngineError(ErrorCode.RESOURCE_EXHAUSTED, "out of memory while generating this request",
                           reason="OUT_OF_MEMORY")
    if isinstance(exc, GrammarFailure):
        # A grammar the model cannot follow on this vocabulary is the request's fault.
        return EngineError(ErrorCode.INVALID_ARGUMENT, str(exc), reason="GRAMMAR_FAILED")
    return EngineError(ErrorCode.INTERNAL, "generation failed for this request")


class EngineCore:
    """The MLX thread and its command queue."""

    def __init__(self, settings: EngineSettings, metrics: Metrics,
                 on_death: Callable[[BaseException], None], channel: Channel | None = None) -> None:
        self.settings = settings
        # In a distributed world (rank 0): batches broadcast every change and
        # step in lockstep with the other ranks; any failure is fatal.
        self._channel = channel
        self.metrics = metrics
        self._on_death = on_death
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._post_lock = threading.Lock()
        self._dead = False
        self._thread = threading.Thread(target=self._run, name="mlxrpc-engine", daemon=True)
        self._rows: dict[RequestHandle, _Row] = {}
        self._by_uid: dict[tuple[str, int], _Row] = {}
        self._failed_rows: list[_Row] = []
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Any]]] = {}
        self._c = _Counters()
        self.stats = EngineStats()
        self.idle = threading.Event()
        self.idle.set()
        self.failure: BaseException | None = None
        self._heartbeat_after = HEARTBEAT_SECONDS if channel is not None else None
        # KV admission: reservations, and the requests waiting for room (oldest first).
        self.kv_budget = KVBudget(settings.kv_cache_bytes or default_budget())
        self._kv_waiting: deque[tuple[Admit, int]] = deque()
        self.kv_usage: dict[str, KVUsage] = {}
        self._kv_models: dict[str, LoadedModel] = {}
        metrics.watch_kv(lambda: (self.kv_budget.total, self.kv_usage))

    # ------------------------------------------------------------ any thread

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._dead

    def post(self, command: Command) -> None:
        """Queues a command; UNAVAILABLE once the core is dead (nothing waits forever)."""
        with self._post_lock:
            if self._dead:
                raise EngineError(ErrorCode.UNAVAILABLE, "the engine is not running")
            self._commands.put(command)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn`` on the engine thread and returns its result (blocking)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.post(Call(fn, future))
        return future.result()

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(EngineError):
            self.post(Stop())
        self._thread.join(timeout)

    def busy_models(self) -> set[str]:
        """Models with admitted requests (engine thread only)."""
        return {row.prepared.model.id for row in self._rows.values()}

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        try:
            while self._apply_commands():
                self._admit_waiting()
                for model_id, batch in list(self._c.batches.items()):
                    if len(batch):
                        self._step(model_id, batch)
                self._flush()
                self._publish_stats()
                if not self._rows:
                    self.idle.set()
            if self._channel is not None:
                from ..distributed.lockstep import stop_followers

                stop_followers(self._channel)
        except BaseException as exc:  # the core never dies silently
            log.critical("the engine core failed; failing every request", exc_info=exc)
            self._die(exc, EngineError(ErrorCode.UNAVAILABLE, "the engine failed; the server is restarting",
                                       reason="ENGINE_FAILED"))
            self._on_death(exc)
            return
        self._die(None, EngineError(ErrorCode.UNAVAILABLE, "the server is shutting down", reason="SHUTTING_DOWN"))

    def _die(self, exc: BaseException | None, error: EngineError) -> None:
        """Ends every admitted and queued request and every waiting call with ``error``."""
        with self._post_lock:
            self._dead = True
        self.failure = exc
        for row in list(self._rows.values()):
            self._send(row.handle, error)
        for command, _ in self._kv_waiting:
            self._send(command.handle, error)
        self._kv_waiting.clear()
        self._rows.clear()
        self._by_uid.clear()
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            if isinstance(command, Admit):
                self._send(command.handle, error)
            elif isinstance(command, Call):
                command.future.set_exception(error)
        for batch in self._c.batches.values():
            with contextlib.suppress(Exception):
                batch.close()
        self._c.batches.clear()
        self._flush()
        self._publish_stats()
        self.idle.set()

    def _apply_commands(self) -> bool:
        """Applies queued commands, blocking for the first one only while idle; False on stop."""
        block = not any(len(b) for b in self._c.batches.values()) and not self._kv_waiting
        while True:
            try:
                command = self._commands.get(block=block, timeout=self._heartbeat_after if block else None)
            except queue.Empty:
                if block and self._channel is not None:  # idle: tell the other ranks we are alive
                    from ..distributed.lockstep import heartbeat

                    heartbeat(self._channel)
                return True
            block = False
            if isinstance(command, Stop):
                return False
            if isinstance(command, Admit):
                self._admit(command.prepared, command.handle)
            elif isinstance(command, Abort):
                self._remove_row(command.handle)
                self._kv_waiting = deque(w for w in self._kv_waiting if w[0].handle is not command.handle)
            elif isinstance(command, Call):
                try:
                    command.future.set_result(command.fn())
                except BaseException as exc:  # the caller gets it
                    command.future.set_exception(exc)
            elif isinstance(command, InjectFault):
                self._c.fault_after = command.after_tokens

    def _batch_for(self, model: LoadedModel) -> Batch:
        self._kv_models[model.id] = model
        batch = self._c.batches.get(model.id)
        if batch is None:
            batch = self._c.batches[model.id] = new_batch(model, self.settings, self.settings.max_num_seqs,
                                                          self._channel)
            if isinstance(batch, ModelBatch) and batch.speculator is not None:
                batch.speculator.on_verify = functools.partial(self._count_drafts, model.id)
        return batch

    def _count_drafts(self, model_id: str, proposed: int, accepted: int) -> None:
        self.metrics.draft_tokens.labels(model_id, "accepted").inc(accepted)
        self.metrics.draft_tokens.labels(model_id, "rejected").inc(proposed - accepted)

    def _admit(self, p: PreparedRequest, handle: RequestHandle) -> None:
        """Starts the request if its KV reservation fits the budget, else queues it."""
        if handle.finished:  # cancelled while queued
            return
        need = reservation(p.model.kv_token_bytes, p.model.kv, len(p.prompt_ids), p.max_tokens,
                           self.settings.prefill_step_size)
        try:
            self.kv_budget.check(need, len(p.prompt_ids), p.max_tokens)
        except EngineError as exc:
            self._send(handle, exc)
            return
        if self._kv_waiting or not self.kv_budget.try_reserve(handle, p.model.id, need):
            self._kv_waiting.append((Admit(p, handle), need))
            return
        self._start(p, handle)

    def _admit_waiting(self) -> None:
        """Starts waiting requests, oldest first, while their reservations fit."""
        while self._kv_waiting:
            command, need = self._kv_waiting[0]
            if not command.handle.finished and not self.kv_budget.try_reserve(
                    command.handle, command.prepared.model.id, need):
                return
            self._kv_waiting.popleft()
            if not command.handle.finished:
                self._start(command.prepared, command.handle)

    def _start(self, p: PreparedRequest, handle: RequestHandle) -> None:
        row = _Row(handle=handle, prepared=p)
        try:
            model_inputs = self._vision_inputs(p) if p.images is not None else None
            batch = self._batch_for(p.model)
            if p.request.prompt_logprobs:
                p.prompt_logprobs = self._prompt_logprobs(p, batch)
            processors = make_request_processors(
                logit_bias=p.sampling.logit_bias,
                repetition_penalty=p.sampling.repetition_penalty,
                presence_penalty=p.sampling.presence_penalty,
                frequency_penalty=p.sampling.frequency_penalty,
            )
            if p.request.stopping.min_tokens and p.stop_on:
                processors.append(min_tokens_processor(p.stop_on, p.request.stopping.min_tokens))
            if (budget := budget_processor(p)) is not None:
                processors.append(budget)
            if p.grammar is not None:
                processors.append(GrammarProcessor(p.grammar, p.model.vocab_size))
            row.uid, cached = batch.insert(
                p.prompt_ids, max_tokens=p.max_tokens, sampling=p.sampling,
                processors=[self._guard(row, proc) for proc in processors],
                stop_token_ids=p.stop_on, vocab_size=p.model.vocab_size, model_inputs=model_inputs,
                guard=lambda exc, r=row: self._record_failure(r, exc),
                # Grammars and min_tokens keep state per call: no drafts for them.
                speculative=p.grammar is None and not p.request.stopping.min_tokens,
            )
            row.output = OutputProcessor(p, cached, self.settings.stream_interval, self.metrics)
        except Exception as exc:
            log.exception("admitting %s failed", handle.request_id)
            self.kv_budget.release(handle)
            self._send(handle, classify(exc))
            if row.uid >= 0:
                self._c.batches[p.model.id].remove([row.uid])
            return
        if batch.caching:
            self.metrics.prefix_cache.labels("hit" if cached else "miss").inc()
        self._rows[handle] = row
        self._by_uid[(p.model.id, row.uid)] = row
        self.idle.clear()

    @staticmethod
    def _prompt_logprobs(p: PreparedRequest, batch: Batch) -> list[TokenLogprob]:
        """Each prompt token after the first: its logprob, alternatives and text offset."""
        decode, ids = p.model.tokenizer.decode, p.prompt_ids
        rows = batch.prompt_logprobs(ids) if isinstance(batch, ModelBatch) else prompt_logprobs(p.model.model, ids)
        out = []
        for i, row in enumerate(rows, start=1):
            entry = token_logprob(p.model.token_bytes, ids[i], row, p.request.top_logprobs)
            entry.text_offset = len(decode(ids[:i]))
            out.append(entry)
        return out

    def _vision_inputs(self, p: PreparedRequest) -> dict[str, Any]:
        """Tokenizes a vision prompt with its images (mlx-vlm's processor uses MLX)."""
        from .vision import vision_inputs

        assert isinstance(p.request.prompt, ChatPrompt) and p.images is not None
        p.prompt_ids, p.prompt_text, inputs = vision_inputs(
            p.model.processor, p.model.tokenizer, p.request.prompt, p.images)
        p.max_tokens, p.context_capped = resolve_max_tokens(
            p.max_tokens, self.settings, len(p.prompt_ids), p.model.context_length)
        return inputs

    def _guard(self, row: _Row, processor: Callable) -> Callable:
        """A logits processor that records its failure on the row instead of raising.

        Processors run inside mlx-lm's batch step: an exception there would
        abort the step for every row. The failed row is removed after the step.
        """

        def guarded(tokens: Any, logits: Any) -> Any:
            if row.error is not None:
                return logits
            try:
                return processor(tokens, logits)
            except Exception as exc:
                self._record_failure(row, exc)
                return logits

        return guarded

    def _record_failure(self, row: _Row, exc: BaseException) -> None:
        if row.error is None:
            row.error = exc
            self._failed_rows.append(row)

    def _step(self, model_id: str, batch: Batch) -> None:
        try:
            prefilled, tokens = batch.step()
        except Exception as exc:
            if classify(exc).code is not ErrorCode.RESOURCE_EXHAUSTED or self._channel is not None:
                raise  # a batch that fails as a whole (or on one rank) is the core's own failure
            log.error("out of memory in a step of %s: failing its requests", model_id, exc_info=exc)
            self.fail_model(model_id, classify(exc))
            return
        c = self._c
        c.steps += 1
        c.peak_running = max(c.peak_running, batch.running)
        now = time.perf_counter()
        if isinstance(batch, ModelBatch):  # sequences that waited for a shared prefix
            for uid, cached in batch.forked():
                row = self._by_uid.get((model_id, uid))
                if row is not None and row.output is not None:
                    row.output.cached_tokens = cached
        for uid in prefilled:
            row = self._by_uid.get((model_id, uid))
            if row is not None and row.output is not None and row.output.prefill_started is None:
                row.output.prefill_started = now
        finished: list[int] = []
        for token in tokens:
            row = self._by_uid.get((model_id, token.uid))
            if row is None or row.error is not None:
                continue
            try:
                assert row.output is not None
                chunk, done = row.output.on_token(token.token, token.logprobs, token.finish_reason, now)
            except Exception as exc:
                self._record_failure(row, exc)
                continue
            if chunk is not None:
                self._send(row.handle, chunk)
            if done:
                finished.append(token.uid)
                self._forget(row)
        c.generated += len(tokens)
        batch.remove(finished, keep_cache=True)  # sequences that stopped on a stop string
        self._fail_rows()
        if c.fault_after is not None:
            c.fault_after -= len(tokens)
            if c.fault_after <= 0:
                raise CoreFault("injected engine core fault")

    def _fail_rows(self) -> None:
        """Ends the requests whose own code failed during this step."""
        failed, self._failed_rows = self._failed_rows, []
        for row in failed:
            error = classify(row.error) if row.error is not None else classify(RuntimeError())
            detail = getattr(row.error, "detail", "") or repr(row.error)
            log.error("request %s failed: %s", row.handle.request_id, detail[:2000],
                      exc_info=row.error if not isinstance(row.error, GrammarFailure) else None)
            self._send(row.handle, error)
            self._remove_row(row.handle)

    def _forget(self, row: _Row) -> None:
        self.kv_budget.release(row.handle)
        self._rows.pop(row.handle, None)
        self._by_uid.pop((row.prepared.model.id, row.uid), None)

    def _remove_row(self, handle: RequestHandle) -> None:
        row = self._rows.get(handle)
        if row is None:
            return
        self._forget(row)
        batch = self._c.batches.get(row.prepared.model.id)
        if batch is not None:
            batch.remove([row.uid])

    def fail_model(self, model_id: str, error: EngineError) -> None:
        """Ends every request on ``model_id`` and drops its batch (engine thread)."""
        for row in [r for r in self._rows.values() if r.prepared.model.id == model_id]:
            self._send(row.handle, error)
            self._forget(row)
        batch = self._c.batches.pop(model_id, None)
        if batch is not None:
            batch.close()

    def _send(self, handle: RequestHandle, item: Chunk | EngineError) -> None:
        self._outbox.setdefault(handle.loop, []).append((handle, item))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody listens
                loop.call_soon_threadsafe(deliver, items)

    def _publish_stats(self) -> None:
        """A snapshot other threads may read (they never touch the batches)."""
        batches = list(self._c.batches.values())
        running = sum(b.running for b in batches)
        self._publish_kv()
        self.stats = EngineStats(
            waiting=sum(len(b) for b in batches) - running + len(self._kv_waiting),
            running=running,
            peak_running=self._c.peak_running,
            steps=self._c.steps,
            generated_tokens=self._c.generated,
        )

    def _publish_kv(self) -> None:
        """Per-model KV bytes (reserved, in use, cached) for /metrics and ModelInfo."""
        budget = self.kv_budget
        waiting: dict[str, int] = {}
        for command, _ in self._kv_waiting:
            waiting[command.prepared.model.id] = waiting.get(command.prepared.model.id, 0) + 1
        usage = {}
        for model_id in {*self._kv_models, *waiting, *(m for m, _ in budget.held())}:
            batch = self._c.batches.get(model_id)
            usage[model_id] = KVUsage(
                budget=budget.total, reserved=budget.reserved_by(model_id),
                in_use=batch.kv_bytes if isinstance(batch, ModelBatch) else 0,
                cached=batch.cache_bytes if isinstance(batch, ModelBatch) else 0,
                waiting=waiting.get(model_id, 0))
            if model_id in self._kv_models:
                self._kv_models[model_id].kv_usage = usage[model_id]
        self.kv_usage = usage

    def reset_peak(self) -> None:
        self._c.peak_running = 0


def new_batch(model: LoadedModel, settings: EngineSettings, max_num_seqs: int,
              channel: Channel | None = None) -> Batch:
    s = settings
    if channel is not None:
        from ..distributed.lockstep import LeaderBatch

        return LeaderBatch(model.model, channel, max_num_seqs=max_num_seqs,
                           prefill_batch_size=s.prefill_batch_size, prefill_step_size=s.prefill_step_size,
                           prompt_cache_size=s.prompt_cache_size, prompt_cache_bytes=s.prompt_cache_bytes)
    if model.kind is ModelKind.VISION:
        return VisionBatch(model.model, model.processor, max_num_seqs=max_num_seqs,
                           prefill_batch_size=s.prefill_batch_size,
                           prefill_step_size=s.prefill_step_size)
    return ModelBatch(
        model.model,
        max_num_seqs=max_num_seqs,
        prefill_batch_size=s.prefill_batch_size,
        prefill_step_size=s.prefill_step_size,
        prompt_cache_size=s.prompt_cache_size,
        prompt_cache_bytes=s.prompt_cache_bytes,
        kv=model.kv,
        disk=DiskPromptCache(Path(s.prompt_cache_dir).expanduser(), model.identity, s.prompt_cache_disk_bytes)
        if s.prompt_cache_dir and model.identity else None,
        share_prefixes=s.use_paged_cache,
        speculator=make_speculator(model.speculation, model.draft),
    )


def warm_up(model: LoadedModel, settings: EngineSettings) -> None:
    """Runs one short chat request's path at load (the template compiled, a prompt of a
    request's length prefilled, a few decode steps, the detokenizer), so the first
    request does not pay for that setup."""
    from .prompts import tokenize_prompt
    from .vision import vision_inputs

    if model.kind is ModelKind.EMBEDDING:  # no generation; its loader ran one forward pass
        return
    batch = new_batch(model, settings, max_num_seqs=1)
    hello = ChatPrompt([{"role": "user", "content": "Say hello to the new server, in one short sentence."}])
    ids, inputs = [0, 1], None
    if model.kind is ModelKind.VISION:
        ids, _, inputs = vision_inputs(model.processor, model.tokenizer, ChatPrompt(
            [{"role": "user", "content": "hi"}]), [])
    elif getattr(model.tokenizer, "has_chat_template", False):
        with contextlib.suppress(EngineError):  # a template that needs more than one user turn
            ids, _ = tokenize_prompt(model.tokenizer, hello, model.vocab_size)
    greedy = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)
    batch.insert(ids, max_tokens=4, sampling=greedy, processors=[], stop_token_ids=[],
                 vocab_size=model.vocab_size, model_inputs=inputs)
    detokenizer = getattr(model.tokenizer, "detokenizer", None)
    while len(batch):
        for token in batch.step()[1]:
            if detokenizer is not None:
                detokenizer.add_token(token.token)
    if detokenizer is not None:
        detokenizer.finalize()
    batch.close()
