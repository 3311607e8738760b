"""The progress bar draws on a terminal only, and leaves no trace when done."""

from __future__ import annotations

import io

from spanpool.cli._progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_is_drawn_on_a_terminal_and_erased_at_the_end() -> None:
    stream = Terminal()
    with Progress("deleting", total=4, stream=stream, delay=0, interval=0) as bar:
        bar.advance()
        bar.advance(note="half")
        assert "deleting [" in stream.getvalue()
        assert "] 2/4" in stream.getvalue() and "half" in stream.getvalue()
    assert stream.getvalue().endswith("\r")
    assert stream.getvalue().rsplit("\r", 2)[-2].strip() == ""  # the last line drawn is blank


def test_nothing_is_drawn_off_a_terminal_or_before_the_delay() -> None:
    piped = io.StringIO()
    with Progress("listing", stream=piped, delay=0, interval=0) as bar:
        bar.advance(3)
    assert piped.getvalue() == ""
    stream = Terminal()
    with Progress("listing", stream=stream, delay=60) as bar:
        bar.advance()
    assert stream.getvalue() == ""
