"""Walks every torchvision classifier, scripted and exported, through the operator allow-list
(nadcore/uploaded/operators.py) and prints what each calls that the list lacks (nothing, when it is
complete). The test suite checks one classifier per family; this checks all of them (about
15 minutes on 2 CPU cores).

    .venv/bin/python scripts/check_operator_allowlist.py
"""

from __future__ import annotations

import sys
import time

import torchvision

from nadcore.uploaded.operators import is_allowed
from nadcore.uploaded.torchvision_operators import classifier_operators


def main() -> int:
    names = torchvision.models.list_models(module=torchvision.models)
    missing_any = False
    for name in names:
        t0 = time.monotonic()
        scripted, exported = classifier_operators(name)
        missing = sorted(op for op in scripted | exported if not is_allowed(op))
        missing_any |= bool(missing)
        print(f"{name:24s} {len(scripted):3d} scripted, {len(exported):3d} exported operators, "
              f"missing: {missing or 'none'} ({time.monotonic() - t0:.1f} s)", flush=True)
    print(f"{len(names)} classifiers; " + ("SOME operators missing" if missing_any
                                           else "every operator allowed"))
    return 1 if missing_any else 0


if __name__ == "__main__":
    sys.exit(main())
