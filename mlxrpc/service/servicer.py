"""The mlxrpc.v1.Inference servicer: requests in, engine events out as messages."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial

import grpc

from ..engine.admission import check_tools_input
from ..engine.engine import Engine
from ..engine.errors import EngineError, ErrorCode, invalid
from ..engine.prompts import render_chat
from ..engine.registry import LoadedModel, ModelSource
from ..settings import McpSettings, ServiceSettings
from ..v1 import inference_pb2 as pb
from ..v1 import inference_pb2_grpc as pb_grpc
from . import convert, embed
from .auth import bearer
from .images import resolve_images
from .limits import check_limits, check_tokenize_limits
from .mcp import McpManager
from .mcp_loop import McpLoop

log = logging.getLogger(__name__)


class InferenceServicer(pb_grpc.InferenceServicer):
    """The Inference RPCs. Handlers raise EngineError; the interceptor maps it to a status."""

    def __init__(self, engine: Engine, settings: ServiceSettings, mcp: McpManager | None = None,
                 mcp_settings: McpSettings | None = None) -> None:
        self._engine = engine
        self._settings = settings
        # Requests with mcp_tools run the server-side MCP tool loop (mcp_loop.py).
        self._mcp_loop = McpLoop(mcp or McpManager([]), (mcp_settings or McpSettings()).mcp_max_steps)
        self._closing: set[asyncio.Task] = set()

    def _generate(self, request: pb.GenerateRequest,
                  context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateStreamResponse]:
        """The one generation path: StreamGenerate sends it, Generate collects it."""
        if request.mcp_tools:
            return self._mcp_loop.stream(request, lambda step: self._stream(step, context))
        return self._stream(request, context)

    async def _stream(self, request: pb.GenerateRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateStreamResponse]:
        """One engine request as stream messages (the first names the request and the model)."""
        check_limits(request, self._settings)
        generation = convert.to_generation_request(request)
        generation.model = (await self._model(generation.model)).id
        chunks = self._engine.generate(generation, owner=bearer(context.invocation_metadata()),
                                       load_images=partial(resolve_images, settings=self._settings))
        # The call's end frees the slot even if the handler is parked on a
        # write that flow control holds when the client cancels.
        context.add_done_callback(lambda _: self._close_soon(chunks))
        first = True
        async for batch in chunks:
            message = convert.to_stream_response(convert.merge_chunks(batch))
            if first:
                message.request_id, message.model = generation.request_id, generation.model
                first = False
            yield message

    def _close_soon(self, stream: AsyncGenerator) -> None:
        if stream.ag_frame is None:  # already finished: nothing to abort
            return
        task = asyncio.get_running_loop().create_task(_close(stream))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _model(self, name: str) -> LoadedModel:
        """The named model, loaded first if --load-on-demand allows it."""
        try:
            return self._engine.registry.get(name)
        except EngineError as error:
            if error.code is not ErrorCode.NOT_FOUND or not self._settings.load_on_demand:
                raise
        try:
            source = ModelSource.parse(name)
        except ValueError as exc:
            raise invalid("model", str(exc)) from None
        log.info("loading %s on first use", source.id)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._engine.load_model, source)
        except EngineError as error:
            if error.code is not ErrorCode.ALREADY_EXISTS:  # another request loaded it first
                raise
        return self._engine.registry.get(source.id)

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        return await convert.collect(self._generate(request, context))

    async def StreamGenerate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        async for message in self._generate(request, context):
            yield message

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        model = await self._model(request.model)
        return await embed.embed(self._engine, self._settings, model, request)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[convert.to_model(d) for d in self._engine.describe_models()])

    async def ModelInfo(self, request: pb.ModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.Model:
        return convert.to_model(self._engine.registry.get(request.model).describe())

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> pb.TokenizeResponse:
        check_tokenize_limits(request, self._settings)
        model = self._engine.registry.get(request.model)
        return await self._engine.run_request_side(tokenize, model, request)

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetokenizeResponse:
        model = self._engine.registry.get(request.model)
        bad = [t for t in request.token_ids if t >= model.vocab_size]
        if bad:
            raise invalid("token_ids", f"token id {bad[0]} is outside the vocabulary")
        text = model.tokenizer.decode(list(request.token_ids), skip_special_tokens=request.skip_special_tokens)
        return pb.DetokenizeResponse(text=text)

    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> pb.AbortResponse:
        if not request.request_id:
            raise invalid("request_id", "request_id is required")
        caller = bearer(context.invocation_metadata())
        admin = bool(self._settings.admin_key) and hmac.compare_digest(
            caller.encode(), self._settings.admin_key.encode())
        return pb.AbortResponse(found=self._engine.abort(request.request_id, caller, admin))

    async def LoadModel(self, request: pb.LoadModelRequest, context: grpc.aio.ServicerContext) -> pb.Model:
        if not request.source:
            raise invalid("source", "source (a Hugging Face id or a server path) is required")
        source = ModelSource(id=request.id or request.source, source=request.source)
        try:
            described = await asyncio.get_running_loop().run_in_executor(None, self._engine.load_model, source)
        except (OSError, ValueError) as exc:
            raise EngineError(ErrorCode.NOT_FOUND, f"cannot load '{request.source}': {exc}", field="source") from exc
        return convert.to_model(described)

    async def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadModelResponse:
        await asyncio.get_running_loop().run_in_executor(None, self._engine.unload_model, request.model)
        return pb.UnloadModelResponse()

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMetricsResponse:
        return pb.GetMetricsResponse(text=self._engine.metrics.exposition())


async def _close(stream: AsyncGenerator) -> None:
    """Closes a request's stream parked at a yield; its ``finally`` aborts and releases."""
    with contextlib.suppress(RuntimeError):  # still running: the handler's own cancellation ends it
        await stream.aclose()


def tokenize(model: LoadedModel, request: pb.TokenizeRequest) -> pb.TokenizeResponse:
    """The Tokenize RPC's work, run on the request side (templates and long texts take time)."""
    tokenizer = model.tokenizer
    which = request.WhichOneof("input")
    if which == "chat":
        prompt = convert.chat_to_prompt(request.chat)
        prompt.template_kwargs = {**model.template_defaults, **prompt.template_kwargs}
        prompt.tools = convert.to_tools(list(request.tools)) or None
        text, add_special = render_chat(tokenizer, prompt), False
    elif which == "text":
        text = request.text
        add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
    else:
        raise invalid("input", "one of text or chat is required")
    check_tools_input(which == "chat", bool(request.tools))
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    try:
        encoded = hf(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    except (NotImplementedError, KeyError, TypeError):  # a slow tokenizer has no offsets
        ids, offsets = tokenizer.encode(text, add_special_tokens=add_special), []
    return pb.TokenizeResponse(token_ids=ids, tokens=tokenizer.convert_ids_to_tokens(ids),
                               offsets=[pb.TokenOffset(start=a, end=b) for a, b in offsets])
