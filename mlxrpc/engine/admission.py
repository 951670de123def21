"""Which requests a model takes: every admission rule, stated once.

Checked by ``Engine.generate`` before a slot is reserved or any input is
fetched, so a refusal costs nothing; the service's Tokenize reuses the rule
it shares with generation.
"""

from __future__ import annotations

from .errors import EngineError, ErrorCode, invalid
from .registry import LoadedModel
from .types import ChatPrompt, GenerationRequest, ModelKind


def check_admission(request: GenerationRequest, model: LoadedModel) -> None:
    """Raises EngineError when ``model`` cannot serve ``request`` as asked."""
    if model.kind is ModelKind.EMBEDDING:
        raise invalid("model", f"the model '{model.id}' is an embedding model: use Embed (/v1/embeddings)")
    chat = isinstance(request.prompt, ChatPrompt)
    if model.kind is ModelKind.VISION:
        if request.logprobs:
            raise EngineError(ErrorCode.UNIMPLEMENTED,
                              "logprobs are not available for vision models yet", field="logprobs")
        if not chat:
            raise invalid("input", f"'{model.id}' is a vision model: send chat messages")
    elif chat and request.prompt.images:
        raise invalid("messages", f"the model '{model.id}' does not accept images")


def check_tools_input(chat: bool, has_tools: bool) -> None:
    """Tools are rendered by the chat template, so they need chat input."""
    if has_tools and not chat:
        raise invalid("tools", "tools need chat input")
