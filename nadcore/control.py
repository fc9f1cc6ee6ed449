"""How a caller follows and stops the engine, for every computation (NADs, probes, poison):
`progress(done, total)` after each chunk of work, `should_stop()` checked between chunks, and
`Cancelled` raised when it returned True. Torch-free."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


class Cancelled(RuntimeError):
    """Raised between chunks when `should_stop()` returned True."""
