"""Estimating NADs: shards of networks -> partial results -> merge -> decomposition."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np
import torch

from nadcore.control import Cancelled, Progress, ShouldStop
from nadcore.nads.decompose import (
    covariance_from_gradients,
    covariance_from_moments,
    split_half_stability,
    stability_ks,
    top_eigen,
    top_lowrank,
)
from nadcore.nads.gradients import GradientEvaluator, compilable
from nadcore.nads.identifiability import assess
from nadcore.nads.partial import PartialNADs, merge_partials
from nadcore.nads.precision import resolve_precision
from nadcore.nads.schedule import plan_execution, resolve_device
from nadcore.nads.spec import NADSpec
from nadcore.networks.factory import build_model, model_factory
from nadcore.networks.init import NetworkSampler
from nadcore.seeding import eval_point_seed
from nadcore.uploaded.engine_assumptions import BlockCheck, reduction_length
from nadcore.uploaded.network import UploadedModel


def eval_point_for(spec: NADSpec) -> np.ndarray:
    """x0 of the spec: given, or drawn from N(0, I) with the spec's seed (on the CPU)."""
    if spec.eval_point is not None:
        return np.asarray(spec.eval_point, dtype=np.float32).reshape(spec.input_shape)
    gen = torch.Generator().manual_seed(eval_point_seed(spec.seed))
    return torch.randn(spec.input_shape, generator=gen).numpy()


def merge_key(spec: NADSpec) -> str:
    """What partials must share to be merged: everything but N and the stopping rule. An
    explicit precision is part of it; "auto" is left out, so that the keys of specs written
    before the field existed stay what they were."""
    include = {"architecture", "input_shape", "method", "scale", "seed", "eval_point",
               "output_index"}
    if spec.precision != "auto":
        include.add("precision")
    fields = spec.model_dump(include=include)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def device_name(device: torch.device) -> str:
    """The accelerator's or the CPU's model name, for provenance records."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


class RunOptions(TypedDict, total=False):
    """How a spec is run, never what it computes: the device, the chunking and the execution
    strategy (`nadcore.nads.schedule`), and the progress and stop callbacks."""

    device: torch.device | str | None
    chunk_size: int | None
    memory_budget: int | None
    strategy: str | None
    progress: Progress | None
    should_stop: ShouldStop | None


class ShardRunner:
    """Builds the template, sampler and evaluator of a spec once; computes ranges of networks."""

    def __init__(
        self,
        spec: NADSpec,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
        memory_budget: int | None = None,
        strategy: str | None = None,
        compiled: bool = False,
        first_block_local: bool = True,
    ):
        self.spec = spec
        self.device = resolve_device(device)
        shape = tuple(spec.input_shape)
        self.template = build_model(spec.architecture, shape, spec.output_index + 1, "cpu",
                                    at_least=True)
        self.plan = plan_execution(spec, self.template, self.device, chunk_size, memory_budget,
                                   strategy)
        self.template = self.template.to(self.device)
        factory = model_factory(spec.architecture)
        self.sampler = NetworkSampler(
            lambda: factory(shape, spec.output_index + 1).eval(), self.template, spec.seed,
            self.device, self.plan.init,
        )
        self.eval_point = eval_point_for(spec)
        self.precision = resolve_precision(spec, self.device)
        # torch.compile'd forward passes where asked and where they apply (the plan's loop)
        self.compiled = compiled and compilable(self.template, spec.method, self.plan.strategy)
        self.evaluator = GradientEvaluator(
            self.template, torch.as_tensor(self.eval_point, device=self.device), spec.method,
            spec.scale, spec.output_index, self.plan.pixel_block, self.plan.strategy,
            self.plan.channels_last, self.precision, self._block_check(), self.compiled,
            local=first_block_local,
        )
        self.key = merge_key(spec)
        self.representation = spec.representation

    def _block_check(self) -> BlockCheck | None:
        """An uploaded network's finite differences are checked where they run (validation saw
        the CPU's blocks in float32; nadcore.uploaded.engine_assumptions.check_block)."""
        if not isinstance(self.template, UploadedModel) or \
                self.spec.method != "finite_difference" or self.plan.profile is None:
            return None
        profile = self.plan.profile
        what = "the uploaded network" if self.template.policy == "keep" else \
            "a re-initialized network"
        return BlockCheck(reduction_length(self.template, profile.largest), profile.operators,
                          what)

    def gradients(
        self, start: int, stop: int, progress: Progress | None = None,
        should_stop: ShouldStop | None = None, done_offset: int = 0, total: int | None = None,
    ) -> torch.Tensor:
        """(stop-start, D) gradients of networks start..stop-1, chunk by chunk."""
        total = total if total is not None else stop - start
        size = self.plan.chunk_size
        out = torch.empty((stop - start, self.spec.input_dim), dtype=torch.float32)
        # vmap groups are aligned to multiples of the group size (see plan_execution)
        first = (start // size) * size if self.plan.strategy == "vmap" else start
        for group in range(first, stop, size):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after {max(group, start) - start} of "
                                f"{stop - start} networks")
            lo, hi = max(group, start), min(stop, group + size)
            members = range(group, group + size) if self.plan.strategy == "vmap" else \
                range(lo, hi)
            grads = self.evaluator(self.sampler.sample(members, reuse=True)).cpu()
            out[lo - start:hi - start] = grads[lo - members.start:hi - members.start]
            if progress is not None:
                progress(done_offset + hi - start, total)
        return out

    def partial(self, start: int, stop: int, **kwargs) -> PartialNADs:
        t0 = time.perf_counter()
        grads = self.gradients(start, stop, **kwargs)
        meta = {"plan": self.plan.as_dict() | {"compiled": self.compiled,
                                               "first_block_local": self.evaluator.local},
                "seconds": time.perf_counter() - t0, "precision": self.precision,
                "device_name": device_name(self.device), "torch": torch.__version__}
        return PartialNADs.from_gradients(self.key, start, grads, self.eval_point,
                                          self.representation, meta)


