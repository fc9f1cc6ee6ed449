"""What the `nads` command prints passes one filter: control characters are shown escaped.

Much of what it prints comes from the service (a job's message and error, an architecture's
rejection reason, names, error details), and a hostile or compromised service could put
terminal escape sequences in them: OSC 52 writes the clipboard, OSC 0 the window title, CSI
sequences clear or redraw the screen to hide or forge output. Rather than trust every print to
remember it, `install` wraps stdout and stderr so that C0 and C1 control characters other than
tab and newline, and the bidirectional overrides that reorder text, are written as
`\\x1b`-style escapes. A carriage return is escaped too (a service's `ok\\rFAILED` would
overwrite what came before it on the line); the progress line's own redraw writes its
carriage return past the filter (`carriage_return`).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

_SHOWN = "\t\n"
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))
            if chr(c) not in _SHOWN}
_ESCAPES |= {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def printable(text: str) -> str:
    """`text` with its control characters escaped (see the module's docstring)."""
    return text.translate(_ESCAPES)


class EscapingStream:
    """A text stream that writes `printable` text to the stream it wraps; everything else is
    the wrapped stream's. No `buffer`: a caller that would write bytes past the filter (click
    does, to a stream whose encoding it doubts) finds none and writes text."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text))
        return len(text)

    def carriage_return(self) -> None:
        """Moves to the start of the line: the one control the program itself writes."""
        self._stream.write("\r")

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self._stream, name)


def carriage_return(stream: TextIO) -> None:
    """Writes a carriage return to `stream`, past the filter where it is an EscapingStream."""
    if isinstance(stream, EscapingStream):
        stream.carriage_return()
    else:
        stream.write("\r")


def install() -> None:
    """Wraps sys.stdout and sys.stderr (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, EscapingStream):
            setattr(sys, name, EscapingStream(stream))
