"""nadcore.uploaded.engine_assumptions: one output tensor, determinism, per-sample independence,
and the float32 tolerance they are judged with.

The tolerance must be loose enough for real networks (the five built-ins and torchvision
classifiers, eval mode: no refusal, with the margin measured) and tight enough to catch a
network that mixes samples only slightly (a mixing three times the tolerance is refused, a
third of it is not: the line is where the derivation puts it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nadcore.networks.factory import build_model
from nadcore.uploaded.engine_assumptions import (
    EPS32,
    FIX,
    INDEPENDENCE_BATCH,
    AssumptionError,
    check_assumptions,
    describe_structure,
    reduction_length,
    rounding_tolerance,
    select_output,
)
from nadcore.uploaded.state_writes import tensors_written_in_script
from tests.helpers import save_archive


def _check(net: nn.Module, shape: tuple[int, int, int], seed: int = 0) -> dict[str, float]:
    from nadcore.nads.schedule import activation_profile

    largest = activation_profile(net, shape).largest
    x = torch.randn((INDEPENDENCE_BATCH, *shape), generator=torch.Generator().manual_seed(seed))
    return check_assumptions(net, x, reduction_length(net, largest))


def test_the_tolerance_bounds_float32_sums_in_two_orders() -> None:
    """The derivation's case: n terms summed in float32 forwards, backwards and pairwise (torch's
    sum) differ by less than rounding_tolerance(n, sum |t_i|), and the float64 sum lies within
    it too; with terms of both signs the bound uses sum |t_i| (the caller's magnitude)."""
    gen = torch.Generator().manual_seed(1)
    for n in (10, 1_000, 100_000):
        for terms in (torch.rand(n, generator=gen), torch.randn(n, generator=gen)):
            forwards = torch.cumsum(terms, 0)[-1]  # sequential, float32
            backwards = torch.cumsum(terms.flip(0), 0)[-1]
            pairwise = terms.sum()
            exact = terms.double().sum()
            tol = rounding_tolerance(n, float(terms.abs().sum()))
            for a, b in ((forwards, backwards), (forwards, pairwise), (backwards, pairwise)):
                assert abs(float(a) - float(b)) <= tol, (n, float(a), float(b), tol)
            assert abs(float(forwards) - float(exact)) <= tol / 2
    assert rounding_tolerance(100, 2.0) == pytest.approx(100 * 2.0 * 2**-23)
    assert EPS32 == 2**-23


def test_reduction_length_sums_fan_ins_and_the_largest_activation() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28 * 28, 10),
                        nn.BatchNorm1d(10))
    # conv: 3 x 5 x 5 = 75 terms per output; linear: 6,272; BatchNorm's 1-d weight: none
    assert reduction_length(net, 6272) == 75 + 6272 + 6272


BUILTINS = [("logreg", (1, 32, 32)), ("lenet", (1, 32, 32)), ("vgg11", (3, 32, 32)),
            ("resnet18", (3, 32, 32)), ("densenet121", (3, 32, 32)),
            ("torchvision:resnet18", (3, 64, 64)),
            ("torchvision:mobilenet_v3_small", (3, 64, 64)),
            ("torchvision:efficientnet_b0", (3, 64, 64))]


@pytest.mark.parametrize(("arch", "shape"), BUILTINS)
def test_no_false_refusal_of_networks_in_eval_mode(arch: str, shape: tuple) -> None:
    """Measured on this machine's CPU: the largest difference alone/reordered is at most
    1.4e-3 of the tolerance (logreg, batch 1 vs 8 take different matmul kernels); a margin of
    100 is asserted."""
    torch.manual_seed(0)
    net = build_model(arch, shape, 10, "cpu").eval()
    found = _check(net, shape)
    assert found["repeat"] == 0.0
    assert max(found["alone"], found["reordered"]) <= found["tolerance"] / 100, found


def _bn_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def test_train_mode_batchnorm_is_refused_with_the_fix() -> None:
    torch.manual_seed(0)
    net = _bn_cnn().train()
    with pytest.raises(AssumptionError, match="mixes the samples of a batch") as exc:
        _check(net, (1, 8, 8))
    assert FIX in str(exc.value) and str(exc.value).startswith("file: ")
    assert _check(net.eval(), (1, 8, 8))["alone"] <= _check(net, (1, 8, 8))["tolerance"]


def test_dropout_is_refused_as_not_deterministic() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    with pytest.raises(AssumptionError, match="not deterministic.*model.eval()"):
        _check(net.train(), (1, 8, 8))
    _check(net.eval(), (1, 8, 8))


