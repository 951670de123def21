"""Stop strings matched on decoded text, across token boundaries.

Text that could still be the start of a stop string is held back until the
next token decides it, so a matched stop string never leaks into the output.
"""

from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._buffer = ""
        # The text that followed the stop string in the last matching feed.
        self.remainder = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """Adds decoded text; returns (text safe to emit, the matched stop or None)."""
        if not self._stops:
            return text, None
        self._buffer += text
        found: tuple[int, str] | None = None
        for stop in self._stops:
            at = self._buffer.find(stop)
            if at >= 0 and (found is None or at < found[0]):
                found = (at, stop)
        if found is not None:
            at, stop = found
            emit, self.remainder = self._buffer[:at], self._buffer[at + len(stop):]
            self._buffer = ""
            return emit, stop
        keep = self._held_back_length()
        cut = len(self._buffer) - keep
        emit, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return emit, None

    def flush(self) -> str:
        """The held-back text, once no more tokens will come."""
        rest, self._buffer = self._buffer, ""
        return rest

    def _held_back_length(self) -> int:
        """Length of the longest buffer suffix that is a proper prefix of a stop."""
        buffer = self._buffer
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best
