"""Prompt → token ids with the model's tokenizer and chat template.

Pure Python (Hugging Face tokenizers, Jinja templates): safe to call from any
thread, so validation happens before a request reaches the engine thread.
"""

from __future__ import annotations

from typing import Any

from .errors import invalid
from .tool_gemma import fold_tool_results
from .types import ChatPrompt, Prompt, TextPrompt, TokenPrompt

EFFORTS = ("none", "minimal", "low", "medium", "high")


def render_chat(tokenizer: Any, prompt: ChatPrompt) -> str:
    if not prompt.messages:
        raise invalid("messages", "messages must not be empty")
    if not getattr(tokenizer, "has_chat_template", False):
        raise invalid("messages", "this model has no chat template; send a text prompt")
    template = template_source(tokenizer)
    messages = prompt.messages
    if "developer" not in template:
        # OpenAI's newer name for the system role, which most templates do not know.
        messages = [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]
    if "tool_responses" in template:  # Gemma 4: results belong to the calling turn
        messages = fold_tool_results(messages)
    kwargs = {**_effort_kwargs(tokenizer, template, prompt.reasoning_effort), **prompt.template_kwargs}
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=prompt.tools or None,
            add_generation_prompt=prompt.add_generation_prompt,
            tokenize=False,
            **kwargs,
        )
    except Exception as exc:  # Jinja raises its own errors for bad message shapes.
        raise invalid("messages", f"the chat template rejected the messages: {str(exc)[:300]}") from exc


def template_source(tokenizer: Any) -> str:
    """The chat template's text; named templates (Hermes ships "default" and
    "tool_use") joined, since transformers picks among them per request."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = "\n".join(str(t) for t in template.values())
    return template if isinstance(template, str) else ""


def _effort_kwargs(tokenizer: Any, template: str, effort: str) -> dict[str, Any]:
    """reasoning_effort as the template understands it: gpt-oss takes the effort
    itself; thinking templates (Qwen3) can only turn thinking on or off."""
    if not effort:
        return {}
    if effort not in EFFORTS:
        raise invalid("reasoning_effort", f"reasoning_effort must be one of {', '.join(EFFORTS)}")
    if "reasoning_effort" in template:
        if effort in ("none", "minimal"):
            raise invalid("reasoning_effort", "this model reasons at low, medium or high effort")
        return {"reasoning_effort": effort}
    if getattr(tokenizer, "has_thinking", False) or "enable_thinking" in template:
        return {"enable_thinking": effort not in ("none", "minimal")}
    raise invalid("reasoning_effort", "this model's chat template has no reasoning setting")


def tokenize_prompt(tokenizer: Any, prompt: Prompt, vocab_size: int) -> tuple[list[int], str]:
    """Returns (token ids, the text the model sees)."""
    if isinstance(prompt, TokenPrompt):
        if not prompt.ids:
            raise invalid("token_ids", "token_ids must not be empty")
        bad = [t for t in prompt.ids if t >= vocab_size]
        if bad:
            raise invalid("token_ids", f"token id {bad[0]} is outside the vocabulary ({vocab_size})")
        # The text they stand for, so an echo of the input can show it.
        return list(prompt.ids), tokenizer.decode(list(prompt.ids))
    if isinstance(prompt, TextPrompt):
        if not prompt.text:
            raise invalid("prompt", "prompt must not be empty")
        return list(tokenizer.encode(prompt.text)), prompt.text
    text = render_chat(tokenizer, prompt)
    # The template already wrote any BOS it wants.
    return list(tokenizer.encode(text, add_special_tokens=False)), text