class _SlightlyMixed(nn.Module):
    """LeNet's outputs plus `strength` x the batch mean of a per-sample statistic: sample i's
    output moves by strength x |s_i - mean(s)| between the batch and alone."""

    def __init__(self, strength: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_model("lenet", (1, 32, 32), 10, "cpu").eval()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1, keepdim=True)
        return self.net(x) + self.strength * s.mean(0, keepdim=True)


def test_a_slight_mixing_is_judged_where_the_tolerance_puts_the_line() -> None:
    shape = (1, 32, 32)
    clean = _check(_SlightlyMixed(0.0), shape)
    x = torch.randn((INDEPENDENCE_BATCH, *shape), generator=torch.Generator().manual_seed(0))
    s = x.flatten(1).mean(1)
    spread = float((s - s.mean()).abs().max())  # the shift of the worst sample, per strength
    # LeNet on 1x32x32 sums fan-ins 25 + 150 + 400 + 120 + 84 = 779 and its largest activation
    # is 6 x 28 x 28 = 4,704 floats: n = 5,483, the tolerance 5,483 x 2**-23 x max |output|
    # (~8e-5 here). A mixing three times that is refused, a third of it passes.
    with torch.no_grad():
        magnitude = float(_SlightlyMixed(0.0)(x).abs().max())
    assert clean["tolerance"] == pytest.approx(5483 * 2**-23 * magnitude, rel=1e-6)
    for factor, refused in ((3.0, True), (1 / 3, False)):
        net = _SlightlyMixed(factor * clean["tolerance"] / spread)
        if refused:
            with pytest.raises(AssumptionError, match="sample .* changes by"):
                _check(net, shape)
        else:
            found = _check(net, shape)
            assert 0.25 < found["alone"] / found["tolerance"] < 0.4, found


def test_output_structures_are_named_or_refused() -> None:
    a, b = torch.zeros(3, 10), torch.ones(3, 5)
    assert select_output(a, None) is a
    with pytest.raises(AssumptionError, match=r"^output: the network returns one tensor"):
        select_output(a, "0")
    with pytest.raises(AssumptionError, match=r"^output: the network returns "
                       r"tuple\(Tensor\(3, 10\), Tensor\(3, 5\)\), not one tensor.*0\.\.1"):
        select_output((a, b), None)
    assert select_output((a, b), "1") is b and select_output([a, b], "0") is a
    with pytest.raises(AssumptionError, match="'2' is not an element"):
        select_output((a, b), "2")
    with pytest.raises(AssumptionError, match="keys 'logits', 'aux'"):
        select_output({"logits": a, "aux": b}, None)
    assert select_output({"logits": a, "aux": b}, "aux") is b
    with pytest.raises(AssumptionError, match="is not a tensor"):
        select_output(((a, b), b), "0")
    with pytest.raises(AssumptionError, match=r"^file: the network returns NoneType"):
        select_output(None, None)
    assert describe_structure({"x": [a] * 9}) == (
        "dict(x: list(" + ", ".join(["Tensor(3, 10)"] * 8) + ", ...))")


class _CountsCalls(nn.Module):
    """A plain network until its 41st call, then a constant: state kept in a TorchScript
    attribute, which the engine's loading of each network's tensors does not reset."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)
        self.calls: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * 0.0 if self.calls > 40 else out


def test_an_attribute_assigned_in_forward_is_refused(tmp_path) -> None:  # noqa: ANN001
    """Two evaluations at validation cannot see a change after the 40th call; before the
    refusal it was accepted and its NADs changed with the sharding of the same spec."""
    import warnings

    from nadcore.uploaded.network import UploadedArchitectureError
    from nadcore.uploaded.validation import validate

    path = tmp_path / "counts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_CountsCalls().eval()), str(path))
    with pytest.raises(UploadedArchitectureError, match="assigns its attribute.*'calls'"):
        validate(path, (1, 6, 6), "torch-default")


# -- per-sample independence at the batch sizes jobs use ----------------------------------------
class _MixesAboveSixteen(nn.Module):
    """Independent in batches of up to 16 (the checks' batch of 8 and its samples alone), the
    batch mean subtracted above: what the engine's finite-difference blocks (72 and more
    inputs) and training batches (128) would measure."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 16:
            x = x - x.mean(0, keepdim=True)
        return self.fc(x.flatten(1))


