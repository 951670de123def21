"""Prompt → token ids with the model's tokenizer and chat template.

Pure Python (Hugging Face tokenizers, Jinja templates): safe to call from any
thread, so validation happens before a request reaches the engine thread.
"""

from __future__ import annotations

from typing import Any

from .errors import invalid
from .types import ChatPrompt, Prompt, TextPrompt, TokenPrompt


def render_chat(tokenizer: Any, prompt: ChatPrompt) -> str:
    if not prompt.messages:
        raise invalid("messages", "messages must not be empty")
    if not getattr(tokenizer, "has_chat_template", False):
        raise invalid("messages", "this model has no chat template; send a text prompt")
    try:
        return tokenizer.apply_chat_template(
            prompt.messages,
            tools=prompt.tools or None,
            add_generation_prompt=prompt.add_generation_prompt,
            tokenize=False,
            **prompt.template_kwargs,
        )
    except Exception as exc:  # Jinja raises its own errors for bad message shapes.
        raise invalid("messages", f"the chat template rejected the messages: {exc}") from exc


def tokenize_prompt(tokenizer: Any, prompt: Prompt, vocab_size: int) -> tuple[list[int], str]:
    """Returns (token ids, the text the model sees)."""
    if isinstance(prompt, TokenPrompt):
        if not prompt.ids:
            raise invalid("token_ids", "token_ids must not be empty")
        bad = [t for t in prompt.ids if t >= vocab_size]
        if bad:
            raise invalid("token_ids", f"token id {bad[0]} is outside the vocabulary ({vocab_size})")
        return list(prompt.ids), ""
    if isinstance(prompt, TextPrompt):
        if not prompt.text:
            raise invalid("prompt", "prompt must not be empty")
        return list(tokenizer.encode(prompt.text)), prompt.text
    text = render_chat(tokenizer, prompt)
    # The template already wrote any BOS it wants.
    return list(tokenizer.encode(text, add_special_tokens=False)), text
