"""How one family writes a tool call: the type every tool-format module shares.

Its own module so that the format modules (tool_json, tool_xml, tool_header,
harmony) and the registry of formats (tools.py) import it without a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Reader = Callable[[str, Any], tuple["str | None", str, bool]]


@dataclass(frozen=True)
class ToolFormat:
    """How one family writes a tool call."""

    # The marker opening a call; None: the answer itself is the call (JSON first).
    start: str | None
    end: str | None
    parser: Callable[[str, Any], Any]
    # The markers' token ids (one id: an added token the grammar must name as a token).
    start_tokens: tuple[int, ...] = ()
    end_tokens: tuple[int, ...] = ()
    # Where the arguments go in the JSON a forced call writes.
    arguments_key: str = "arguments"
    # Lark for a forced call (tools, this format, added token ids); None: cannot be forced.
    grammar: Callable[[list[dict], ToolFormat, set[int]], str] | None = None
    # Follows one call's text as written: (name, argument JSON so far, complete).
    # None: the call is parsed whole at the end and sent as one delta.
    reader: Reader | None = None
    # Other control tokens the reader needs to see (Mistral's [ARGS], [CALL_ID]).
    extra_tokens: tuple[int, ...] = ()
    # Header formats (tool_header): the markers' ids the grammar names, and how it writes a name.
    tokens: dict[str, int] = field(default_factory=dict)
    name_format: str = "{name}"
    # The reader sees the end marker (GLM: no close inside the call tells it the call ended).
    end_in_body: bool = False
    # Harmony (gpt-oss): its markers' ids; calls are read by harmony.HarmonyReader.
    harmony: dict[str, int] | None = None
