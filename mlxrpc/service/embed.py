"""The Embed RPC: check and tokenize inputs off the event loop, then embed them
on the engine thread a few similar-length inputs per forward pass.

Each pass is its own call onto the engine thread, so generation steps run
between them and a big request never stalls other users for long; a cancelled
call stops before its next pass.
"""

from __future__ import annotations

import asyncio
from functools import partial

from ..engine.embeddings import embed_batch, plan_batches, tokenize_inputs
from ..engine.engine import Engine
from ..engine.errors import EngineError, ErrorCode, invalid
from ..engine.registry import LoadedModel
from ..settings import ServiceSettings
from ..v1 import inference_pb2 as pb

# OpenAI's limits: inputs per request, and tokens summed over them.
MAX_INPUTS = 2048
MAX_TOTAL_TOKENS = 300_000


def to_inputs(request: pb.EmbedRequest) -> list[str | list[int]]:
    """The request's inputs as texts and token-id lists (errors name ``inputs[i]``)."""
    if not request.inputs:
        raise invalid("inputs", "inputs must not be empty")
    if len(request.inputs) > MAX_INPUTS:
        raise invalid("inputs", f"at most {MAX_INPUTS} inputs per request, got {len(request.inputs)}")
    inputs: list[str | list[int]] = []
    for i, item in enumerate(request.inputs):
        which = item.WhichOneof("input")
        if which is None:
            raise invalid(f"inputs[{i}]", f"inputs[{i}] needs text or token_ids")
        inputs.append(item.text if which == "text" else list(item.token_ids.ids))
    return inputs


def _check_model(model: LoadedModel) -> None:
    if model.embedding is None:
        raise invalid("model", f"the model '{model.id}' is not an embedding model")


async def embed(engine: Engine, settings: ServiceSettings, model: LoadedModel,
                request: pb.EmbedRequest) -> pb.EmbedResponse:
    _check_model(model)
    if not engine.ready:
        raise EngineError(ErrorCode.UNAVAILABLE, "the server is not accepting requests", reason="NOT_SERVING")
    spec = model.embedding
    assert spec is not None
    size = spec.output_size(request.dimensions)
    inputs = to_inputs(request)
    context = min(model.context_length, spec.max_tokens or model.context_length)
    ids = await engine.run_request_side(tokenize_inputs, model.tokenizer, model.vocab_size, context, inputs)
    total = sum(map(len, ids))
    if total > MAX_TOTAL_TOKENS:
        raise invalid("inputs", f"the inputs have {total} tokens together, more than {MAX_TOTAL_TOKENS}")
    if len(ids) * (size * 4 + 16) > settings.max_message_bytes:
        raise invalid("inputs", "the embeddings would exceed the largest message; send fewer inputs per request")
    vectors: list[list[float]] = [[] for _ in ids]
    loop = asyncio.get_running_loop()
    for batch in plan_batches([len(x) for x in ids]):
        work = partial(embed_batch, model.model, spec, [ids[i] for i in batch], size)
        try:
            rows = await loop.run_in_executor(None, engine.call, work)
        except (MemoryError, RuntimeError) as exc:
            if not isinstance(exc, MemoryError) and "out of memory" not in str(exc).lower():
                raise
            raise EngineError(ErrorCode.RESOURCE_EXHAUSTED, "out of memory while embedding; send fewer "
                              "or shorter inputs", reason="OUT_OF_MEMORY") from exc
        for i, row in zip(batch, rows, strict=True):
            vectors[i] = row
    return pb.EmbedResponse(
        model=model.id, embeddings=[pb.Embedding(values=v) for v in vectors],
        usage=pb.Usage(prompt_tokens=total, total_tokens=total))

