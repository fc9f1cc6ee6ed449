"""Arithmetic precision of the forward passes: which one a spec gets on a device, and the
context that applies it.

- ``fp32``: IEEE float32 everywhere (TF32 tensor cores off on a GPU).
- ``tf32``: float32 tensors, convolutions and matrix products on TF32 tensor cores (GPU only;
  a CPU has none and computes fp32).
- ``bf16``: the forward passes under ``torch.autocast(dtype=bfloat16)`` (convolutions and
  matrix products in bfloat16, with float32 accumulation inside the kernels); the network's
  output is cast back to float32 before the central difference, and the gradient block, the
  covariance (float64) and the decomposition are computed as for fp32.
- ``auto``: fp32 on a CPU; on a GPU tf32, or bf16 for the architectures listed in
  ``AUTO_BF16`` — those whose bf16 NADs were measured to overlap the fp32 ones by >= 0.99 at
  k = 16 and 64 over 2,000 networks on the GPU (issue 14; none has been measured yet).

fp16 is not offered: with the paper's step of 100 the perturbed inputs are +-100 and the
activations of a randomly initialized network have no bound one could prove below float16's
65,504 (Gaussian or uniform weights of unbounded products over the layers, and uploaded models
of any shape), so an overflow would silently put inf/NaN into the covariance.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator

import torch

from nadcore.nads.spec import NADSpec

# Architectures for which "auto" means bf16 on a GPU: only where the GPU measurement of
# benchmarks/bench_precision.py showed overlap >= 0.99 at k = 16 and 64 (BENCHMARKS.md).
AUTO_BF16: frozenset[str] = frozenset()
# A GPU session that has just measured them (benchmarks/gpu_run.sh) extends the list for its
# own processes through this variable (comma-separated names); the summary records the
# precision every result used either way.
AUTO_BF16_ENV = "NADS_AUTO_BF16"


def auto_bf16() -> frozenset[str]:
    extra = {n.strip() for n in os.environ.get(AUTO_BF16_ENV, "").split(",") if n.strip()}
    return AUTO_BF16 | extra


def native_bf16(device: torch.device) -> bool | None:
    """Whether `device` computes bfloat16 convolutions and matrix products in hardware: a GPU
    that says so; an x86 CPU with AVX512-BF16 or AMX. None where it cannot be told (other
    CPUs). Without it oneDNN emulates bf16, which is slower than fp32, not faster: 22-41x for
    VGG-11, ResNet-18 and DenseNet-121 on an AVX2-only EPYC (benchmarks/cpu_bf16.py)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported",
                                                          "_is_amx_tile_supported")]
    if platform.machine().lower() not in ("x86_64", "amd64") or None in probes:
        return None
    return any(probe() for probe in probes)


def resolve_precision(spec: NADSpec, device: torch.device) -> str:
    """The precision a spec's forward passes run at on `device`: fp32, tf32 or bf16."""
    requested = spec.precision
    if device.type != "cuda":
        return "bf16" if requested == "bf16" else "fp32"
    if requested == "auto":
        return "bf16" if str(spec.architecture) in auto_bf16() else "tf32"
    return requested


@contextlib.contextmanager
def _cuda_tf32(enabled: bool) -> Iterator[None]:
    """TF32 for cuBLAS matrix products and cuDNN convolutions on or off, restored after."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    value = "tf32" if enabled else "ieee"
    if hasattr(matmul, "fp32_precision"):  # the current API; mixing it with allow_tf32 raises
        before = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision, conv.fp32_precision = value, value
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before
        return
    before_flags = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # older torch
    matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before_flags


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Runs the enclosed forward passes at `precision` (a resolved one: fp32, tf32, bf16)."""
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision: {precision!r} is not a resolved precision "
                         "(fp32, tf32 or bf16)")
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_cuda_tf32(precision == "tf32"))
        if precision == "bf16":
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        yield
