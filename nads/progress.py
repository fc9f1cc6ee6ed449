"""The progress display of `nads submit --wait` and `nads wait`.

On a terminal: one line, redrawn in place (`\\r`) after every poll. Anywhere else (a pipe, a log
file, CI): a line only when the job's state or its whole percent changes, so a long job logs
at most ~100 lines per state instead of one per poll.
"""

from __future__ import annotations

import shutil
from typing import TextIO

from nads.terminal import carriage_return

BAR = 24  # characters of the bar


def bar_line(label: str, status: str, fraction: float, message: str, width: int = BAR) -> str:
    """`label [#########.......]  40%  running  message` (fraction clamped to [0, 1])."""
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * width)
    bar = "#" * filled + "." * (width - filled)
    line = f"{label} [{bar}] {int(fraction * 100):>3d}%  {status}"
    return f"{line}  {message}" if message else line


class ProgressDisplay:
    """Feed it every poll (`update`); call `close` once the job is done."""

    def __init__(self, stream: TextIO, label: str, tty: bool | None = None) -> None:
        self.stream, self.label = stream, label
        self.tty = stream.isatty() if tty is None else tty
        self._last: tuple[str, int] | None = None
        self._width = 0  # of the line drawn last (terminal), to blank what a shorter one leaves

    def update(self, status: str, fraction: float, message: str) -> None:
        line = bar_line(self.label, status, fraction, message)
        if self.tty:  # cut to the terminal's width: a wrapped line cannot be redrawn by \r
            line = line[:max(20, shutil.get_terminal_size().columns - 1)]
            pad = " " * max(0, self._width - len(line))
            carriage_return(self.stream)  # the message's own \r are shown escaped
            self.stream.write(line + pad)
            self._width = len(line)
        else:
            key = (status, int(min(1.0, max(0.0, fraction)) * 100))
            if key == self._last:
                return
            self._last = key
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
