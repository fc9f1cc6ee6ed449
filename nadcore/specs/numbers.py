"""Numbers a job spec may hold: finite, within +-FLOAT_LIMIT and, when not zero, at least the
smallest normal float32 in magnitude. Torch-free, like the specs that use it.

Every float of a spec ends up in float32 arithmetic (inputs, steps, learning rates), where NaN
and infinity poison the result, values past 1e6 overflow activations, and subnormal values
(1e-320) are flushed to zero or lose all precision. Refusing them at validation gives a 422
naming the field instead of a job that "succeeds" with NaN arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, Field

FLOAT_LIMIT = 1e6
FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo(numpy.float32).tiny


def normal(value: float) -> float:
    """`value`, or ValueError when it is past +-FLOAT_LIMIT or subnormal in float32."""
    if abs(value) > FLOAT_LIMIT:
        raise ValueError(f"{value!r} is outside -{FLOAT_LIMIT:g}..{FLOAT_LIMIT:g}")
    if value != 0 and abs(value) < FLOAT32_TINY:
        raise ValueError(f"{value!r} is below the smallest normal float32 ({FLOAT32_TINY:.3g}) "
                         "in magnitude; give 0 or a larger value")
    return value


def all_normal(values: Iterable[float]) -> None:
    """ValueError naming the position of the first float32-subnormal value."""
    for i, v in enumerate(values):
        if v != 0 and abs(v) < FLOAT32_TINY:
            raise ValueError(f"value {i} ({v!r}) is below the smallest normal float32 "
                             f"({FLOAT32_TINY:.3g}) in magnitude; give 0 or a larger value")


# Within +-FLOAT_LIMIT and finite (checked in pydantic's core: cheap for long lists).
Bounded = Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT_LIMIT, le=FLOAT_LIMIT)]
# A scalar setting: finite, within +-FLOAT_LIMIT, not subnormal (the field's own `ge`/`gt`/`le`
# apply on top: the bounds here are checked after them, in `normal`).
Finite = Annotated[float, Field(allow_inf_nan=False), AfterValidator(normal)]
