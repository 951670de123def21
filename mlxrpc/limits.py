"""JSON limits both sides of the gRPC hop check: the sidecar before it parses a
body, the service before it parses a field. Its own module so the gateway
needs nothing from the service.
"""

from __future__ import annotations

import re

import numpy as np

# Deepest nesting of a JSON value a request may carry (schemas, tool
# parameters, template arguments, tool-call arguments).
MAX_JSON_DEPTH = 64

# A JSON string, escapes included; an unterminated one runs to the end. The
# possessive quantifiers keep the scan linear on any input.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1
_CHUNK = 1 << 20


def json_depth(text: str | bytes) -> int:
    """The deepest bracket nesting of a JSON text, ignoring brackets inside strings.

    A linear scan, not a parse: it cannot itself overflow on the input it guards.
    """
    raw = text.encode() if isinstance(text, str) else text
    if b"[" not in raw and b"{" not in raw:
        return 0
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(brackets), _CHUNK):
        steps = _DEPTH_STEP[np.frombuffer(brackets, np.uint8, min(_CHUNK, len(brackets) - start), start)]
        depth = np.cumsum(steps, dtype=np.int64) + level
        deepest, level = max(deepest, int(depth.max())), int(depth[-1])
    return deepest
