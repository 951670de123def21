"""The engine as callers see it: generate, manage models, read stats.

asyncio callers never touch MLX. ``generate`` is a request's whole lifecycle
(as vLLM's ``AsyncLLM.generate``): it checks admission, reserves a slot,
prepares the request on the request-side thread pool (template, tokens,
grammar, images), posts it to the core (core.py, the MLX thread), yields the
chunks the core pushes into the request's passive ``RequestHandle``, and in
its ``finally`` aborts and releases.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import hmac
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ..distributed.channel import Channel
from ..metrics import Metrics
from ..settings import EngineSettings
from .admission import check_admission
from .core import Abort, Admit, EngineCore, EngineStats, InjectFault, warm_up
from .errors import EngineError, ErrorCode
from .handle import RequestHandle
from .model_options import model_options
from .prepare import prepare
from .registry import LoadedModel, ModelRegistry, ModelSource, checkpoint_bytes, load_model, local_path
from .types import ChatPrompt, Chunk, GenerationRequest, ImageInput, ModelDescription

log = logging.getLogger(__name__)

T = TypeVar("T")
# Fills the bytes of a prompt's images (URLs, paths): the service's I/O, under its policy.
ImageLoader = Callable[[list[ImageInput]], Awaitable[None]]
# Request-side threads: enough to prepare one request while another's
# grammar compiles, few enough to leave the cores to MLX.
REQUEST_SIDE_THREADS = 2


class Engine:
    """Owns the models, the engine core and the request-side pool."""

    def __init__(self, settings: EngineSettings, channel: Channel | None = None) -> None:
        self.settings = settings
        self.registry = ModelRegistry()
        self.metrics = Metrics()
        # Rank 0 of a distributed world: the core steps in lockstep with the other ranks.
        self.core = EngineCore(settings, self.metrics, on_death=self._core_died, channel=channel)
        if channel is not None:
            channel.on_exchange = self.metrics.collective.observe
        self.metrics.watch(
            queue_depth=lambda: self.core.stats.waiting,
            running=lambda: self.core.stats.running,
            in_flight=lambda: self._in_flight,
            models=lambda: len(self.registry.all()),
        )
        self._request_side = concurrent.futures.ThreadPoolExecutor(
            REQUEST_SIDE_THREADS, thread_name_prefix="mlxrpc-request")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._by_request_id: dict[str, RequestHandle] = {}
        self._loading: dict[str, concurrent.futures.Future[LoadedModel]] = {}
        self._accepting = False
        self._on_failure: list[Callable[[BaseException], None]] = []
        self._on_models_changed: list[Callable[[], None]] = []

    # ------------------------------------------------------------ lifecycle

    def start(self, sources: list[ModelSource]) -> None:
        """Starts the core, loads and warms up every model (blocking)."""
        self.core.start()
        for source in sources:
            self._load(source)
        self._accepting = True

    def stop_accepting(self) -> None:
        """New requests get UNAVAILABLE; running ones continue (drain)."""
        self._accepting = False

    def shutdown(self, timeout: float = 10.0) -> None:
        self._accepting = False
        self.core.stop(timeout)
        self._request_side.shutdown(wait=False, cancel_futures=True)
        # Free MLX objects caught in reference cycles now: left to interpreter
        # finalization, MLX aborts the process ("terminate called ...").
        gc.collect()

    def on_models_changed(self, callback: Callable[[], None]) -> None:
        """Called (from the loading thread) after a model is loaded or unloaded."""
        self._on_models_changed.append(callback)

    def on_failure(self, callback: Callable[[BaseException], None]) -> None:
        """Called (from the engine thread) once the core has died and failed every request."""
        self._on_failure.append(callback)

    def _core_died(self, exc: BaseException) -> None:
        self._accepting = False
        for callback in self._on_failure:
            try:
                callback(exc)
            except Exception:
                log.exception("an engine failure callback failed")

    @property
    def ready(self) -> bool:
        return self._accepting and self.core.alive

    def call(self, fn: Callable[[], T]) -> T:
        """Runs ``fn`` on the engine thread and returns its result (blocking)."""
        return self.core.call(fn)

    async def run_request_side(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs per-request CPU work (templates, tokenizing) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._request_side, partial(fn, *args))

    def inject_core_fault(self, after_tokens: int) -> None:
        """Test hook: makes the core itself fail after ``after_tokens`` more tokens."""
        self.core.post(InjectFault(after_tokens))

    # ------------------------------------------------------------ requests

    async def generate(
        self, request: GenerationRequest, owner: str = "", load_images: ImageLoader | None = None,
    ) -> AsyncIterator[list[Chunk]]:
        """The whole life of one request: admit, prepare, queue, stream, end.

        Yields the chunks that are ready, as batches (the last one carries
        ``finish``); raises EngineError when refused or failed. Whatever ends
        the iteration (the end, an error, the caller's cancellation or
        ``aclose``), ``finally`` aborts the request if it is still running and
        frees its slot. ``request.model`` and an empty ``request.request_id``
        are resolved in place, so the caller can name them. ``owner`` (the
        caller's credential) is who may ``abort`` it besides an admin.
        ``load_images`` fetches a chat prompt's images once the request is
        admitted (the service's I/O; the engine only decodes bytes).
        """
        arrival = time.perf_counter()
        if not self.ready:
            raise EngineError(ErrorCode.UNAVAILABLE, "the server is not accepting requests",
                              reason="NOT_SERVING")
        model = self.registry.get(request.model)
        check_admission(request, model)
        request.model = model.id
        handle = self._reserve(request, owner)
        try:
            if load_images is not None and isinstance(request.prompt, ChatPrompt) and request.prompt.images:
                await load_images(request.prompt.images)
            prepared = await self.run_request_side(prepare, request, model, self.settings)
            prepared.arrival = arrival
            if not handle.finished:
                self.core.post(Admit(prepared, handle))
            while chunks := await handle.next_chunks():
                yield chunks
        finally:
            if not handle.finished:
                handle.close()
                self._abort_on_core(handle)

    def _reserve(self, request: GenerationRequest, owner: str) -> RequestHandle:
        """Counts the request against capacity and registers its id."""
        with self._lock:
            capacity = self.settings.max_num_seqs + self.settings.max_queue
            if self._in_flight >= capacity:
                raise EngineError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"the server is at capacity ({capacity} requests in flight); retry later",
                    reason="QUEUE_FULL",
                )
            request.request_id = request.request_id or f"req-{uuid.uuid4().hex}"
            if request.request_id in self._by_request_id:
                raise EngineError(ErrorCode.ALREADY_EXISTS, "a request with this id is already running",
                                  field="request_id")
            handle = RequestHandle(asyncio.get_running_loop(), request.request_id, request.model, owner,
                                   on_close=self._release)
            self._by_request_id[request.request_id] = handle
            self._in_flight += 1
        return handle

    def abort(self, request_id: str, caller: str = "", admin: bool = False) -> bool:
        """Ends a running request with CANCELLED; False if no such request runs.

        Only the credential that started it (or the admin key) may abort it.
        """
        with self._lock:
            handle = self._by_request_id.get(request_id)
        if handle is None:
            return False
        if not admin and not hmac.compare_digest(handle.owner.encode(), caller.encode()):
            raise EngineError(ErrorCode.PERMISSION_DENIED, "this request was started by another caller")
        handle.loop.call_soon_threadsafe(handle.push, EngineError(ErrorCode.CANCELLED, "the request was aborted"))
        self._abort_on_core(handle)
        return True

    def _abort_on_core(self, handle: RequestHandle) -> None:
        """Frees a request's batch row at the next step (a no-op for one never admitted)."""
        with contextlib.suppress(EngineError):  # the core is gone: nothing left to abort
            self.core.post(Abort(handle))

    def _release(self, handle: RequestHandle) -> None:
        """The handle's close callback: the request no longer counts or owns its id."""
        with self._lock:
            if self._by_request_id.get(handle.request_id) is handle:
                del self._by_request_id[handle.request_id]
                self._in_flight -= 1

    # ------------------------------------------------------------ models

    def load_model(self, source: ModelSource) -> ModelDescription:
        """Loads a model while serving (blocking: run it in an executor).

        Concurrent loads of one id share one load. A download happens in the
        caller's thread, so generation goes on meanwhile; making room (LRU
        unloads past --max-models / --max-model-bytes) and reading the weights
        happen together on the engine thread.
        """
        self._fixed_models()
        with self._lock:
            pending = self._loading.get(source.id)
            if pending is None:
                if source.id in {m.id for m in self.registry.all()}:
                    raise EngineError(ErrorCode.ALREADY_EXISTS, f"model '{source.id}' is already loaded",
                                      field="id")
                pending = self._loading[source.id] = concurrent.futures.Future()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result().describe()
        try:
            loaded = self._load(source)
            pending.set_result(loaded)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._loading[source.id]
        self._models_changed()
        return loaded.describe()

    def _load(self, source: ModelSource) -> LoadedModel:
        try:
            source = dataclasses.replace(source, options=model_options(self.settings, source.id))
        except ValueError as exc:
            raise EngineError(ErrorCode.INVALID_ARGUMENT, str(exc), field="model") from exc
        try:
            path = local_path(source.source)
        except (OSError, ValueError) as exc:
            raise EngineError(ErrorCode.NOT_FOUND, f"cannot load '{source.source[:200]}': {exc}",
                              field="model") from exc
        needed = checkpoint_bytes(path)
        return self.call(lambda: self._load_on_core(source, path, needed))

    def _load_on_core(self, source: ModelSource, path: Path, needed: int) -> LoadedModel:
        started = time.perf_counter()
        self._make_room(source.id, needed)
        loaded = load_model(source, path)
        warm_up(loaded, self.settings)
        self.registry.add(loaded)
        self.metrics.load_time.labels(loaded.id).set(time.perf_counter() - started)
        return loaded

    def _make_room(self, model_id: str, needed: int) -> None:
        """Unloads least recently used idle models until the new one fits (engine thread)."""
        s = self.settings

        def over() -> bool:
            models = self.registry.all()
            too_many = bool(s.max_models) and len(models) + 1 > s.max_models
            too_big = bool(s.max_model_bytes) and sum(m.nbytes for m in models) + needed > s.max_model_bytes
            return too_many or too_big

        while over():
            victim = self.registry.least_recently_used(self.core.busy_models())
            if victim is None:
                raise EngineError(ErrorCode.RESOURCE_EXHAUSTED,
                                  f"no room to load '{model_id}': the loaded models are busy or it is "
                                  "larger than --max-model-bytes", reason="MODEL_LIMIT")
            log.info("unloading %s (least recently used) to load %s", victim.id, model_id)
            self._unload_on_core(victim.id)

    def unload_model(self, name: str) -> None:
        """Unloads a model; its running requests end UNAVAILABLE."""
        self._fixed_models()
        model_id = self.registry.get(name).id
        self.call(lambda: self._unload_on_core(model_id))
        self._models_changed()

    def _unload_on_core(self, model_id: str) -> None:
        self.core.fail_model(model_id, EngineError(ErrorCode.UNAVAILABLE, f"model '{model_id}' was unloaded"))
        self.registry.remove(model_id)
        gc.collect()

    def _fixed_models(self) -> None:
        if self.settings.parallel:
            raise EngineError(ErrorCode.UNIMPLEMENTED, "a distributed world serves the one model it "
                              "started with: models cannot be loaded or unloaded")

    def _models_changed(self) -> None:
        for callback in self._on_models_changed:
            callback()

    def describe_models(self) -> list[ModelDescription]:
        return [m.describe() for m in self.registry.all()]

    # ------------------------------------------------------------ observation

    def stats(self) -> EngineStats:
        s = self.core.stats
        return EngineStats(s.waiting, s.running, self._in_flight, s.peak_running, s.steps, s.generated_tokens)

    def reset_peak(self) -> None:
        self.core.reset_peak()

    def wait_idle(self, timeout: float) -> bool:
        """Blocks until no request is admitted or queued on the engine thread."""
        return self.core.idle.wait(timeout)