def _runner(spec: NADSpec, options: RunOptions) -> ShardRunner:
    unknown = sorted(options.keys() - RunOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"unexpected run option(s): {', '.join(unknown)}")
    return ShardRunner(spec, options.get("device"), options.get("chunk_size"),
                       options.get("memory_budget"), options.get("strategy"))


def compute_shard(spec: NADSpec, start: int, stop: int, **options: Unpack[RunOptions]
                  ) -> PartialNADs:
    """The partial result of networks [start, stop) of `spec` (the unit of work of a worker)."""
    if not 0 <= start < stop <= spec.num_networks:
        raise ValueError(
            f"shard range [{start}, {stop}) must lie within [0, {spec.num_networks})"
        )
    return _runner(spec, options).partial(start, stop, progress=options.get("progress"),
                                          should_stop=options.get("should_stop"))


@dataclass
class NADResult:
    """NADs of an architecture and how they were obtained."""

    nads: np.ndarray  # (k, D) float32, orthonormal rows, descending eigenvalue order
    eigenvalues: np.ndarray  # (k,) float64, eigenvalues of the gradient covariance
    eval_point: np.ndarray  # (C, H, W) float32
    stability: dict[int, float]  # split-half subspace overlap at k
    spec: NADSpec
    num_networks: int  # networks actually used (fewer than spec.num_networks on early stop)
    decomposition: str  # "covariance" or "lowrank"
    info: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def scale(self) -> float | None:
        return self.spec.scale if self.spec.method == "finite_difference" else None

    @property
    def seed(self) -> int:
        return self.spec.seed

    def arrays(self) -> dict[str, np.ndarray]:
        return {"nads": self.nads, "eigenvalues": self.eigenvalues, "eval_point": self.eval_point}

    def summary(self, head: int = 10) -> dict:
        """JSON-able description: provenance, eigenvalue head, split-half stability and what it
        means (`nadcore.nads.identifiability`)."""
        return {
            "architecture": self.spec.model_dump(mode="json")["architecture"],
            "input_shape": list(self.spec.input_shape),
            "method": self.method,
            "scale": self.scale,
            "seed": self.seed,
            "eval_point": "given" if self.spec.eval_point is not None else "N(0, I) from seed",
            "num_networks": self.num_networks,
            "num_nads": int(self.nads.shape[0]),
            "decomposition": self.decomposition,
            "precision_requested": self.spec.precision,
            "eigenvalues_head": [float(v) for v in self.eigenvalues[:head]],
            "stability": {str(k): v for k, v in self.stability.items()},
            "identifiability": assess(self.stability, self.spec.input_dim, self.num_networks,
                                      self.eigenvalues.tolist()),
            **self.info,
        }

    def save_npz(self, path: str | Path) -> None:
        np.savez(path, **self.arrays(),
                 summary=np.frombuffer(json.dumps(self.summary()).encode(), dtype=np.uint8),
                 spec=np.frombuffer(self.spec.model_dump_json().encode(), dtype=np.uint8))

    def save_npy_dir(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, array in self.arrays().items():
            np.save(directory / f"{name}.npy", array)


def _stability(spec: NADSpec, part: PartialNADs, lowrank: bool) -> dict[int, float]:
    n = part.num_networks
    ks = stability_ks(spec.input_dim, n // 2)
    if part.representation == "gradients":
        g = torch.from_numpy(part.gradients)
        if lowrank:
            return split_half_stability(None, None, ks, g[0::2], g[1::2])
        return split_half_stability(covariance_from_gradients(g[0::2]),
                                    covariance_from_gradients(g[1::2]), ks)
    covs = [covariance_from_moments(int(part.count[i]), torch.from_numpy(part.sums[i]),
                                    torch.from_numpy(part.outer[i])) for i in (0, 1)]
    return split_half_stability(covs[0], covs[1], ks)


def finalize(spec: NADSpec, part: PartialNADs) -> NADResult:
    """Decompose merged partials covering networks [0, n) into NADs."""
    if part.start != 0 or part.num_networks < 2:
        raise ValueError(
            f"finalize needs partials covering networks [0, n) with n >= 2, got "
            f"[{part.start}, {part.stop})"
        )
    if part.key != merge_key(spec):
        raise ValueError("finalize: the partial results were computed for another spec")
    n = part.num_networks
    k = min(spec.num_nads, n - 1, spec.input_dim)
    lowrank = spec.uses_lowrank
    if part.representation == "gradients":
        g = torch.from_numpy(part.gradients)
        if lowrank:
            values, vectors = top_lowrank(g, k, seed=spec.seed)
        else:
            values, vectors = top_eigen(covariance_from_gradients(g), k)
    else:
        cov = covariance_from_moments(
            int(part.count.sum()), torch.from_numpy(part.sums.sum(0)),
            torch.from_numpy(part.outer.sum(0)),
        )
        values, vectors = top_eigen(cov, k)
    return NADResult(
        nads=vectors.to(torch.float32).numpy(),
        eigenvalues=values.numpy(),
        eval_point=part.eval_point,
        stability=_stability(spec, part, lowrank),
        spec=spec,
        num_networks=n,
        decomposition="lowrank" if lowrank else "covariance",
        info={"representation": part.representation, **part.meta},
    )


def run_spec(spec: NADSpec, **options: Unpack[RunOptions]) -> NADResult:
    """Run a whole spec in this process, stopping early once `target_stability` is reached."""
    runner = _runner(spec, options)
    progress, should_stop = options.get("progress"), options.get("should_stop")
    n = spec.num_networks
    step = spec.check_every if spec.target_stability is not None else n
    parts: list[PartialNADs] = []
    t0 = time.perf_counter()
    reached = None
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        parts.append(runner.partial(lo, hi, progress=progress, should_stop=should_stop,
                                    done_offset=lo, total=n))
        if spec.target_stability is not None and hi < n:
            merged = merge_partials(parts)
            parts = [merged]
            stab = _stability(spec, merged, spec.uses_lowrank)
            if stab.get(spec.stability_k, 0.0) >= spec.target_stability:
                reached = hi
                break
    result = finalize(spec, merge_partials(parts))
    result.info["seconds"] = time.perf_counter() - t0
    result.info["stopped_early"] = reached is not None
    if spec.target_stability is not None and result.stability.get(spec.stability_k) is None:
        result.info["stability_note"] = (
            f"stability at k={spec.stability_k} needs more than {2 * spec.stability_k} networks"
        )
    return result


def estimate_nads(
    architecture: str,
    input_shape: tuple[int, int, int] = (1, 32, 32),
    num_networks: int = 10_000,
    method: str = "finite_difference",
    scale: float = 100.0,
    seed: int = 0,
    *,
    k: int | None = None,
    eval_point: np.ndarray | None = None,
    output_index: int = 0,
    target_stability: float | None = None,
    stability_k: int = 16,
    check_every: int = 500,
    decomposition: str = "auto",
    precision: str = "auto",
    **options: Unpack[RunOptions],
) -> NADResult:
    """Estimate the NADs of an architecture from `num_networks` random initializations.

    Defaults are the paper's (docs/science.md, section 2): central finite differences with step 100
    along every input axis, networks in eval mode, one evaluation point x0 ~ N(0, I) drawn from
    `seed`, PCA of the centered gradients. `method="autograd"` uses the exact input gradient
    instead (a different quantity; see the README). Network j is drawn from a seed derived from
    (seed, j), so results do not depend on `device`-independent knobs such as `chunk_size`.

    With `target_stability`, networks are added `check_every` at a time until the split-half
    subspace overlap at `stability_k` reaches the target (or `num_networks` is used up).
    `precision` ("auto", "fp32", "tf32", "bf16"; nadcore.nads.precision) sets the arithmetic of the
    forward passes; the summary records the one used.
    The run options (`RunOptions`: `device`, `chunk_size`, `memory_budget`, `strategy` "vmap"
    or "loop", `should_stop`) only change how the work is executed; `progress(done, total)` is
    called after every chunk.
    """
    spec = NADSpec(
        architecture=architecture, input_shape=tuple(input_shape), num_networks=num_networks,
        method=method, scale=scale, seed=seed, k=k, output_index=output_index,
        eval_point=None if eval_point is None
        else np.asarray(eval_point, np.float32).ravel().tolist(),
        target_stability=target_stability, stability_k=stability_k, check_every=check_every,
        decomposition=decomposition, precision=precision,
    )
    return run_spec(spec, **options)


__all__ = ["Cancelled", "NADResult", "RunOptions", "compute_shard", "estimate_nads", "finalize",
           "run_spec"]
