"""The Responses API's stored conversations (the ResponseStore RPCs).

The sidecar is stateless, so the engine process keeps what previous_response_id
needs: per response, its own turn as chat messages and the response object.
Each entry links to the response it continued; a continuation walks the chain,
so a long conversation costs memory once, not once per turn. Bounded by
entries, bytes and idle age; the least recently used entry goes first, and
continuing a conversation refreshes every response of its chain.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from ..engine.errors import EngineError, ErrorCode, invalid
from ..settings import ServiceSettings
from ..v1 import inference_pb2 as pb
from ..v1 import inference_pb2_grpc as pb_grpc
from .auth import bearer

DISABLED = "the response store is disabled on this server (--responses-store-size 0)"


def not_found(response_id: str, previous: bool) -> EngineError:
    """OpenAI's wording, so clients that match on it keep working."""
    what = "Previous response" if previous else "Response"
    return EngineError(ErrorCode.NOT_FOUND, f"{what} with id '{response_id}' not found.",
                       field="previous_response_id" if previous else "response_id",
                       reason="RESPONSE_NOT_FOUND")


@dataclass
class _Entry:
    stored: pb.StoredResponse
    size: int
    last_used: float


class ResponseMemory:
    """LRU map of (owner, response id) → stored response, bounded three ways."""

    def __init__(self, max_entries: int, max_bytes: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, owner: str, stored: pb.StoredResponse) -> None:
        size = stored.ByteSize()
        if self.max_bytes and size > self.max_bytes:
            raise invalid("response", f"the response is {size} bytes, more than the store's "
                          f"{self.max_bytes} (--responses-store-bytes)")
        self._drop((owner, stored.id))
        self._entries[(owner, stored.id)] = _Entry(stored, size, self._clock())
        self.bytes += size
        while len(self._entries) > self.max_entries or (self.max_bytes and self.bytes > self.max_bytes):
            self._drop(next(iter(self._entries)))

    def get(self, owner: str, response_id: str) -> pb.StoredResponse | None:
        self._expire()
        entry = self._entries.get((owner, response_id))
        if entry is None:
            return None
        self._touch((owner, response_id), entry)
        return entry.stored

    def conversation(self, owner: str, response_id: str) -> list[pb.ChatMessage] | None:
        """The messages of the whole chain ending at ``response_id``, oldest first;
        None when any response of the chain is gone."""
        turns: list[pb.StoredResponse] = []
        seen: set[str] = set()
        current = response_id
        while current and current not in seen:
            seen.add(current)
            turn = self.get(owner, current)
            if turn is None:
                return None
            turns.append(turn)
            current = turn.previous_response_id
        return [m for turn in reversed(turns) for m in turn.messages]

    def delete(self, owner: str, response_id: str) -> bool:
        self._expire()
        return self._drop((owner, response_id))

    def _touch(self, key: tuple[str, str], entry: _Entry) -> None:
        entry.last_used = self._clock()
        self._entries.move_to_end(key)

    def _expire(self) -> None:
        """Entries are in order of last use, so the expired ones are at the front."""
        deadline = self._clock() - self.ttl
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.last_used >= deadline:
                return
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> bool:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry is not None


class ResponseStoreServicer(pb_grpc.ResponseStoreServicer):
    """The ResponseStore RPCs; entries belong to the caller's API key when keys are set."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._keyed = any(settings.api_key)
        self._memory = (
            ResponseMemory(settings.responses_store_size, settings.responses_store_bytes,
                           settings.responses_store_ttl)
            if settings.responses_store_size > 0 else None
        )

    def _open(self, context: grpc.aio.ServicerContext) -> tuple[ResponseMemory, str]:
        if self._memory is None:
            raise EngineError(ErrorCode.INVALID_ARGUMENT, DISABLED, field="previous_response_id",
                              reason="RESPONSE_STORE_DISABLED")
        return self._memory, bearer(context.invocation_metadata()) if self._keyed else ""

    async def PutResponse(self, request: pb.PutResponseRequest,
                          context: grpc.aio.ServicerContext) -> pb.PutResponseResponse:
        memory, owner = self._open(context)
        if not request.response.id:
            raise invalid("response.id", "response.id is required")
        memory.put(owner, request.response)
        return pb.PutResponseResponse()

    async def GetResponse(self, request: pb.GetResponseRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetResponseResponse:
        memory, owner = self._open(context)
        previous = request.include_conversation
        stored = memory.get(owner, request.id)
        conversation = memory.conversation(owner, request.id) if previous else []
        if stored is None or conversation is None:
            raise not_found(request.id, previous)
        return pb.GetResponseResponse(response=stored, conversation=conversation)

    async def DeleteResponse(self, request: pb.DeleteResponseRequest,
                             context: grpc.aio.ServicerContext) -> pb.DeleteResponseResponse:
        memory, owner = self._open(context)
        if not memory.delete(owner, request.id):
            raise not_found(request.id, previous=False)
        return pb.DeleteResponseResponse()
