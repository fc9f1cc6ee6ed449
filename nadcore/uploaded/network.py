"""Users' own architectures: TorchScript archives and torch.export programs.

An archive is found by its sha256 (`register_archive` for a local file), loaded once per
process and wrapped in a `UploadedModel`, which the engine, the probe and the poison trainer use
like a built-in module:

- Format: both are zip archives. TorchScript (`torch.jit.save`) holds `<root>/code/`;
  a torch.export program (`torch.export.save`, `.pt2`) holds `<root>/models/`. A plain pickle or
  a `torch.save` of a module is refused with the export recipe (`sniff_format`).
- Re-initialization: every parameter is re-drawn for each network. `torch-default` draws each
  parameter as PyTorch's default initialization of its module's ORIGINAL type does (the type
  TorchScript records as the submodule's qualified name, or torch.export in each node's
  `nn_module_stack`), with `nadcore.networks.init.module_init_rules`, so an uploaded LeNet draws
  exactly the built-in LeNet's networks. Only `torch.nn` types are recognized (a user class is
  unknown, even one deriving from Conv2d: its reset_parameters may differ); a parameter of an
  unknown type is an error listing them. Buffers of known types are reset (BatchNorm running
  statistics), other buffers keep their uploaded values. `normal:<std>` / `uniform:<bound>`:
  every parameter ~ N(0, std^2) / U(-bound, bound). `keep`: the uploaded tensors (one network).
- Execution: an exported program unlifts to an `fx.GraphModule`, on which `functional_call`,
  `vmap` and `torch.func.grad` work as on any module. PyTorch's stateless API refuses jitted
  modules, so a TorchScript model runs with the LOOP strategy only: `call_with_state` copies one
  network's tensors into the module in place, then calls it (the loop strategy does the same
  for an exported program, where it is faster than functional_call); autograd gradients of
  TorchScript use plain autograd after that copy (a grad transform may not mutate the
  module). Probe and poison train a fresh copy of the module per model (TorchScript: loop
  strategy only); a torch.export program keeps the train/eval behaviour it was exported with
  (its graph fixes BatchNorm and dropout), so export in the mode you want.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad
from torch.utils._python_dispatch import TorchDispatchMode

from nadcore.nads.schedule import ActivationProfile
from nadcore.networks.init import ParamInit, UnknownModuleError, module_init_rules
from nadcore.networks.layers import HeNormalConv2d
from nadcore.specs.architecture import ArchitectureRef, parse_init_policy
from nadcore.uploaded import archive_format
from nadcore.uploaded.archive_format import ArchiveFormatError
from nadcore.uploaded.engine_assumptions import select_output
from nadcore.uploaded.untrusted import RefusedArchive, load_untrusted

_TORCH_NN = "torch.nn.modules."


class UploadedArchitectureError(ValueError):
    """The archive is not a usable architecture; the message says why (and how to fix it)."""


# -- finding archives -------------------------------------------------------------------------
_LOCAL: dict[str, Path] = {}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def register_archive(path: str | Path) -> str:
    """Make a local archive findable by its sha256 (returned)."""
    path = Path(path).resolve()
    sha = file_sha256(path)
    _LOCAL[sha] = path
    return sha


def archive_path(sha256: str) -> Path:
    if sha256 in _LOCAL:
        return _LOCAL[sha256]
    raise UploadedArchitectureError(f"architecture archive {sha256} is not available here")


# -- format and loading -----------------------------------------------------------------------
def sniff_format(source: Path | bytes) -> str:
    """"torchscript" or "export" from the archive's layout (`nadcore.uploaded.archive_format`,
    torch-free, which the API runs too); UploadedArchitectureError otherwise."""
    try:
        return archive_format.sniff_format(source)
    except ArchiveFormatError as exc:
        raise UploadedArchitectureError(str(exc)) from None


def _strip_qualified(name: str) -> str:
    """'__torch__.torch.nn.modules.conv.___torch_mangle_0.Conv2d' ->
    'torch.nn.modules.conv.Conv2d'"""
    parts = [p for p in name.split(".") if not p.startswith("___torch_mangle")]
    if parts and parts[0] == "__torch__":
        parts = parts[1:]
    return ".".join(parts)


@dataclass
class Loaded:
    """A freshly loaded module and the original module type of each submodule path (and, for
    torch.export, the program the module was unlifted from: its graph signature)."""

    module: nn.Module
    format: str
    types: dict[str, str]
    program: torch.export.ExportedProgram | None = None


_ARCHIVE_CHECKS = [True]


def set_archive_checks(on: bool) -> None:
    """Turn `nadcore.uploaded.untrusted`'s checks off (False) or on for this process. Off is for the
    service's tests of the sandbox only (NADS_UNSAFE_SKIP_ARCHIVE_CHECKS)."""
    _ARCHIVE_CHECKS[0] = bool(on)


