"""The toy kind's worker side (as worker/kinds/<kind>.py would hold it): `RUNNER`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from toy_core import ToyPartial, ToySpec, merge, sum_squares

from worker.kinds.base import NPY, PNG, Claimed, Files, Inputs, Needs, Progress, ShouldStop


class ToyRunner:
    def needs(self, spec: dict) -> Needs:
        return Needs()

    def run_shard(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> ToyPartial:
        return sum_squares(claimed.start, claimed.stop, progress, should_stop)

    def merge(self, spec: dict, inputs: Inputs, folder: Path) -> tuple[Files, dict[str, Any]]:
        partials = [ToyPartial.load(path) for path in inputs.partials]
        return self.result_files(merge(partials), inputs, folder)

    def run_whole(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> ToyPartial:
        return sum_squares(0, ToySpec.model_validate(claimed.spec).count, progress, should_stop)

    def result_files(self, result: ToyPartial, inputs: Inputs, folder: Path
                     ) -> tuple[Files, dict[str, Any]]:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        np.save(folder / "squares.npy", result.squares)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(result.squares, ".")
        fig.savefig(folder / "squares.png")
        plt.close(fig)
        return ([(folder / "squares.npy", NPY), (folder / "squares.png", PNG)],
                {"total": int(result.squares.sum()), "count": int(result.squares.size)})


RUNNER = ToyRunner()
