"""What a request's output must obey: a grammar to enforce, tool calls to extract.

Pure planning at submit time, so impossible combinations are refused with
INVALID_ARGUMENT before the request reaches the engine thread.
"""

from __future__ import annotations

from .errors import EngineError, ErrorCode, invalid
from .registry import LoadedModel
from .structured import check_grammar, grammar_for, tool_call_grammar
from .tools import tool_markers
from .types import ChatPrompt, GenerationRequest, ToolChoice


def plan_constraints(
    request: GenerationRequest, model: LoadedModel
) -> tuple[str | None, tuple | None]:
    """(grammar to enforce, tool-call format to extract); refuses what cannot be done."""
    tools = request.prompt.tools if isinstance(request.prompt, ChatPrompt) else None
    choice = request.tool_choice
    forced = choice in (ToolChoice.REQUIRED, ToolChoice.FUNCTION)
    if forced and not tools:
        raise invalid("tool_choice", f"tool_choice '{choice.value}' needs tools")
    markers = None
    if tools:
        markers = tool_markers(model.tokenizer)
        if markers is None:
            raise invalid("tools", f"the chat template of '{model.id}' has no tool-call format")
    grammar = field = None
    if request.response_format is not None:
        if forced:
            raise invalid("response_format", "response_format cannot be combined with a forced tool call")
        grammar, field = grammar_for(request.response_format)
    elif forced:
        assert tools is not None and markers is not None
        selected = tools
        if choice is ToolChoice.FUNCTION:
            selected = [t for t in tools if t["function"]["name"] == request.tool_function]
            if not selected:
                raise invalid("tool_choice", f"tool_choice names '{request.tool_function}', "
                              "which is not among the tools")
        grammar, field = tool_call_grammar(selected, markers[0], markers[1] or ""), "tools"
    if grammar is not None:
        if model.grammar_tokenizer is None:
            raise EngineError(ErrorCode.UNIMPLEMENTED,
                              f"structured output is not available for '{model.id}'")
        check_grammar(grammar, model.grammar_tokenizer, field or "response_format")
    tool_format = markers if tools and choice is not ToolChoice.NONE else None
    return grammar, tool_format
