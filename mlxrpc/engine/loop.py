"""The engine: one thread owns MLX and runs continuous batching for all models.

asyncio callers never touch MLX. They ``submit`` a request (validated and
tokenized in the caller's thread) and get a ``RequestHandle``; the engine
thread admits it into the model's running batch between decode steps and hands
events back through ``loop.call_soon_threadsafe``, one call per step per loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics import Metrics
from ..settings import Settings
from .batching import ModelBatch, StepToken
from .constraints import plan_constraints
from .errors import EngineError, ErrorCode, invalid
from .handle import RequestHandle, deliver
from .params import (
    ResolvedSampling,
    resolve_max_tokens,
    resolve_sampling,
    validate_logprobs,
    validate_stopping,
)
from .prompts import render_chat, tokenize_prompt
from .registry import (
    LoadedModel,
    ModelRegistry,
    ModelSource,
    checkpoint_bytes,
    load_model,
    local_path,
)
from .sampling import make_request_processors
from .stopping import StopStringMatcher
from .structured import GrammarProcessor
from .tools import ToolCallExtractor
from .types import (
    ChatPrompt,
    Chunk,
    Finish,
    GenerationRequest,
    InputDetails,
    ModelDescription,
    ModelKind,
    StopReason,
    Timings,
    TokenLogprob,
    Usage,
)
from .vision import decode_images, vision_inputs
from .vision_batching import VisionBatch

log = logging.getLogger(__name__)

_request_counter = itertools.count(1)


@dataclass
class _Active:
    """Engine-thread state of one admitted request."""

    handle: RequestHandle
    request: GenerationRequest
    model: LoadedModel
    prompt_ids: list[int]
    prompt_text: str
    sampling: ResolvedSampling
    max_tokens: int
    arrival: float
    stop_token_ids: set[int]
    stop_on: list[int]
    grammar: str | None = None
    tool_format: tuple | None = None
    # A vision prompt's decoded images; the engine thread turns them into
    # model inputs (pixel values, grid sizes).
    images: list[Any] | None = None
    model_inputs: dict[str, Any] | None = None
    uid: int = -1
    cached_tokens: int = 0
    prefill_started: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    generated: int = 0
    detokenizer: Any = None
    matcher: StopStringMatcher | None = None
    tools: ToolCallExtractor | None = None
    pending: Chunk = field(default_factory=Chunk)
    pending_tokens: int = 0


@dataclass
class EngineStats:
    waiting: int
    running: int
    in_flight: int
    peak_running: int
    steps: int
    generated_tokens: int


class Engine:
    """Owns the models and the MLX thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry()
        self.metrics = Metrics()
        self.metrics.watch(
            queue_depth=lambda: self.stats().waiting,
            running=lambda: self.stats().running,
            in_flight=lambda: self._in_flight,
            models=lambda: len(self.registry.all()),
        )
        self._commands: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mlxrpc-engine", daemon=True)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._by_request_id: dict[str, RequestHandle] = {}
        self._accepting = False
        self._failed: BaseException | None = None
        self._on_failure: list[Callable[[BaseException], None]] = []
        self._on_models_changed: list[Callable[[], None]] = []
        # Engine-thread state.
        self._batches: dict[str, ModelBatch] = {}
        self._active: dict[RequestHandle, _Active] = {}
        self._by_uid: dict[tuple[str, int], _Active] = {}
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[RequestHandle, Any]]] = {}
        self._peak_running = 0
        self._steps = 0
        self._generated = 0
        self._idle = threading.Event()
        self._idle.set()

    # ------------------------------------------------------------ lifecycle

    def start(self, sources: list[ModelSource]) -> None:
        """Starts the thread, loads and warms up every model (blocking)."""
        self._thread.start()
        for source in sources:
            self.call(lambda s=source: self._load(s))
        self._accepting = True

    def stop_accepting(self) -> None:
        """New requests get UNAVAILABLE; running ones continue (drain)."""
        self._accepting = False

    def shutdown(self, timeout: float = 10.0) -> None:
        self._accepting = False
        if self._thread.is_alive():
            self._post(("stop",))
            self._thread.join(timeout)
        # Free MLX objects caught in reference cycles now: left to interpreter
        # finalization, MLX aborts the process ("terminate called ...").
        gc.collect()

    def on_models_changed(self, callback: Callable[[], None]) -> None:
        """Called (from the loading thread) after a model is loaded or unloaded."""
        self._on_models_changed.append(callback)

    def _models_changed(self) -> None:
        for callback in self._on_models_changed:
            callback()

    def on_failure(self, callback: Callable[[BaseException], None]) -> None:
        """Called (from the engine thread) if the engine thread dies."""
        self._on_failure.append(callback)

    @property
    def ready(self) -> bool:
        return self._accepting and self._failed is None and self._thread.is_alive()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs ``fn`` on the engine thread and returns its result (blocking)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._post(("call", fn, future))
        return future.result()

    # ------------------------------------------------------------ caller API

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Validates and queues a request; raises EngineError when refused."""
        loop = asyncio.get_running_loop()
        if not self.ready:
            raise EngineError(ErrorCode.UNAVAILABLE, "the server is not accepting requests")
        model = self.registry.get(request.model)
        vocab = model.vocab_size
        sampling = resolve_sampling(request.sampling, self.settings, vocab)
        validate_stopping(request.stopping, vocab)
        validate_logprobs(request.logprobs, request.top_logprobs)
        images = request.prompt.images if isinstance(request.prompt, ChatPrompt) else []
        decoded: list[Any] | None = None
        if model.kind is ModelKind.VISION:
            if request.logprobs:
                raise EngineError(ErrorCode.UNIMPLEMENTED,
                                  "logprobs are not available for vision models yet", field="logprobs")
            if not isinstance(request.prompt, ChatPrompt):
                raise invalid("input", f"'{model.id}' is a vision model: send chat messages")
            render_chat(model.tokenizer, request.prompt)  # template errors now, not later
            decoded = decode_images(request.prompt, self.settings.max_image_pixels)
            # Tokenized with the images on the engine thread (mlx-vlm's processor uses MLX).
            prompt_ids, prompt_text = [], ""
            max_tokens = request.stopping.max_tokens or self.settings.max_tokens
        else:
            if images:
                raise invalid("messages", f"the model '{model.id}' does not accept images")
            prompt_ids, prompt_text = tokenize_prompt(model.tokenizer, request.prompt, vocab)
            max_tokens = resolve_max_tokens(
                request.stopping.max_tokens, self.settings, len(prompt_ids), model.context_length
            )
        grammar, tool_format = plan_constraints(request, model)
        stop_ids = set(request.stopping.stop_token_ids)
        stop_on = sorted(stop_ids | (set() if request.stopping.ignore_eos else set(model.eos_token_ids)))

        with self._lock:
            capacity = self.settings.max_num_seqs + self.settings.max_queue
            if self._in_flight >= capacity:
                raise EngineError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"the server is at capacity ({capacity} requests in flight); retry later",
                    reason="QUEUE_FULL",
                )
            request_id = request.request_id or f"req-{next(_request_counter)}"
            if request_id in self._by_request_id:
                raise EngineError(
                    ErrorCode.ALREADY_EXISTS,
                    f"a request with id '{request_id}' is already running",
                    field="request_id",
                )
            handle = RequestHandle(self, loop, request_id)
            handle.model_id = model.id
            self._by_request_id[request_id] = handle
            self._in_flight += 1
        active = _Active(
            handle=handle,
            request=request,
            model=model,
            prompt_ids=prompt_ids,
            prompt_text=prompt_text,
            sampling=sampling,
            max_tokens=max_tokens,
            arrival=time.perf_counter(),
            stop_token_ids=stop_ids,
            stop_on=stop_on,
            grammar=grammar,
            tool_format=tool_format,
            images=decoded,
        )
        self._post(("admit", active))
        return handle

    def abort(self, request_id: str) -> bool:
        """Ends a running request with CANCELLED; False if no such request runs."""
        with self._lock:
            handle = self._by_request_id.get(request_id)
        if handle is None:
            return False
        error = EngineError(ErrorCode.CANCELLED, f"request '{request_id}' was aborted")
        handle._loop.call_soon_threadsafe(handle._push, error)
        self._post(("abort", handle))
        return True

    def load_model(self, source: ModelSource) -> ModelDescription:
        """Loads a model while serving (blocking: run it in an executor).

        A download happens here, in the caller's thread, so generation goes on
        meanwhile; only reading the weights takes the engine thread. Past
        --max-models or --max-model-bytes, least recently used idle models are
        unloaded first.
        """
        if source.id in {m.id for m in self.registry.all()}:
            raise EngineError(ErrorCode.ALREADY_EXISTS, f"model '{source.id}' is already loaded",
                              field="id")
        try:
            path = local_path(source.source)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise EngineError(ErrorCode.NOT_FOUND, f"cannot load '{source.source}': {exc}",
                              field="model") from exc
        self._make_room(source.id, checkpoint_bytes(path))
        described = self.call(lambda: self._load(source, path)).describe()
        self._models_changed()
        return described

    def _make_room(self, model_id: str, needed: int) -> None:
        """Unloads least recently used idle models until the new one fits the bounds."""
        s = self.settings

        def over() -> bool:
            models = self.registry.all()
            too_many = bool(s.max_models) and len(models) + 1 > s.max_models
            too_big = bool(s.max_model_bytes) and sum(m.nbytes for m in models) + needed > s.max_model_bytes
            return too_many or too_big

        while over():
            busy = {a.model.id for a in list(self._active.values())}
            victim = self.registry.least_recently_used(busy)
            if victim is None:
                raise EngineError(ErrorCode.RESOURCE_EXHAUSTED,
                                  f"no room to load '{model_id}': the loaded models are busy or it is "
                                  "larger than --max-model-bytes", reason="MODEL_LIMIT")
            log.info("unloading %s (least recently used) to load %s", victim.id, model_id)
            self.unload_model(victim.id)

    def unload_model(self, name: str) -> None:
        """Unloads a model; its running requests end UNAVAILABLE."""
        model_id = self.registry.get(name).id

        def unload() -> None:
            self._fail_model(model_id, EngineError(
                ErrorCode.UNAVAILABLE, f"model '{model_id}' was unloaded"))
            self.registry.remove(model_id)
            gc.collect()

        self.call(unload)
        self._models_changed()

    def describe_models(self) -> list[ModelDescription]:
        return [m.describe() for m in self.registry.all()]

    def stats(self) -> EngineStats:
        batches = list(self._batches.values())
        running = sum(b.running for b in batches)
        return EngineStats(
            waiting=sum(len(b) for b in batches) - running,
            running=running,
            in_flight=self._in_flight,
            peak_running=self._peak_running,
            steps=self._steps,
            generated_tokens=self._generated,
        )

    def reset_peak(self) -> None:
        self._peak_running = 0

    def wait_idle(self, timeout: float) -> bool:
        """Blocks until no request is admitted or queued on the engine thread."""
        return self._idle.wait(timeout)

    # ------------------------------------------------------------ internals (any thread)

    def _post(self, command: tuple) -> None:
        self._commands.put(command)

    def _release(self, handle: RequestHandle) -> None:
        with self._lock:
            if self._by_request_id.get(handle.request_id) is handle:
                del self._by_request_id[handle.request_id]
                self._in_flight -= 1

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        try:
            while True:
                if not self._drain_commands():
                    break
                for model_id, batch in list(self._batches.items()):
                    if len(batch):
                        self._step(model_id, batch)
                self._flush()
                if not self._active:
                    self._idle.set()
        except BaseException as exc:  # the thread must never die silently
            log.exception("engine thread failed")
            self._failed = exc
            self._accepting = False
            self._fail_all(EngineError(ErrorCode.INTERNAL, f"the engine failed: {exc}"))
            self._flush()
            for callback in self._on_failure:
                callback(exc)
            return
        self._fail_all(EngineError(ErrorCode.UNAVAILABLE, "the server is shutting down"))
        self._flush()

    def _fail_all(self, error: EngineError) -> None:
        """Ends every admitted request with ``error`` and closes the batches."""
        for model_id in list(self._batches):
            self._fail_model(model_id, error)

    def _drain_commands(self) -> bool:
        """Applies queued commands, blocking for the first one only while idle.

        Returns False on stop.
        """
        block = not any(len(b) for b in self._batches.values())
        while True:
            try:
                command = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            kind = command[0]
            if kind == "stop":
                return False
            if kind == "admit":
                self._admit(command[1])
            elif kind == "abort":
                self._abort(command[1])
            elif kind == "call":
                fn, future = command[1], command[2]
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

    def _batch_for(self, model: LoadedModel) -> ModelBatch | VisionBatch:
        batch = self._batches.get(model.id)
        if batch is None:
            batch = self._batches[model.id] = self._new_batch(model, self.settings.max_num_seqs)
        return batch

    def _new_batch(self, model: LoadedModel, max_num_seqs: int) -> ModelBatch | VisionBatch:
        s = self.settings
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
        )

    def _admit(self, a: _Active) -> None:
        if a.handle.finished:  # cancelled while queued
            return
        s = a.sampling
        try:
            if a.images is not None:
                self._prepare_vision(a)
            processors = make_request_processors(
                logit_bias=s.logit_bias,
                repetition_penalty=s.repetition_penalty,
                presence_penalty=s.presence_penalty,
                frequency_penalty=s.frequency_penalty,
            )
            if a.grammar is not None:
                processors.append(GrammarProcessor(a.model.grammar_tokenizer, a.grammar,
                                                   a.model.vocab_size))
            a.uid, a.cached_tokens = self._batch_for(a.model).insert(
                a.prompt_ids, max_tokens=a.max_tokens, sampling=s, processors=processors,
                stop_token_ids=a.stop_on, vocab_size=a.model.vocab_size, model_inputs=a.model_inputs,
            )
        except Exception as exc:
            log.exception("admitting %s failed", a.handle.request_id)
            self._send(a.handle, _classify(exc))
            return
        if self._batches[a.model.id].caching:
            self.metrics.prefix_cache.labels("hit" if a.cached_tokens else "miss").inc()
        a.detokenizer = a.model.tokenizer.detokenizer
        a.matcher = StopStringMatcher(a.request.stopping.stop)
        if a.tool_format is not None:
            tools = a.request.prompt.tools  # type: ignore[union-attr]
            a.tools = ToolCallExtractor(*a.tool_format, tools)
        if a.request.echo_input:
            a.pending.input = InputDetails(token_ids=list(a.prompt_ids), text=a.prompt_text)
        self._active[a.handle] = a
        self._by_uid[(a.model.id, a.uid)] = a
        self._idle.clear()

    def _prepare_vision(self, a: _Active) -> None:
        """Tokenizes a vision prompt with its images (engine thread) and checks its length."""
        assert isinstance(a.request.prompt, ChatPrompt) and a.images is not None
        a.prompt_ids, a.prompt_text, a.model_inputs = vision_inputs(
            a.model.processor, a.model.tokenizer, a.request.prompt, a.images)
        a.max_tokens = resolve_max_tokens(a.max_tokens, self.settings, len(a.prompt_ids),
                                          a.model.context_length)

    def _abort(self, handle: RequestHandle) -> None:
        a = self._active.pop(handle, None)
        if a is not None:
            self._by_uid.pop((a.model.id, a.uid), None)
            batch = self._batches.get(a.model.id)
            if batch is not None:
                batch.remove([a.uid])

    def _step(self, model_id: str, batch: ModelBatch) -> None:
        try:
            prefilled, tokens = batch.step()
        except Exception as exc:
            log.exception("batch step of %s failed", model_id)
            self._fail_model(model_id, _classify(exc))
            return
        self._steps += 1
        self._peak_running = max(self._peak_running, batch.running)
        now = time.perf_counter()
        for uid in prefilled:
            a = self._by_uid.get((model_id, uid))
            if a is not None and a.prefill_started is None:
                a.prefill_started = now
        finished: list[int] = []
        for token in tokens:
            a = self._by_uid.get((model_id, token.uid))
            if a is None:
                continue
            if self._on_token(a, token, now):
                finished.append(token.uid)
                self._active.pop(a.handle, None)
                self._by_uid.pop((model_id, token.uid), None)
        self._generated += len(tokens)
        batch.remove(finished, keep_cache=True)  # sequences that stopped on a stop string

    def _on_token(self, a: _Active, t: StepToken, now: float) -> bool:
        """Folds one token into the request's pending chunk; True when it finished."""
        if a.first_token_at is None:
            a.first_token_at = now
        elif a.last_token_at is not None:
            self.metrics.itl.labels(a.model.id).observe(now - a.last_token_at)
        a.last_token_at = now
        a.generated += 1
        chunk = a.pending
        chunk.token_ids.append(t.token)
        a.pending_tokens += 1
        if a.request.logprobs:
            chunk.logprobs.append(self._logprob(a, t))
        reason: StopReason | None = None
        stop_sequence = ""
        if t.finish_reason == "stop":
            reason = StopReason.STOP_TOKEN if t.token in a.stop_token_ids else StopReason.EOS
        else:
            a.detokenizer.add_token(t.token)
            text, matched = a.matcher.feed(a.detokenizer.last_segment)
            chunk.text += self._visible(a, text)
            if matched is not None:
                reason, stop_sequence = StopReason.STOP_SEQUENCE, matched
            elif t.finish_reason == "length":
                reason = StopReason.LENGTH
        tool_calls = []
        if reason is not None:
            if reason is not StopReason.STOP_SEQUENCE:
                a.detokenizer.finalize()
                text, matched = a.matcher.feed(a.detokenizer.last_segment)
                chunk.text += self._visible(a, text)
                if matched is not None:
                    reason, stop_sequence = StopReason.STOP_SEQUENCE, matched
                else:
                    chunk.text += self._visible(a, a.matcher.flush())
            if a.tools is not None:
                chunk.text += a.tools.flush()
                tool_calls, unparsed = a.tools.calls()
                chunk.text += unparsed
                if tool_calls and reason is not StopReason.LENGTH:
                    reason = StopReason.TOOL_CALLS
            chunk.finish = self._finish(a, reason, stop_sequence, t.token, now)
            chunk.finish.tool_calls = tool_calls
        if reason is not None or a.pending_tokens >= self.settings.stream_interval:
            self._send(a.handle, chunk)
            a.pending = Chunk()
            a.pending_tokens = 0
        return reason is not None

    @staticmethod
    def _visible(a: _Active, text: str) -> str:
        """Output text minus any tool-call markup (held for parsing at the end)."""
        return a.tools.feed(text) if a.tools is not None and text else text

    def _finish(
        self, a: _Active, reason: StopReason, stop_sequence: str, token: int, now: float
    ) -> Finish:
        first = a.first_token_at or now
        decode_time = now - first
        m, model = self.metrics, a.model.id
        m.ttft.labels(model).observe(first - a.arrival)
        m.queue_time.labels(model).observe((a.prefill_started or first) - a.arrival)
        m.prompt_tokens.labels(model).inc(len(a.prompt_ids))
        m.cached_tokens.labels(model).inc(a.cached_tokens)
        m.generation_tokens.labels(model).inc(a.generated)
        return Finish(
            reason=reason,
            stop_sequence=stop_sequence,
            stop_token_id=token if reason in (StopReason.EOS, StopReason.STOP_TOKEN) else None,
            usage=Usage(
                prompt_tokens=len(a.prompt_ids),
                completion_tokens=a.generated,
                cached_tokens=a.cached_tokens,
            ),
            timings=Timings(
                queue_seconds=(a.prefill_started or first) - a.arrival,
                time_to_first_token_seconds=first - a.arrival,
                total_seconds=now - a.arrival,
                decode_tokens_per_second=(a.generated - 1) / decode_time if decode_time > 0 else 0.0,
            ),
        )

    def _logprob(self, a: _Active, t: StepToken) -> TokenLogprob:
        import mlx.core as mx

        decode = a.model.tokenizer.decode
        lp = t.logprobs
        top: list[tuple[int, str, float]] = []
        n = a.request.top_logprobs
        if n:
            ids = mx.argpartition(-lp, kth=n - 1)[:n]
            values = lp[ids]
            pairs = sorted(zip(ids.tolist(), values.tolist(), strict=True), key=lambda p: -p[1])
            top = [(i, decode([i]), v) for i, v in pairs]
        return TokenLogprob(t.token, decode([t.token]), lp[t.token].item(), top)

    def _send(self, handle: RequestHandle, item: Chunk | EngineError) -> None:
        self._outbox.setdefault(handle._loop, []).append((handle, item))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody listens
                loop.call_soon_threadsafe(deliver, items)

    def _fail_model(self, model_id: str, error: EngineError) -> None:
        for handle, a in list(self._active.items()):
            if a.model.id == model_id:
                self._send(handle, error)
                del self._active[handle]
                self._by_uid.pop((model_id, a.uid), None)
        batch = self._batches.pop(model_id, None)
        if batch is not None:
            batch.close()

    def _load(self, source: ModelSource, path: Path | None = None) -> LoadedModel:
        started = time.perf_counter()
        loaded = load_model(source, path)
        self._warm_up(loaded)
        self.registry.add(loaded)
        self.metrics.load_time.labels(loaded.id).set(time.perf_counter() - started)
        return loaded

    def _warm_up(self, loaded: LoadedModel) -> None:
        """Runs one short generation so the first request does not pay for setup."""
        batch = self._new_batch(loaded, max_num_seqs=1)
        ids, inputs = [0, 1], None
        if loaded.kind is ModelKind.VISION:
            ids, _, inputs = vision_inputs(loaded.processor, loaded.tokenizer, ChatPrompt(
                [{"role": "user", "content": "hi"}]), [])
        greedy = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)
        batch.insert(ids, max_tokens=2, sampling=greedy, processors=[], stop_token_ids=[],
                     vocab_size=loaded.vocab_size, model_inputs=inputs)
        while len(batch):
            batch.step()
        batch.close()


def _classify(exc: BaseException) -> EngineError:
    if isinstance(exc, EngineError):
        return exc
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "out of memory" in text or "bad_alloc" in text:
        return EngineError(ErrorCode.RESOURCE_EXHAUSTED, f"out of memory: {exc}")
    return EngineError(ErrorCode.INTERNAL, f"generation failed: {exc}")