def load_archive(source: Path | bytes, fmt: str | None = None, *, checks: bool | None = None
                 ) -> Loaded:
    """Load onto the CPU (always a fresh module: callers may train it), through
    `nadcore.uploaded.untrusted`: the archive's metadata and every operator of its graphs are
    checked before anything of it runs (UploadedArchitectureError naming what was refused); `checks`
    defaults to the process's setting (`set_archive_checks`)."""
    fmt = fmt or sniff_format(source)
    checks = _ARCHIVE_CHECKS[0] if checks is None else checks
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        loaded = load_untrusted(data, fmt, checks=checks)
    except RefusedArchive as exc:
        raise UploadedArchitectureError(str(exc)) from None
    if fmt == "torchscript":
        module = loaded.module
        types = {n: _strip_qualified(m._c.qualified_name) for n, m in module.named_modules()}
        return Loaded(module, fmt, types)
    types = {}
    for node in loaded.program.graph.nodes:
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            mod_path, mod_type = entry[0], entry[1]
            types.setdefault(mod_path, mod_type if isinstance(mod_type, str) else
                             f"{mod_type.__module__}.{mod_type.__qualname__}")
    return Loaded(loaded.module, fmt, types, loaded.program)


@lru_cache(maxsize=8)
def _archive_bytes(sha256: str) -> bytes:
    data = archive_path(sha256).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UploadedArchitectureError(f"architecture archive {sha256}: stored bytes do not hash "
                                      "to their name")
    return data


def load_ref(ref: ArchitectureRef) -> Loaded:
    """The archive of `ref` (found by its sha256, verified), loaded fresh."""
    if ref.sha256 is None:
        raise UploadedArchitectureError(
            f"architecture {ref.id}: the spec records no sha256 of the archive (the service "
            "fills it in when it stores a job)")
    return load_archive(_archive_bytes(ref.sha256))


# -- re-initialization ------------------------------------------------------------------------
# nadcore's own layers that the built-in architectures use, recognized by name like torch.nn's
# (an uploaded built-in, e.g. the paper's VGG, then draws exactly the built-in's networks).
# Archives exported before a move of the layers record the module they had then (issue 16:
# nadcore.architectures -> nadcore.layers; issue 28: -> nadcore.networks.layers).
_OWN_LAYERS: dict[str, type[nn.Module]] = {
    f"{HeNormalConv2d.__module__}.{HeNormalConv2d.__qualname__}": HeNormalConv2d,
    "nadcore.layers.HeNormalConv2d": HeNormalConv2d,
    "nadcore.architectures.HeNormalConv2d": HeNormalConv2d,
}


def _torch_nn_class(type_name: str) -> type[nn.Module] | None:
    """The torch.nn class (or nadcore layer) of a recorded type name, or None (user classes
    are never imported)."""
    if type_name in _OWN_LAYERS:
        return _OWN_LAYERS[type_name]
    if not type_name.startswith(_TORCH_NN):
        return None
    cls = getattr(nn, type_name.rsplit(".", 1)[1], None)
    if isinstance(cls, type) and issubclass(cls, nn.Module) and \
            f"{cls.__module__}.{cls.__qualname__}" == type_name:
        return cls
    return None


