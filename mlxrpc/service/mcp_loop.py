"""The server-side tool loop of a request that sets ``mcp_tools``.

The allowed MCP tools are offered to the model as ordinary function tools named
``SERVER__TOOL``. When the model calls them, the service runs them, appends the
call and its result to the conversation and generates again, until the model
answers without an MCP call, calls a client tool (returned to the client as
usual), or ``--mcp-max-steps`` generations have run (the last one may not call
tools, so it answers). Each step is submitted through the servicer's own path,
so batching, queue limits, cancellation and Abort (by the request id, which
stays the same across steps) apply as to any request.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..engine.errors import EngineError, ErrorCode, invalid
from ..v1 import inference_pb2 as pb
from .mcp import McpManager, McpTool, ToolOutcome

# Runs one generation step through the servicer's own path, as stream messages.
Submit = Callable[[pb.GenerateRequest], AsyncIterator[pb.GenerateStreamResponse]]


@dataclass
class _Plan:
    base: pb.GenerateRequest  # the request with the MCP tools as function tools
    tools: dict[str, McpTool]  # by SERVER__TOOL name


class McpLoop:
    def __init__(self, manager: McpManager, max_steps: int) -> None:
        self._manager = manager
        self._max_steps = max_steps

    def plan(self, request: pb.GenerateRequest) -> _Plan:
        """Checks the request's toolsets and offers their tools (before any generation)."""
        if request.WhichOneof("input") != "chat":
            raise invalid("mcp_tools", "mcp_tools need chat input")
        tools: dict[str, McpTool] = {}
        for i, toolset in enumerate(request.mcp_tools):
            for tool in self._manager.toolset(toolset.server_label, list(toolset.allowed_tools), f"mcp_tools[{i}]"):
                tools[tool.full_name] = tool
        for i, tool in enumerate(request.tools):
            if tool.function.name in tools:
                raise invalid(f"tools[{i}]", f"the function '{tool.function.name}' has the name of an MCP tool")
        base = pb.GenerateRequest()
        base.CopyFrom(request)
        base.ClearField("mcp_tools")
        for tool in tools.values():
            base.tools.add(type="function", function=pb.FunctionDefinition(
                name=tool.full_name, description=tool.description, parameters_json=json.dumps(tool.parameters)))
        return _Plan(base, tools)

    async def stream(self, request: pb.GenerateRequest, submit: Submit) -> AsyncIterator[pb.GenerateStreamResponse]:
        """Each step's deltas as they come, each MCP call and result as it happens, one final finish."""
        plan = self.plan(request)
        started = time.perf_counter()
        messages = list(plan.base.chat.messages)
        usage, first_timings = pb.Usage(), None
        request_id = ""
        for step in range(1, self._max_steps + 1):
            texts: list[str] = []
            finish = None
            async for message in submit(self._step_request(plan.base, messages, step, request_id)):
                # The loop runs MCP calls itself and passes the client's on whole, at the end.
                message.ClearField("tool_call_deltas")
                if message.HasField("finish"):
                    finish = pb.Finish()
                    finish.CopyFrom(message.finish)
                    message.ClearField("finish")
                if request_id:
                    message.ClearField("request_id")
                    message.ClearField("model")
                else:  # the first message of the whole loop names the request
                    request_id = message.request_id
                texts.append(message.text)
                if message.ByteSize():
                    yield message
            if finish is None:
                raise EngineError(ErrorCode.INTERNAL, "a generation step ended without a result")
            _add_usage(usage, finish.usage)
            first_timings = first_timings or pb.Timings(
                queue_seconds=finish.timings.queue_seconds,
                time_to_first_token_seconds=finish.timings.time_to_first_token_seconds)
            mcp_calls = [c for c in finish.tool_calls if c.name in plan.tools]
            client_calls = [c for c in finish.tool_calls if c.name not in plan.tools]
            if mcp_calls:
                results = []
                for call in mcp_calls:
                    yield pb.GenerateStreamResponse(tool_event=pb.ToolEvent(call=call))
                    outcome = await self._run(plan.tools[call.name], call.arguments_json)
                    result = pb.ToolResult(call_id=call.id, name=call.name, content=outcome.content,
                                           is_error=outcome.is_error)
                    results.append(result)
                    yield pb.GenerateStreamResponse(tool_event=pb.ToolEvent(result=result))
                messages += _turn("".join(texts), mcp_calls, results)
                if not client_calls:
                    continue
                del finish.tool_calls[:]
                finish.tool_calls.extend(client_calls)
            finish.usage.CopyFrom(usage)
            finish.usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
            finish.timings.queue_seconds = first_timings.queue_seconds
            finish.timings.time_to_first_token_seconds = first_timings.time_to_first_token_seconds
            finish.timings.total_seconds = time.perf_counter() - started
            yield pb.GenerateStreamResponse(finish=finish)
            return

    def _step_request(self, base: pb.GenerateRequest, messages: list[pb.ChatMessage], step: int,
                      request_id: str) -> pb.GenerateRequest:
        request = pb.GenerateRequest()
        request.CopyFrom(base)
        del request.chat.messages[:]
        request.chat.messages.extend(messages)
        if step > 1:
            request.request_id = request_id  # one id for the whole loop, so Abort finds it
            request.options.echo_input = request.options.prompt_logprobs = False
            choice = request.tool_choice
            if choice.WhichOneof("choice") == "function_name" or choice.mode == pb.ToolChoice.MODE_REQUIRED:
                choice.mode = pb.ToolChoice.MODE_AUTO  # a forced call is forced once, or it never ends
        if step == self._max_steps:
            request.tool_choice.mode = pb.ToolChoice.MODE_NONE  # the last step answers
        return request

    async def _run(self, tool: McpTool, arguments_json: str) -> ToolOutcome:
        try:
            arguments = json.loads(arguments_json) if arguments_json.strip() else {}
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            message = "the arguments are not a JSON object"
            return ToolOutcome(f"Error: {message}", is_error=True, error_message=message)
        return await self._manager.run(self._manager.connections[tool.server], tool.name, arguments)


def _turn(text: str, calls: list[pb.ToolCall], results: list[pb.ToolResult]) -> list[pb.ChatMessage]:
    """The assistant's calls and the tools' answers, as the next step's model reads them."""
    assistant = pb.ChatMessage(role="assistant", tool_calls=calls)
    if text:
        assistant.content.add(text=text)
    return [assistant, *(pb.ChatMessage(role="tool", tool_call_id=r.call_id, name=r.name,
                                        content=[pb.ContentPart(text=r.content)]) for r in results)]


def _add_usage(total: pb.Usage, step: pb.Usage) -> None:
    total.prompt_tokens += step.prompt_tokens
    total.completion_tokens += step.completion_tokens
    total.cached_tokens += step.cached_tokens
    total.reasoning_tokens += step.reasoning_tokens
