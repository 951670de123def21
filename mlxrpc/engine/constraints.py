"""What a request's output must obey: a grammar to enforce, tool calls to extract.

Pure planning on the request side, so impossible combinations are refused
with INVALID_ARGUMENT before the request reaches the engine thread.
"""

from __future__ import annotations

from .errors import EngineError, ErrorCode, invalid
from .harmony import answer_grammar, harmony_tokens
from .registry import LoadedModel
from .structured import Think, check_grammar, grammar_for, tool_call_grammar
from .tool_format import ToolFormat
from .tools import tool_format
from .types import ChatPrompt, GenerationRequest, ToolChoice


def plan_constraints(
    request: GenerationRequest, model: LoadedModel, think: Think | None = None
) -> tuple[str | None, ToolFormat | None]:
    """(grammar to enforce, tool-call format to extract); refuses what cannot be done.

    ``think``: the thinking block the grammar lets the model write first."""
    tools = request.prompt.tools if isinstance(request.prompt, ChatPrompt) else None
    choice = request.tool_choice
    forced = choice in (ToolChoice.REQUIRED, ToolChoice.FUNCTION)
    if forced and not tools:
        raise invalid("tool_choice", f"tool_choice '{choice.value}' needs tools")
    fmt = None
    if tools:
        fmt = tool_format(model.tokenizer)
        if fmt is None:
            raise invalid("tools", f"the chat template of '{model.id}' has no tool-call format")
    grammar = field = None
    if request.response_format is not None:
        if forced:
            raise invalid("response_format", "response_format cannot be combined with a forced tool call")
        grammar, field = grammar_for(request.response_format, think)
        if (ids := harmony_tokens(model.tokenizer)) is not None:
            grammar = answer_grammar(grammar, ids)  # the final channel's content
    elif forced:
        assert tools is not None and fmt is not None
        if fmt.grammar is None:
            raise invalid("tool_choice", f"'{model.id}' writes tool calls in a format that cannot be forced; "
                          "use tool_choice 'auto'")
        selected = tools
        if choice is ToolChoice.FUNCTION:
            selected = [t for t in tools if t["function"]["name"] == request.tool_function]
            if not selected:
                raise invalid("tool_choice", "tool_choice names a function that is not among the tools")
        grammar, field = tool_call_grammar(selected, fmt, _added_token_ids(model), think), "tools"
    if grammar is not None:
        if model.grammar_tokenizer is None:
            raise EngineError(ErrorCode.UNIMPLEMENTED,
                              f"structured output is not available for '{model.id}'")
        check_grammar(grammar, model.grammar_tokenizer, field or "response_format")
    tool_extraction = fmt if tools and choice is not ToolChoice.NONE else None
    return grammar, tool_extraction


def _added_token_ids(model: LoadedModel) -> set[int]:
    """Ids of the tokenizer's added tokens, which grammars must name as tokens."""
    decoder = getattr(model.tokenizer, "added_tokens_decoder", None) or {}
    return {int(i) for i in decoder}
