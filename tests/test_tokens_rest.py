"""vLLM's /tokenize and /detokenize on the REST sidecar, called with aiohttp."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from mlxrpc.gateway.http.errors import ApiError
from mlxrpc.gateway.tokenize.protocol import DetokenizeBody, TokenizeBody
from mlxrpc.gateway.tokenize.translate import detokenize_to_proto, tokenize_to_proto
from mlxrpc.v1 import inference_pb2 as pb

from .conftest import Stack

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]


async def post(stack: Stack, path: str, body: Any) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
        async with session.post(f"{stack.http_base}{path}", **kwargs) as response:
            return response.status, await response.json()


async def test_tokenize_a_prompt_like_vllm(stack: Stack) -> None:
    tokenizer = stack.engine.registry.get("llama").tokenizer
    status, body = await post(stack, "/tokenize", {"model": "llama", "prompt": "Hello world"})
    assert status == 200, body
    assert body["tokens"] == tokenizer.encode("Hello world")
    assert body["count"] == len(body["tokens"])
    assert body["max_model_len"] == stack.engine.registry.get("llama").context_length > 0
    assert body["token_strs"] is None


async def test_token_strings_special_tokens_and_the_v1_twin(stack: Stack) -> None:
    tokenizer = stack.engine.registry.get("llama").tokenizer
    status, body = await post(stack, "/v1/tokenize", {
        "model": "llama", "prompt": "Hello world", "add_special_tokens": False, "return_token_strs": True})
    assert status == 200, body
    assert body["tokens"] == tokenizer.encode("Hello world", add_special_tokens=False)
    assert body["token_strs"] == tokenizer.convert_ids_to_tokens(body["tokens"])


async def test_tokenize_messages_counts_what_generation_sees(stack: Stack, aclient) -> None:
    status, body = await post(stack, "/tokenize", {"model": "llama", "messages": MESSAGES})
    assert status == 200, body
    completion = await aclient.chat.completions.create(model="llama", messages=MESSAGES, max_tokens=1)
    assert body["count"] == completion.usage.prompt_tokens
    _, bare = await post(stack, "/tokenize", {
        "model": "llama", "messages": MESSAGES, "add_generation_prompt": False})
    assert 0 < bare["count"] < body["count"]


async def test_default_model_and_the_other_model(stack: Stack) -> None:
    status, body = await post(stack, "/tokenize", {"prompt": "Hi"})
    assert status == 200 and body["max_model_len"] == stack.engine.registry.get("llama").context_length
    status, body = await post(stack, "/tokenize", {"model": "qwen", "prompt": "Hi"})
    assert status == 200 and body["max_model_len"] == 256


async def test_detokenize_round_trips(stack: Stack) -> None:
    _, tokenized = await post(stack, "/tokenize", {
        "model": "llama", "prompt": "The capital of France", "add_special_tokens": False})
    status, body = await post(stack, "/detokenize", {"model": "llama", "tokens": tokenized["tokens"]})
    assert status == 200 and body == {"prompt": "The capital of France"}
    status, body = await post(stack, "/v1/detokenize", {"model": "llama", "tokens": []})
    assert status == 200 and body == {"prompt": ""}


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/tokenize", "{not json", None),
    ("/tokenize", [1, 2], None),
    ("/tokenize", {"model": "llama"}, "prompt"),
    ("/tokenize", {"model": "llama", "prompt": "a", "messages": MESSAGES}, "prompt"),
    ("/tokenize", {"model": "llama", "prompt": 5}, "prompt"),
    ("/tokenize", {"model": "llama", "messages": []}, "messages"),
    ("/tokenize", {"model": "llama", "messages": [{"content": "no role"}]}, "messages[0].role"),
    ("/tokenize", {"model": "llama", "messages": MESSAGES, "continue_final_message": True},
     "continue_final_message"),
    ("/tokenize", {"model": "llama", "messages": MESSAGES, "chat_template": "{{ x }}"}, "chat_template"),
    ("/tokenize", {"model": "llama", "messages": MESSAGES, "add_special_tokens": True}, "add_special_tokens"),
    ("/tokenize", {"model": "llama", "messages": MESSAGES,
                   "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("/tokenize", {"model": " ", "prompt": "a"}, "model"),
    ("/detokenize", {"model": "llama"}, "tokens"),
    ("/detokenize", {"model": "llama", "tokens": "1 2"}, "tokens"),
    ("/detokenize", {"model": "llama", "tokens": [1, -2]}, "tokens[1]"),
    ("/detokenize", {"model": "llama", "tokens": [2**32]}, "tokens[0]"),
    ("/detokenize", {"model": "llama", "tokens": [10**9]}, "token_ids"),
])
async def test_bad_input_is_a_400_in_openai_shape(stack: Stack, path: str, body: Any, param: str | None) -> None:
    status, reply = await post(stack, path, body)
    assert status == 400, reply
    assert reply["error"]["type"] == "invalid_request_error"
    assert reply["error"]["param"] == param and reply["error"]["message"]


@pytest.mark.parametrize(("path", "body"), [
    ("/tokenize", {"model": "nope", "prompt": "a"}),
    ("/tokenize", {"model": "nope", "messages": MESSAGES}),
    ("/v1/detokenize", {"model": "nope", "tokens": [1]}),
])
async def test_unknown_model_is_a_404(stack: Stack, path: str, body: dict) -> None:
    status, reply = await post(stack, path, body)
    assert status == 404, reply
    assert reply["error"]["type"] == "invalid_request_error" and "nope" in reply["error"]["message"]
    assert reply["error"]["code"] == "model_not_found"


def test_translation_to_proto() -> None:
    text = tokenize_to_proto(TokenizeBody(prompt="hi", add_special_tokens=False))
    assert text.text == "hi" and text.HasField("add_special_tokens") and not text.add_special_tokens
    assert not tokenize_to_proto(TokenizeBody(model="m", prompt="")).HasField("add_special_tokens")
    chat = tokenize_to_proto(TokenizeBody.model_validate({
        "model": "m", "messages": MESSAGES, "add_generation_prompt": False,
        "chat_template_kwargs": {"enable_thinking": False}}))
    assert chat.model == "m" and [m.role for m in chat.chat.messages] == ["system", "user"]
    assert chat.chat.messages[1].content[0].text == "Hello!"
    assert chat.chat.HasField("add_generation_prompt") and not chat.chat.add_generation_prompt
    assert chat.chat.template_kwargs_json == '{"enable_thinking": false}'
    with pytest.raises(ApiError):
        tokenize_to_proto(TokenizeBody())
    assert detokenize_to_proto(DetokenizeBody(tokens=[1, 2])) == pb.DetokenizeRequest(token_ids=[1, 2])
