"""Stop strings on decoded text: held back until decided, never leaked."""

from mlxrpc.engine.stopping import StopStringMatcher


def feed_all(matcher: StopStringMatcher, pieces: list[str]) -> tuple[str, str | None]:
    out = []
    for piece in pieces:
        text, matched = matcher.feed(piece)
        out.append(text)
        if matched:
            return "".join(out), matched
    return "".join(out) + matcher.flush(), None


def test_stop_split_across_pieces_is_cut_before_the_stop() -> None:
    assert feed_all(StopStringMatcher(["END"]), ["abc E", "N", "Dxyz"]) == ("abc ", "END")


def test_partial_prefix_is_released_when_it_does_not_complete() -> None:
    m = StopStringMatcher(["END"])
    assert m.feed("abE") == ("ab", None)
    assert m.feed("x") == ("Ex", None)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopStringMatcher(["zz", "b"]), ["a", "bzz"]) == ("a", "b")


def test_no_stops_passes_text_through() -> None:
    assert StopStringMatcher([]).feed("hello") == ("hello", None)


def test_unmatched_tail_is_flushed_at_the_end() -> None:
    assert feed_all(StopStringMatcher(["STOP"]), ["hi ST"]) == ("hi ST", None)
