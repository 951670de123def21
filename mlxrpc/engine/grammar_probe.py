"""A grammar tried on the vocabulary before admission, so its failures are the request's 400.

llguidance compiles some grammars it cannot then follow: text the vocabulary
has only as a special token (forcing ``<tool_call>`` as text where it is
special: the forced bytes tokenize to the special token, which the grammar
then rejects), lexers that explode (``(x{1000}){1000}``), parser rows past
its limit (10,000 choices). Those surface within the first steps, so a short
walk of a copy of the matcher (forced tokens, else the first allowed token)
finds them at admission instead of as a failure mid-generation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import invalid

_STEPS = 6
_MAX_FORCED = 2048


def probe_grammar(grammar: str, llg_tokenizer: Any, field: str) -> None:
    """INVALID_ARGUMENT naming ``field`` and llguidance's reason when the walk fails."""
    from llguidance import LLMatcher

    matcher = LLMatcher(llg_tokenizer, grammar, log_level=0)
    for _ in range(_STEPS):
        if matcher.is_error() or matcher.is_stopped():
            break
        forced = matcher.compute_ff_tokens()[:_MAX_FORCED]
        if forced:
            valid = matcher.validate_tokens(forced)
            if valid < len(forced):
                reason = _refused(llg_tokenizer, forced[valid])
                raise invalid(field, f"{field} cannot be followed by this model: {reason}")
            matcher.consume_tokens(forced)
            continue
        bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = np.flatnonzero(bits)
        if matcher.is_error():
            break
        if not len(allowed):
            raise invalid(field, f"{field} cannot be followed by this model: it allows no token")
        matcher.consume_token(int(allowed[0]))
    if matcher.is_error():
        error = matcher.get_error().strip().splitlines()[0]
        raise invalid(field, f"{field} cannot be followed by this model: {error[:300]}")


def _refused(llg_tokenizer: Any, token: int) -> str:
    piece = llg_tokenizer.dbg_tokens([token])
    if llg_tokenizer.is_special_token(token):
        return f"the text it requires is a special token here ({piece}), which grammars cannot write as text"
    return f"the text it requires tokenizes to {piece}, which the grammar then refuses"
