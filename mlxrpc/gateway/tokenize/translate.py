"""Pure translation of the tokenize bodies onto Tokenize / Detokenize.

Options the proto cannot honour are refused with a 400 rather than ignored, so
a count is never silently wrong.
"""

from __future__ import annotations

import json

from ...v1 import inference_pb2 as pb
from ..http.errors import ApiError
from ..openai.translate import to_message
from .protocol import DetokenizeBody, TokenizeBody, TokenizeResult


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def tokenize_to_proto(body: TokenizeBody) -> pb.TokenizeRequest:
    if (body.prompt is None) == (body.messages is None):
        raise _bad("prompt", "send either prompt or messages")
    request = pb.TokenizeRequest(model=body.model or "")
    if body.prompt is not None:
        request.text = body.prompt
        if body.add_special_tokens is not None:
            request.add_special_tokens = body.add_special_tokens
        return request
    if not body.messages:
        raise _bad("messages", "messages must not be empty")
    # The chat template writes the special tokens; the proto has no per-request
    # template, tools or continuation for Tokenize, so those would miscount.
    unsupported = {
        "add_special_tokens": bool(body.add_special_tokens),
        "continue_final_message": body.continue_final_message,
        "chat_template": body.chat_template is not None,
        "tools": bool(body.tools),
    }
    for param, given in unsupported.items():
        if given:
            raise _bad(param, f"{param} is not supported with messages")
    request.chat.messages.extend(to_message(m, i) for i, m in enumerate(body.messages))
    request.chat.add_generation_prompt = body.add_generation_prompt
    if body.chat_template_kwargs:
        request.chat.template_kwargs_json = json.dumps(body.chat_template_kwargs)
    return request


def tokenize_response(reply: pb.TokenizeResponse, model: pb.Model, token_strs: bool) -> TokenizeResult:
    return TokenizeResult(count=len(reply.token_ids), max_model_len=model.context_length,
                          tokens=list(reply.token_ids), token_strs=list(reply.tokens) if token_strs else None)


def detokenize_to_proto(body: DetokenizeBody) -> pb.DetokenizeRequest:
    return pb.DetokenizeRequest(model=body.model or "", token_ids=body.tokens)
