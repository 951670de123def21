"""Generated text exactly as the tokenizer decodes it, one token at a time.

mlx-lm's streaming detokenizers drift from ``tokenizer.decode``: its
byte-level BPE one turns the token for byte 0x00 into ``Ā`` (a zero byte is
falsy in its byte lookup) and drops a leading space of the first token. The
reference is the tokenizer's own decode (what Detokenize answers), so this
one decodes a small window of recent tokens with it and emits what the
newest token adds, holding a token back while it ends in an incomplete UTF-8
character (as vLLM's incremental detokenizer does) or while it is a
byte-fallback piece (``<0xC3>``): SentencePiece decodes a run of those as
one, an invalid run becoming one U+FFFD per byte.
"""

from __future__ import annotations

import re
from typing import Any

_INCOMPLETE = "\ufffd"
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class IncrementalDetokenizer:
    """The streaming detokenizer interface output.py uses: add_token, finalize, last_segment."""

    def __init__(self, tokenizer: Any) -> None:
        self._decode = tokenizer.decode
        self._piece = tokenizer.convert_ids_to_tokens
        self.tokens: list[int] = []
        self._prefix = 0  # the window's start: context for the next token's text
        self._read = 0  # tokens before this one were emitted
        self._segment = ""

    def reset(self) -> None:
        self.tokens, self._prefix, self._read, self._segment = [], 0, 0, ""

    def add_token(self, token: int) -> None:
        self.tokens.append(token)
        piece = self._piece(token)
        if not (isinstance(piece, str) and _BYTE_PIECE.fullmatch(piece)):
            self._advance(final=False)

    def finalize(self) -> None:
        """Emits whatever is held, even an incomplete character (as decode would)."""
        self._advance(final=True)

    def _advance(self, final: bool) -> None:
        if self._read == len(self.tokens):
            return
        before = self._decode(self.tokens[self._prefix:self._read])
        after = self._decode(self.tokens[self._prefix:])
        if not final and (after.endswith(_INCOMPLETE) or not after.startswith(before)):
            return
        self._segment += after[len(before):]
        self._prefix, self._read = self._read, len(self.tokens)

    @property
    def last_segment(self) -> str:
        """The text added since the last call."""
        segment, self._segment = self._segment, ""
        return segment
