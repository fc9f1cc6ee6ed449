"""Validation of an uploaded architecture, meant to run in a child process with limits:

    python -m nadcore.custom_check ARCHIVE --input-shape C,H,W --init POLICY

prints one JSON line, {"ok": true, "format": ..., "info": {...}} or {"ok": false, "reason":
...}. The service's worker runs it under a wall-time and memory limit (worker/architectures.py)
so that a model that hangs, explodes or crashes takes only the child down.

Checks, in order: a TorchScript or torch.export zip (a plain pickle or a torch.save
checkpoint is refused with the export recipe), it loads, the init policy can re-draw every
parameter, and both the uploaded network and a re-drawn one map batches of 1 and 3 inputs of
the declared shape to (B,) or (B, m) finite floats.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from .custom import (
    EXPORT_HOWTO,
    CustomArchitectureError,
    CustomModel,
    load_archive,
    module_rules,
    sniff_format,
)
from .init import NetworkSampler

BATCHES = (1, 3)
_DYNAMIC = ("a torch.export program must be exported with a dynamic batch dimension: "
            "dynamic_shapes=({0: torch.export.Dim('batch')},)")


def _short(exc: BaseException) -> str:
    """The error's last line (TorchScript puts the original error after two tracebacks)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {text[:500]}" if ":" not in text[:40] else text[:500]


def _outputs(net: torch.nn.Module, fmt: str, input_shape: tuple[int, int, int], what: str,
             gen: torch.Generator) -> int:
    """Runs `net` on batches of BATCHES inputs; the number of outputs m (1 for (B,))."""
    m = None
    for b in BATCHES:
        x = torch.randn((b, *input_shape), generator=gen)
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as exc:  # noqa: BLE001 (the model's own error is the reason)
            hint = f"; {_DYNAMIC}" if fmt == "export" else ""
            raise CustomArchitectureError(
                f"{what} raises on a batch of shape {tuple(x.shape)}: {_short(exc)}{hint}"
            ) from None
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise CustomArchitectureError(
                f"{what} returns {type(out).__name__}, expected a tensor of shape (B,) or (B, m)")
        if out.dim() not in (1, 2) or out.shape[0] != b or 0 in out.shape:
            raise CustomArchitectureError(
                f"{what} maps a batch of shape {tuple(x.shape)} to outputs of shape "
                f"{tuple(out.shape)}; expected ({b},) or ({b}, m), m >= 1")
        if not out.is_floating_point():
            raise CustomArchitectureError(f"{what} returns {out.dtype} outputs, expected floats")
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).sum())
            raise CustomArchitectureError(
                f"{what} returns non-finite outputs (NaN or inf: {bad} of {out.numel()}) on a "
                f"batch of shape {tuple(x.shape)} drawn from N(0, I)")
        m = 1 if out.dim() == 1 else int(out.shape[1])
    return int(m)


def validate(path: Path, input_shape: tuple[int, int, int], policy: str) -> dict:
    """What validation learned (the architecture's `info`); CustomArchitectureError if bad."""
    fmt = sniff_format(path)
    try:
        loaded = load_archive(path, fmt)
    except Exception as exc:  # noqa: BLE001
        raise CustomArchitectureError(
            f"file: the {fmt} archive does not load: {_short(exc)}; {EXPORT_HOWTO}") from None
    if fmt == "torchscript":
        loaded.module.eval()  # an exported graph has its mode built in (and refuses eval())
    gen = torch.Generator().manual_seed(0)
    m = _outputs(loaded.module, fmt, input_shape, "the uploaded network", gen)
    _, unknown = module_rules(loaded)
    model = CustomModel(loaded, policy).eval()  # raises when the policy cannot re-draw
    num_params = sum(p.numel() for p in model.parameters())
    if policy != "keep":
        state = NetworkSampler(lambda: model, model, 0, torch.device("cpu")).sample([0])
        with torch.no_grad():
            for name, slot in model.state_dict(keep_vars=True).items():
                slot.copy_(state[name][0])
        _outputs(model.net, fmt, input_shape, "a re-initialized network (seed 0, network 0)",
                 gen)
    flops = _flops(model, input_shape)
    types: Counter[str] = Counter()
    params_by_type: Counter[str] = Counter()
    for name, p in model.net.named_parameters():
        owner = name.rpartition(".")[0]
        kind = loaded.types.get(owner, "").rsplit(".", 1)[-1] or "unknown"
        params_by_type[kind] += p.numel()
    for path_, type_name in loaded.types.items():
        if path_:
            types[type_name.rsplit(".", 1)[-1]] += 1
    return {
        "format": fmt,
        "num_outputs": m,
        "num_params": int(num_params),
        "flops": flops,
        "module_types": dict(sorted(types.items())),
        "params_by_type": dict(sorted(params_by_type.items())),
        "unknown_params": unknown,
        "state_entries": len(model.state_dict()),
        "input_shape": list(input_shape),
        "init": policy,
        "torch": torch.__version__,
    }


def _flops(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> float | None:
    """FLOPs of one forward pass of one input (torch's FLOP counter: matmuls, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.zeros((1, *input_shape)))
    except Exception:  # noqa: BLE001 (an operator the counter cannot follow: unknown cost)
        return None
    return float(counter.get_total_flops())


_REASON_LIMIT = 4000


def check_in_child(path: Path, input_shape: list[int] | tuple[int, ...], init: str,
                   timeout_s: float, memory_bytes: int) -> tuple[dict | None, str | None]:
    """(info, None) or (None, reason): `validate` in a child process (`python -m
    nadcore.custom_check`) whose memory is limited by RLIMIT_DATA (heap and anonymous
    mappings: torch's library mappings alone exceed any sane address-space limit) and whose
    process group is killed after `timeout_s` seconds. The caller survives whatever the model
    does."""
    def limits() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    cmd = [sys.executable, "-m", "nadcore.custom_check", str(path),
           "--input-shape", ",".join(str(v) for v in input_shape), "--init", init]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    memory = (f"the memory limit of {memory_bytes:,} bytes "
              "(NADS_ARCHITECTURE_VALIDATION_MEMORY_BYTES)")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=limits, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, (f"validation exceeded the time limit of {timeout_s:g} s "
                      "(NADS_ARCHITECTURE_VALIDATION_TIMEOUT_S): the model takes too long to "
                      "load or to run a batch of 3 inputs")
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-3:])
        return None, (f"validation died (exit {proc.returncode}) under {memory}: "
                      f"{tail}")[:_REASON_LIMIT]
    if not result.get("ok"):
        reason = str(result.get("reason"))
        if "allocate" in reason or "out of memory" in reason:
            reason += f" ({memory})"
        return None, reason[:_REASON_LIMIT]
    info = result["info"]
    info["validation_seconds"] = round(time.monotonic() - t0, 3)
    return info, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nadcore.custom_check")
    p.add_argument("archive", type=Path)
    p.add_argument("--input-shape", required=True)
    p.add_argument("--init", default="torch-default")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.input_shape.split(","))
    try:
        info = validate(args.archive, shape, args.init)  # type: ignore[arg-type]
        result = {"ok": True, "format": info["format"], "info": info}
    except (CustomArchitectureError, ValueError) as exc:
        result = {"ok": False, "reason": str(exc)}
    except MemoryError:
        result = {"ok": False, "reason": "validation ran out of memory"}
    print(json.dumps(result, allow_nan=False, default=lambda o: None
                     if isinstance(o, float) and not math.isfinite(o) else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