def _stand_in(cls: type[nn.Module], entries: dict[str, torch.Tensor], params: set[str]
              ) -> nn.Module:
    """An instance of `cls` with meta tensors of the entries' shapes, for module_init_rules."""
    mod = cls.__new__(cls)
    nn.Module.__init__(mod)
    for attr, t in entries.items():
        meta = torch.empty(t.shape, dtype=t.dtype, device="meta")
        if attr in params:
            mod.register_parameter(attr, nn.Parameter(meta, requires_grad=False))
        else:
            mod.register_buffer(attr, meta)
    for attr in ("weight", "bias"):
        if attr not in entries:
            mod.register_parameter(attr, None)
    if isinstance(mod, nn.modules.conv._ConvNd) and "weight" in entries:
        mod.out_channels = int(entries["weight"].shape[0])  # what HeNormalConv2d's std reads
        mod.kernel_size = tuple(int(v) for v in entries["weight"].shape[2:])
    return mod


def module_rules(loaded: Loaded, prefix: str = "") -> tuple[dict[str, ParamInit], list[str]]:
    """PyTorch's default rule of every state-dict entry whose module type is known, and the
    names of the parameters whose module type is not (with their types)."""
    module = loaded.module
    params = {n for n, _ in module.named_parameters()}
    by_owner: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        owner, _, attr = name.rpartition(".")
        by_owner.setdefault(owner, {})[attr] = t
    rules: dict[str, ParamInit] = {}
    unknown: list[str] = []
    for owner, entries in by_owner.items():
        type_name = loaded.types.get(owner, "")
        cls = _torch_nn_class(type_name)
        own_params = {a for a in entries if (f"{owner}.{a}" if owner else a) in params}
        try:
            if cls is None:
                raise UnknownModuleError(type_name)
            stand_in = _stand_in(cls, entries, own_params)
            for rule in module_init_rules(stand_in, f"{prefix}{owner}." if owner else prefix):
                rules[rule.name] = rule
        except UnknownModuleError:
            what = type_name.rsplit(".", 1)[-1] or "no recorded module"
            unknown += [f"{owner + '.' if owner else ''}{a} ({what})"
                        for a in sorted(own_params)]
    return rules, unknown


def build_plan(loaded: Loaded, policy: str, prefix: str = "") -> list[ParamInit]:
    """The init plan of every state-dict entry (prefixed), in state-dict order, for `policy`.
    Raises UploadedArchitectureError listing the parameters whose default init is unknown."""
    kind, value = parse_init_policy(policy)
    module = loaded.module
    params = {n for n, _ in module.named_parameters()}
    state = module.state_dict()
    rules, unknown = module_rules(loaded, prefix)
    if kind == "torch-default" and unknown:
        raise UploadedArchitectureError(
            "init: no default initialization known for the parameters "
            f"{', '.join(unknown)}; choose init normal:<std>, uniform:<bound> or keep, or "
            "build the model from torch.nn modules (Conv*, Linear, BatchNorm*, LayerNorm, "
            "GroupNorm, Embedding)")
    plan = []
    for name, t in state.items():
        full = prefix + name
        shape, dtype = tuple(t.shape), t.dtype
        if kind == "keep":
            plan.append(ParamInit(full, shape, "copy", 0.0, dtype, t.detach().clone()))
        elif kind in ("normal", "uniform") and name in params:
            plan.append(ParamInit(full, shape, kind, float(value), dtype))
        elif full in rules:
            plan.append(rules[full])
        else:  # a buffer of a module type with no rule: keep its uploaded value
            plan.append(ParamInit(full, shape, "copy", 0.0, dtype, t.detach().clone()))
    return plan


