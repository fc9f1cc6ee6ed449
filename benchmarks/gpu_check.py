"""Correctness of the engine on a GPU: GPU (vmap, loop) vs CPU gradients, and whether results
are bitwise independent of the chunk size on the GPU.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import json

import numpy as np
import torch

from nadcore import NADSpec, compute_shard
from nadcore.nads.engine import ShardRunner


def main() -> None:
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    for arch, pixels in (("lenet", range(0, 1024)), ("resnet18", range(200, 328))):
        spec = NADSpec(architecture=arch, num_networks=8)
        cpu = ShardRunner(spec, "cpu")
        gpu = ShardRunner(spec, "cuda")
        state_cpu = cpu.sampler.sample(range(2))
        state_gpu = {k: v.cuda() for k, v in state_cpu.items()}
        ref = cpu.evaluator(state_cpu, pixels).numpy()
        for strategy in ("vmap", "loop"):
            gpu.evaluator.strategy = strategy
            got = gpu.evaluator(state_gpu, pixels).cpu().numpy()
            out[f"{arch}_{strategy}_max_rel_err_vs_cpu"] = float(
                np.abs(got - ref).max() / np.abs(ref).max())
        # the GPU's own init stream differs from the CPU's; check it draws the same law
        g = gpu.sampler.sample(range(64))
        c = cpu.sampler.sample(range(64))
        name = next(k for k in c if k.endswith("weight") and c[k].dim() > 2)
        out[f"{arch}_init_std_ratio_gpu_cpu"] = float(g[name].std().cpu() / c[name].std())
    spec = NADSpec(architecture="lenet", num_networks=300, seed=1)
    for strategy in ("vmap", "loop"):
        # loop: any chunk size; vmap: its aligned default groups, any sharding
        whole = compute_shard(spec, 0, 300, device="cuda", strategy=strategy)
        chunks = (4, 7) if strategy == "loop" else (None, None)
        parts = [compute_shard(spec, lo, hi, device="cuda", strategy=strategy, chunk_size=c)
                 for (lo, hi), c in zip([(0, 131), (131, 300)], chunks, strict=True)]
        same = np.array_equal(whole.gradients,
                              np.concatenate([p.gradients for p in parts]))
        out[f"bitwise_shards_{strategy}"] = bool(same)
        out[f"group_{strategy}"] = whole.meta["plan"]["chunk_size"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
