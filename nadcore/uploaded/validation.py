"""Validation of an uploaded architecture: `validate(path, input_shape, init)` -> its info.

The service runs it only inside the worker's sandbox (`nadcore.uploaded.isolated`, task `validate`),
never in the worker itself. Checks, in order: a TorchScript or torch.export zip (a plain pickle
or a torch.save checkpoint is refused with the export recipe), its metadata and operators
(`nadcore.uploaded.untrusted`), it loads, the init policy can re-draw every parameter, and both the
uploaded network and a re-drawn one map batches of the sizes jobs use (1, 3, a probe or poison
training batch, a finite-difference pixel block of + and - inputs on the CPU) to (B,) or
(B, m) finite floats. The re-drawn network's forward passes are timed (`batch_seconds`): the
worker turns them into the seconds per input that jobs' time budgets use when FLOPs say
little (worker/uploaded.py). The networks jobs use keep what the engine assumes
(`nadcore.uploaded.engine_assumptions`): one output tensor (or the element the upload names), the
same outputs on a second evaluation (and no state written while it runs: TorchScript assigns no
attribute, a torch.export program writes none of its tensors nor its input in place), and each
sample's output independent of the rest of the batch, in a batch of 8 and in the batches of
the sizes above that jobs use (the outputs of the timed pass at those sizes against the same
inputs evaluated in batches of 8).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import torch

from nadcore.networks.init import NetworkSampler
from nadcore.uploaded.archive_format import EXPORT_HOWTO
from nadcore.uploaded.engine_assumptions import (
    FIX,
    AssumptionError,
    check_assumptions,
    check_larger_batches,
    independence_inputs,
    reduction_length,
    select_output,
)
from nadcore.uploaded.network import (
    UploadedArchitectureError,
    UploadedModel,
    load_archive,
    module_rules,
    sniff_format,
)
from nadcore.uploaded.shapes import shape_mismatch
from nadcore.uploaded.state_writes import (
    control_flow_in_program,
    refuse_attribute_state,
    tensors_written_in_forward,
    tensors_written_in_script,
)

SMALL_BATCHES = (1, 3)
TRAINING_BATCH = 128  # the probe and poison default batch size
EXCERPT = 120  # characters of a model's own error text that a reason quotes
_DYNAMIC = ("a torch.export program must be exported with a dynamic batch dimension: "
            "dynamic_shapes=({0: torch.export.Dim('batch')},)")


def excerpt(text: str, limit: int = EXCERPT) -> str:
    """A short, escaped quote of text a model produced (its exception's last line): never more
    than `limit` characters, non-printable and non-ASCII characters escaped."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    quoted = escaped(lines[-1] if lines else "")
    return quoted[:limit] + ("..." if len(quoted) > limit else "")


def escaped(text: str) -> str:
    """`text` on one line of printable ASCII: newlines, terminal escapes and every other
    non-printable or non-ASCII character written as a backslash escape, so that a model's
    words cannot forge a line of a log or drive the terminal that shows it."""
    quoted = text.encode("ascii", "backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in quoted)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {excerpt(str(exc))!r}"


def job_batches(largest: int, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """Batch sizes validation runs: the small ones, a training batch, and the + and - block of
    finite differences that the engine's CPU plan uses for a model whose largest activation
    has `largest` floats per input."""
    from nadcore.nads.schedule import cpu_pixel_block

    block = cpu_pixel_block(largest, math.prod(input_shape))
    return tuple(sorted({*SMALL_BATCHES, TRAINING_BATCH, 2 * block}))


def _outputs(net: torch.nn.Module, fmt: str, input_shape: tuple[int, int, int], what: str,
             gen: torch.Generator, output: str | None,
             batches: tuple[int, ...] = SMALL_BATCHES,
             seconds: dict[int, float] | None = None,
             evaluated: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> int:
    """Runs `net` on batches of each size in `batches`; the number of outputs m (1 for (B,)) of
    the tensor the engine uses (`select_output`). `seconds`, if given, receives each batch's
    forward time; `evaluated` each batch's inputs and outputs (for `check_larger_batches`,
    which thus needs no second pass at the largest sizes)."""
    m = None
    for b in batches:
        x = torch.randn((b, *input_shape), generator=gen)
        try:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = net(x)
            if seconds is not None:
                seconds[b] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 (the model's own error is the reason)
            raised = f"{what} raises on a batch of shape {tuple(x.shape)}: {_short(exc)}"
            mismatch = shape_mismatch(net, fmt, input_shape, b, exc)
            if mismatch is not None:  # which dimension, first; the model's words after
                raise UploadedArchitectureError(f"{mismatch} ({raised})") from None
            hint = f"; {_DYNAMIC}" if fmt == "export" else ""
            if "value per channel when training" in str(exc):  # BatchNorm1d on one sample
                hint = f"; {FIX}"
            raise UploadedArchitectureError(f"{raised}{hint}") from None
        try:
            out = select_output(out, output)
        except AssumptionError as exc:
            raise UploadedArchitectureError(str(exc)) from None
        if out.dim() not in (1, 2) or out.shape[0] != b or 0 in out.shape:
            raise UploadedArchitectureError(
                f"{what} maps a batch of shape {tuple(x.shape)} to outputs of shape "
                f"{tuple(out.shape)}; expected ({b},) or ({b}, m), m >= 1")
        if not out.is_floating_point():
            raise UploadedArchitectureError(f"{what} returns {out.dtype} outputs, expected floats")
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).sum())
            raise UploadedArchitectureError(
                f"{what} returns non-finite outputs (NaN or inf: {bad} of {out.numel()}) on a "
                f"batch of shape {tuple(x.shape)} drawn from N(0, I)")
        m = 1 if out.dim() == 1 else int(out.shape[1])
        if evaluated is not None:
            evaluated[b] = (x, out)
    return int(m)


def validate(path: Path, input_shape: tuple[int, int, int], policy: str,
             output: str | None = None) -> dict:
    """What validation learned (the architecture's `info`); UploadedArchitectureError if bad.
    `output` names the element of a tuple, list or dict output that the engine uses."""
    fmt = sniff_format(path)
    try:
        loaded = load_archive(path, fmt)
    except UploadedArchitectureError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UploadedArchitectureError(
            f"file: the {fmt} archive does not load: {_short(exc)}; {EXPORT_HOWTO}") from None
    if fmt == "torchscript":
        loaded.module.eval()  # an exported graph has its mode built in (and refuses eval())
        try:  # an exported graph holds no attribute assignment: torch.export traces them away
            refuse_attribute_state(loaded.module)
        except AssumptionError as exc:
            raise UploadedArchitectureError(str(exc)) from None
        # in the mode jobs run it (eval: BatchNorm's running statistics stay as they are)
        _refuse_tensor_writes(tensors_written_in_script(loaded.module), _AUTOGRAD_SOME)
    else:  # ... but keeps a write into a buffer, a parameter or the input
        _refuse_control_flow(loaded.module)
        _refuse_tensor_writes(tensors_written_in_forward(loaded.module, loaded.program),
                              _AUTOGRAD_ALL)
    gen = torch.Generator().manual_seed(0)
    m = _outputs(loaded.module, fmt, input_shape, "the uploaded network", gen, output)
    _, unknown = module_rules(loaded)
    model = UploadedModel(loaded, policy, output).eval()  # raises when the policy cannot re-draw
    num_params = sum(p.numel() for p in model.parameters())
    largest = model.activation_profile(input_shape).largest
    batches = job_batches(largest, input_shape)
    what = "the uploaded network"
    if policy != "keep":
        state = NetworkSampler(lambda: model, model, 0, torch.device("cpu")).sample([0])
        with torch.no_grad():
            for name, slot in model.state_dict(keep_vars=True).items():
                slot.copy_(state[name][0])
        what = "a re-initialized network (seed 0, network 0)"
    seconds: dict[int, float] = {}  # at job batch sizes, for the jobs' budgets (jobs/budget.py)
    evaluated: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    _outputs(model.net, fmt, input_shape, what, gen, output, batches, seconds, evaluated)
    started = time.perf_counter()
    length = reduction_length(model.net, largest)
    try:  # on the networks jobs use: re-drawn ones (or the uploaded one, init keep)
        checks: dict = check_assumptions(model, independence_inputs(input_shape, gen), length,
                                         what)
        checks |= check_larger_batches(model, evaluated, length, what)
    except AssumptionError as exc:
        raise UploadedArchitectureError(str(exc)) from None
    del evaluated
    checks["seconds"] = round(time.perf_counter() - started, 4)
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
        "output": output,
        "num_outputs": m,
        "num_params": int(num_params),
        "flops": flops,
        "module_types": dict(sorted(types.items())),
        "params_by_type": dict(sorted(params_by_type.items())),
        "unknown_params": unknown,
        "state_entries": len(model.state_dict()),
        "input_shape": list(input_shape),
        "init": policy,
        "batches": list(batches),
        "batch_seconds": {str(b): round(s, 6) for b, s in seconds.items()},
        "engine_checks": checks,
        "torch": torch.__version__,
    }


# what autograd does with the write: torch.func's grad transform (torch.export programs) refuses
# every write of a captured tensor; TorchScript's plain autograd refuses a write into the input
# or a parameter (leaves that require grad) and lets a buffer's pass, the output then silently
# depending on the calls before
_AUTOGRAD_ALL = "gradient jobs fail (autograd refuses the write)"
_AUTOGRAD_SOME = ("gradient jobs fail on a write into the input or a parameter (autograd "
                  "refuses it)")


def _refuse_tensor_writes(written: dict[str, list[str]], autograd: str) -> None:
    """UploadedArchitectureError naming (bounded, escaped) what a network writes in place when
    it is called (`tensors_written_in_forward` for a torch.export program,
    `tensors_written_in_script` for TorchScript), with the fix."""
    if not written:
        return
    parts = []
    for kind, names in written.items():
        listed = ", ".join(repr(escaped(name)[:40]) for name in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        parts.append(f"{kind}{'' if kind == 'input' else '(s)'} {listed}{more}")
    what = parts[0] if len(parts) == 1 else f"{', its '.join(parts[:-1])} and its {parts[-1]}"
    raise UploadedArchitectureError(
        f"file: the network writes its {what} in place when it is called, so its output could "
        "depend on the calls before (the engine calls each network many times, in batches its "
        f"plan chooses), and {autograd}: keep them constant, computing what changes in "
        "forward as locals and leaving the input unwritten; for BatchNorm, which updates its "
        f"running statistics in training mode, {FIX}")


def _refuse_control_flow(module: torch.nn.Module) -> None:
    """UploadedArchitectureError naming the structured control flow (torch.cond, while_loop,
    map) of a torch.export program (`control_flow_in_program`)."""
    found = control_flow_in_program(module)
    if found:
        raise UploadedArchitectureError(
            f"file: the program uses {', '.join(found)} (data-dependent control flow), which "
            "the engine does not run: its condition decides for a whole batch at once, so a "
            "sample's output could depend on the rest of its batch, and the engine's planning "
            "(the activations of each operator) cannot see inside its branches: export the "
            "branch you use (torch.where selects per sample)")


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