# -- the module the engine uses ---------------------------------------------------------------
class UploadedModel(nn.Module):
    """An uploaded architecture as an engine module: `net` is the loaded module; its output (the
    element `output` of a tuple, list or dict output) of shape (B,) becomes (B, 1).
    `init_plan()` is what `nadcore.networks.init.init_plan` uses for it."""

    def __init__(self, loaded: Loaded, policy: str = "torch-default", output: str | None = None):
        super().__init__()
        self.net = loaded.module
        self.output = output
        self.format = loaded.format
        self.types = loaded.types
        self.policy = policy
        self._plan = build_plan(loaded, policy, prefix="net.")
        # TorchScript: no stateless API, hence the loop strategy and in-place loading
        self.supports_vmap = loaded.format == "export"
        self.has_conv = any(".conv." in t for t in loaded.types.values())
        self._slots = dict(self.state_dict(keep_vars=True))

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        out = super()._apply(fn, *args, **kwargs)
        self._slots = dict(self.state_dict(keep_vars=True))  # .to() replaces buffers
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = select_output(self.net(x), self.output)
        return out.unsqueeze(1) if out.dim() == 1 else out

    def train(self, mode: bool = True) -> UploadedModel:
        self.training = mode
        if self.format == "torchscript":
            self.net.train(mode)
        return self  # an exported graph fixed its train/eval behaviour when it was exported

    def activation_profile(self, input_shape: tuple[int, ...]) -> ActivationProfile:
        """Per-input output sizes of every operator of one forward pass (hooks cannot see
        inside a TorchScript or exported graph; the dispatcher sees every operator)."""
        sizes = _operator_sizes(self, input_shape)
        params = sum(p.numel() for p in self.parameters())
        return ActivationProfile(max(sizes + [math.prod(input_shape)]), sum(sizes), params,
                                 len(sizes))

    def init_plan(self) -> list[ParamInit]:
        return list(self._plan)

    def input_gradient(self, state: dict[str, torch.Tensor], x0: torch.Tensor, output: int
                       ) -> torch.Tensor:
        """d f_output / d x at x0 (flattened) of the network whose tensors are `state`:
        torch.func.grad over functional_call for an exported program (vmap-able); plain
        autograd after loading the state in place for TorchScript (a grad transform may not
        mutate the module's tensors)."""
        if self.supports_vmap:
            return grad(lambda x: functional_call(self, state, (x.unsqueeze(0),))[0, output]
                        )(x0).reshape(-1)
        x = x0.detach().unsqueeze(0).requires_grad_(True)
        with torch.enable_grad():
            value = self.call_with_state(state, x)[0, output]
            return torch.autograd.grad(value, x)[0].reshape(-1)

    def call_with_state(self, state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The output of the network whose tensors are `state`. Inside a torch.func transform
        (vmap over stacked states, grad) an exported program goes through functional_call;
        otherwise the tensors are copied in place, which is cheaper: functional_call over an
        exported GraphModule costs ~10 ms per call (LeNet, CPU), more than the forward pass."""
        if self.supports_vmap and torch._C._functorch.maybe_current_level() is not None:
            return functional_call(self, state, (x,))
        with torch.no_grad():
            for name, slot in self._slots.items():
                slot.copy_(state[name])
        return self(x)


def uploaded_model(ref: ArchitectureRef, device: torch.device | str | None = None) -> UploadedModel:
    """A fresh UploadedModel of `ref` in eval mode, with its uploaded tensors."""
    model = UploadedModel(load_ref(ref), ref.policy, ref.output)
    return model.to(device or "cpu").eval()


def num_outputs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(model(torch.zeros((2, *input_shape))).shape[1])


def check_outputs(model: UploadedModel, ref: ArchitectureRef, input_shape: tuple[int, ...],
                  needed: int, exact: bool) -> None:
    """At least (or exactly) `needed` outputs, or UploadedArchitectureError naming them."""
    m = num_outputs(model, input_shape)
    if m < needed or (exact and m != needed):
        want = f"exactly {needed}" if exact else f"at least {needed}"
        raise UploadedArchitectureError(
            f"architecture {ref.id} has {m} output(s); this job needs {want}")


class _Sizes(TorchDispatchMode):
    """Per-input sizes of the operator outputs that carry the batch (weights' views do not)."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.sizes: list[int] = []
        self.error: BaseException | None = None  # the operator's own error (see below)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        try:
            out = func(*args, **(kwargs or {}))
        except BaseException as exc:
            self.error = exc
            raise
        if isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == self.batch:
            self.sizes.append(out.numel() // self.batch)
        return out


def _operator_sizes(model: nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = 3  # a batch size no weight dimension is likely to share
    x = torch.zeros((batch, *input_shape), device=device)
    rec = _Sizes(batch)
    try:
        with torch.no_grad(), rec:
            model(x)
    except Exception:
        # TorchScript turns an error raised inside a dispatch mode into an unrelated
        # SystemError; the operator's own (e.g. "can't allocate memory") says what happened
        if rec.error is not None and isinstance(rec.error, Exception):
            raise rec.error from None
        raise
    return rec.sizes
