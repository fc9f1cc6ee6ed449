"""Is bf16 faster than fp32 on this CPU? One forward pass of the catalog's built-ins at the
engine's block size (128 inputs of 1x32x32, eval mode, one thread), in fp32 and under bf16
autocast (as `precision: bf16` runs them: nadcore/nads/precision.py), converted to seconds per
network of the paper's finite differences (2,048 passes). Where the CPU has native bf16
(AVX512-BF16 or AMX: `native_bf16`) bf16 is about twice as fast; where it has not, oneDNN
emulates it and it is tens of times slower (BENCHMARKS.md, Catalog on the CPU).

    python benchmarks/cpu_bf16.py [--bf16-batch 16] [ARCH ...]

bf16 is timed on a smaller batch where it is slow (--bf16-batch, scaled to 128). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from nadcore.nads.engine import device_name
from nadcore.nads.precision import native_bf16
from nadcore.networks import zoo

NETWORKS = {"vgg11": zoo.VGG11, "resnet18": zoo.ResNet18, "densenet121": zoo.DenseNet121}
BLOCK, PASSES = 128, 2 * 32 * 32


def seconds_per_block(model: torch.nn.Module, batch: int, bf16: bool) -> float:
    x = torch.randn(batch, 1, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)  # warm-up: oneDNN picks its kernels
        t0 = time.perf_counter()
        model(x)
        return (time.perf_counter() - t0) * BLOCK / batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", nargs="*", default=list(NETWORKS))
    ap.add_argument("--bf16-batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    result = {"device": device_name(cpu), "native_bf16": native_bf16(cpu),
              "capability": torch.backends.cpu.get_cpu_capability(),
              "torch": torch.__version__, "threads": 1, "networks": {}}
    for arch in args.arch:
        model = NETWORKS[arch]((1, 32, 32), 1).eval()
        fp32 = seconds_per_block(model, BLOCK, False) * PASSES / BLOCK
        bf16 = seconds_per_block(model, args.bf16_batch, True) * PASSES / BLOCK
        result["networks"][arch] = {"fp32_s_per_network": round(fp32, 1),
                                    "bf16_s_per_network": round(bf16, 1),
                                    "bf16_over_fp32": round(bf16 / fp32, 2)}
        print(json.dumps({arch: result["networks"][arch]}), flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