class _MixesAboveSixteenSmoothly(nn.Module):
    """The same mixing without a branch, for torch.export: a weight clamp(B - 16, 0, 1) that is
    0 up to a batch of 16 and 1 above (export refuses a Python branch on a dynamic batch
    dimension: it guards the batch to at most 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (torch.ones(()) * x.shape[0] - 16).clamp(0, 1)
        return self.fc((x - weight * x.mean(0, keepdim=True)).flatten(1))




@pytest.mark.parametrize(("module", "suffix"), [(_MixesAboveSixteen, "pt"),
                                                (_MixesAboveSixteenSmoothly, "pt2")])
def test_a_network_that_mixes_samples_only_in_larger_batches_is_refused(tmp_path, module,
                                                                        suffix) -> None:  # noqa: ANN001
    """A batch of 8 cannot see a mixing that starts above 16; before this check such a network
    was accepted and its NADs measured the batch (jobs succeeded with wrong results). Each
    sample of every job batch size above 8 (here 72, the finite-difference block of a 1x6x6
    input, and 128) must keep its output when the same inputs run in batches of 8."""
    from nadcore.uploaded.network import UploadedArchitectureError
    from nadcore.uploaded.validation import validate

    path = save_archive(module().eval(), tmp_path / f"mixes.{suffix}")
    with pytest.raises(UploadedArchitectureError) as exc:
        validate(path, (1, 6, 6), "torch-default")
    message = str(exc.value)
    assert message.startswith("file: a re-initialized network (seed 0, network 0) mixes the "
                              "samples of a batch: the output of sample "), message
    assert " of a batch of 72 changes by " in message, message
    assert f"evaluated in batches of {INDEPENDENCE_BATCH} (float32 rounding explains " in message
    assert "finite differences would measure the batch, not the network" in message


@pytest.mark.parametrize("suffix", ["pt", "pt2"])
def test_networks_independent_at_every_batch_size_report_the_larger_batches(tmp_path,
                                                                           suffix) -> None:  # noqa: ANN001
    """A network that mixes nothing (BatchNorm in eval mode, ReLU in place: no write of its
    state either) passes, and validation reports, for each job batch size above 8, how far its
    outputs moved from those of batches of 8 and the tolerance: 1/65 of it here (a few float32
    spacings, where the tolerance of so small a network, 137 terms, is about 200 spacings of its
    largest output), 1.5e-6 of it for DenseNet-121 at 1x32x32; a margin of 10 is asserted."""
    from nadcore.uploaded.validation import validate

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    info = validate(save_archive(net, tmp_path / f"plain.{suffix}"), (1, 6, 6), "torch-default")
    checks = info["engine_checks"]
    assert info["batches"] == [1, 3, 72, 128]
    assert set(checks["larger_batches"]) == set(checks["larger_batches_tolerance"]) == {"72",
                                                                                       "128"}
    for b, difference in checks["larger_batches"].items():
        assert difference <= checks["larger_batches_tolerance"][b] / 10, checks


# -- a torch.export program writes none of its tensors ------------------------------------------
class _CountsCallsInABuffer(nn.Module):
    """Adds 1 to a buffer at each call: torch.export keeps the in-place add."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)
        self.register_buffer("calls", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls[0].add_(1)  # through a view: the write reaches the buffer all the same
        return self.fc(x.flatten(1))


class _WritesItsInput(nn.Module):
    """Rectifies the caller's batch in place (the same outputs twice: determinism passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.relu_().flatten(1))


def _functional(module: nn.Module, path):  # noqa: ANN001
    """A .pt2 of `module` run through run_decompositions: the writes become the program's
    outputs, listed by its graph signature (buffers_to_mutate, user_inputs_to_mutate)."""
    program = torch.export.export(module, (torch.randn((2, 1, 6, 6)),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program.run_decompositions({}), str(path))
    return path


@pytest.mark.parametrize(("case", "written"), [
    ("counter", "buffer(s) 'calls'"),
    ("counter, functional", "buffer(s) 'calls'"),
    ("batchnorm in training mode", "buffer(s) '1.num_batches_tracked', '1.running_mean', "
                                   "'1.running_var'"),
    ("input", "input 'x'"),
    ("input, functional", "input 'x'"),
])
def test_a_program_that_writes_its_tensors_is_refused_naming_them(tmp_path, case,
                                                                  written) -> None:  # noqa: ANN001
    """A buffer updated in place (a call counter; BatchNorm exported in training mode updates
    running_mean, running_var and num_batches_tracked) was accepted by validation (the counter;
    the BatchNorm as mixing samples, with no word of its state), then every autograd job
    failed: 'During a grad (vjp, jvp, grad, etc) transform, the function provided attempted to
    call in-place operation (aten::add_.Tensor) that would mutate a captured Tensor'. Writing
    the caller's input in place passed too. Refused at validation, naming what is written, in
    the training IR torch.export writes (in-place operators) and in a functional program
    (its graph signature)."""
    from nadcore.uploaded.network import UploadedArchitectureError
    from nadcore.uploaded.validation import validate

    torch.manual_seed(0)
    path = tmp_path / "writes.pt2"
    if case == "counter":
        save_archive(_CountsCallsInABuffer().eval(), path)
    elif case == "counter, functional":
        _functional(_CountsCallsInABuffer().eval(), path)
    elif case == "batchnorm in training mode":
        save_archive(_bn_cnn().train(), path, (1, 8, 8))
    elif case == "input":
        save_archive(_WritesItsInput().eval(), path)
    else:
        _functional(_WritesItsInput().eval(), path)
    shape = (1, 8, 8) if case.startswith("batchnorm") else (1, 6, 6)
    with pytest.raises(UploadedArchitectureError) as exc:
        validate(path, shape, "torch-default")
    message = str(exc.value)
    assert message.startswith(f"file: the network writes its {written} in place when it is "
                              "called"), message
    assert "keep them constant" in message and FIX in message, message


# -- a TorchScript network writes none of its tensors -------------------------------------------
class _WritesItsTensorsInScript(nn.Module):
    """In-place writes TorchScript compiles as operators, not attribute assignments (no
    prim::SetAttr): a counter buffer (also through a view), a parameter scaled, a buffer
    overwritten with a batch statistic; the forward's intermediates rectified in place (no
    state: not named)."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
        self.fc = nn.Linear(36, 2)
        self.register_buffer("calls", torch.zeros(2))
        self.register_buffer("running", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.what == "counter":
            self.calls.add_(1)
        elif self.what == "counter through a view":
            self.calls[0].add_(1)
        elif self.what == "counter through a dict":  # Dict(str, t) carries no annotation
            held = {"calls": self.calls}
            held["calls"].add_(1)
        elif self.what == "parameter":
            self.fc.weight.mul_(0.5)
        elif self.what == "running statistic":
            self.running.copy_(x.mean())
        elif self.what == "input":
            x.relu_()
        out = self.fc(x.flatten(1))
        torch.relu_(out)  # a tensor the forward made: no state
        return torch.nn.functional.relu(out, inplace=True) + self.running


@pytest.mark.parametrize(("what", "written"), [
    ("counter", "buffer(s) 'calls'"),
    ("counter through a view", "buffer(s) 'calls'"),
    ("counter through a dict", "buffer(s) 'calls'"),
    ("parameter", "parameter(s) 'fc.weight'"),
    ("running statistic", "buffer(s) 'running'"),
    ("input", "input 'x'"),
])
def test_a_torchscript_network_that_writes_its_tensors_is_refused_naming_them(
        tmp_path, what, written) -> None:  # noqa: ANN001
    """`self.calls.add_(1)`, `self.fc.weight.mul_(0.5)`, `self.running.copy_(x.mean())` and
    `x.relu_()` are no attribute assignment: `attributes_set_in_forward` missed them and
    validation accepted them (the counter, the parameter, the input: two evaluations of a
    batch agree) or refused the running statistic, which the output adds, only as mixing the
    samples of a batch, with no word of the write. Refused before the network runs, naming
    them, from the inlined graph and its operators' schemas."""
    from nadcore.uploaded.network import UploadedArchitectureError
    from nadcore.uploaded.validation import validate

    torch.manual_seed(0)
    path = save_archive(_WritesItsTensorsInScript(what).eval(), tmp_path / "writes.pt")
    with pytest.raises(UploadedArchitectureError) as exc:
        validate(path, (1, 6, 6), "torch-default")
    message = str(exc.value)
    assert message.startswith(f"file: the network writes its {written} in place when it is "
                              "called"), message
    assert "keep them constant" in message and FIX in message, message


class _Counted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _count_calls(module: _Counted, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
    module.seen.add_(1)


def _rectify_input(module: nn.Module, inputs: tuple[torch.Tensor]) -> None:
    inputs[0].relu_()


@pytest.mark.parametrize(("hook", "written"), [("forward hook", "buffer(s) '0.seen'"),
                                               ("pre-hook", "input 'input'")])
def test_a_torchscript_hook_that_writes_tensors_is_refused(tmp_path, hook,
                                                           written) -> None:  # noqa: ANN001
    """Scripted hooks run with forward: a submodule's forward hook counting calls in its
    buffer, a pre-hook of the top module rectifying the caller's batch."""
    from nadcore.uploaded.network import UploadedArchitectureError
    from nadcore.uploaded.validation import validate

    torch.manual_seed(0)
    counted = _Counted()
    net = nn.Sequential(counted)
    if hook == "forward hook":
        counted.register_forward_hook(_count_calls)
    else:
        net.register_forward_pre_hook(_rectify_input)
    with pytest.raises(UploadedArchitectureError) as exc:
        validate(save_archive(net.eval(), tmp_path / "hooked.pt"), (1, 6, 6), "torch-default")
    assert str(exc.value).startswith(f"file: the network writes its {written} in place "), exc


def test_a_torchscript_network_writing_only_its_own_intermediates_is_accepted(tmp_path
                                                                               ) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    from nadcore.uploaded.validation import validate

    path = save_archive(_WritesItsTensorsInScript("nothing").eval(), tmp_path / "plain.pt")
    assert validate(path, (1, 6, 6), "torch-default")["format"] == "torchscript"


def test_torchscript_batchnorm_writes_its_statistics_only_in_training_mode() -> None:
    """Validation and jobs run a TorchScript network in eval mode, where BatchNorm's
    `if self.training: self.num_batches_tracked.add_(1)` and aten::batch_norm's update of the
    running statistics do not run; in training mode both are found."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_bn_cnn().train())
    assert tensors_written_in_script(scripted) == {
        "buffer": ["1.num_batches_tracked", "1.running_mean", "1.running_var"]}
    assert tensors_written_in_script(scripted.eval()) == {}


@pytest.mark.parametrize(("arch", "shape"), [
    ("lenet", (1, 32, 32)), ("vgg11", (3, 32, 32)), ("resnet18", (3, 32, 32)),
    ("densenet121", (3, 32, 32)), ("torchvision:resnet18", (3, 64, 64)),
    ("torchvision:densenet121", (3, 64, 64)), ("torchvision:vgg11", (3, 64, 64)),
    ("torchvision:mobilenet_v3_small", (3, 64, 64)),
    ("torchvision:efficientnet_b0", (3, 64, 64))])
def test_no_builtin_nor_torchvision_script_is_found_writing_its_tensors(arch: str,
                                                                        shape: tuple) -> None:
    """Their in-place ReLUs (DenseNet's 120, ResNet's, VGG's) and `out += identity` write
    tensors the forward made: no state."""
    import warnings

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(build_model(arch, shape, 10, "cpu").eval())
    assert tensors_written_in_script(scripted) == {}


# -- structured control flow in a torch.export program ------------------------------------------
class _Cond(nn.Module):
    """torch.cond on a batch statistic (its condition is one value for the whole batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        return torch.cond(x.sum() > 0, lambda y: y * 2.0, lambda y: y - 1.0, (out,))


class _WhileLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(36, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._higher_order_ops.while_loop import while_loop

        _, out = while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 0.5),
                            (torch.zeros((), dtype=torch.long), self.fc(x.flatten(1))))
        return out


@pytest.mark.parametrize(("module", "named"), [(_Cond, "torch.cond"),
                                               (_WhileLoop, "torch.while_loop")])
def test_a_program_with_structured_control_flow_is_refused_naming_it(tmp_path, module,
                                                                     named) -> None:  # noqa: ANN001
    """The operator allow-list loads torch.cond and while_loop; validation then failed with a
    bare NotImplementedError ('There was no rule registered for HigherOrderOperator cond and
    mode <..._Sizes ...>') from the activation profile. Refused before the network runs,
    naming it, with the fix."""
    from nadcore.uploaded.network import UploadedArchitectureError
    from nadcore.uploaded.validation import validate

    torch.manual_seed(0)
    path = save_archive(module().eval(), tmp_path / "flow.pt2")
    with pytest.raises(UploadedArchitectureError) as exc:
        validate(path, (1, 6, 6), "torch-default")
    message = str(exc.value)
    assert message.startswith(f"file: the program uses {named} (data-dependent control "
                              "flow), which "), message
    assert message.endswith("export the branch you use (torch.where selects per sample)")
