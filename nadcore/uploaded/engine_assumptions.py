"""What the engine assumes of an uploaded network, checked at validation
(`nadcore.uploaded.validation`):

- one output tensor: the network returns a tensor of shape (B,) or (B, m), or the upload names
  which element of its tuple, list or dict output to use (`output`); an unnamed structure is
  refused, naming it, never silently cut to its first element;
- determinism: two evaluations of the same batch agree, and a TorchScript network assigns none
  of its attributes while it runs (`attributes_set_in_forward`): an attribute that counts calls
  or keeps the last output survives the engine's loading of each network's tensors, so a
  network's output would depend on how many calls came before it (the chunking, the device's
  plan, the sharding), which two evaluations at validation cannot see (an output that changes
  after the 40th call passed them and gave NADs that change with the shards);
- no state written: a torch.export program writes none of its parameters, buffers or
  constants, nor its input, in place (`tensors_written_in_forward`). A call counter, or
  BatchNorm exported in training mode (which updates running_mean, running_var and
  num_batches_tracked), makes the output depend on the calls before, and every gradient job
  failed on it ("attempted to call in-place operation (aten::add_.Tensor) that would mutate
  a captured Tensor" inside torch.func's grad transform; on the input: "a view of a leaf
  Variable that requires grad is being used in an in-place operation"). Nor does a
  TorchScript network, in the eval mode jobs run it in (`tensors_written_in_script`): an
  in-place write (`self.calls.add_(1)`, `self.running.copy_(...)`) is no attribute
  assignment: a counter in a buffer passed validation, though each job's output would depend
  on the calls before (autograd refuses only a write into the input or a parameter);
- no structured control flow in a torch.export program (`control_flow_in_program`):
  torch.cond's condition is one value for the whole batch, and the engine's activation
  profile cannot run it (it failed validation with a bare NotImplementedError);
- per-sample independence: each sample's output is the same alone, in the batch, and in the
  batch in another order (`check_assumptions`, a batch of INDEPENDENCE_BATCH), and in a batch
  of every size jobs use above it (`check_larger_batches`: the training batch and the CPU
  plan's finite-difference block, evaluated again in batches of INDEPENDENCE_BATCH). Finite
  differences and batched gradients evaluate many perturbed inputs in one batch; a network
  whose outputs depend on the rest of the batch (BatchNorm in training mode, dropout, any
  batch statistic) then measures the batch, not the network. A batch of 8 alone cannot see a
  network that mixes only in larger batches (a branch on the batch size): one that subtracted
  the batch mean above 16 inputs passed it and its jobs succeeded with NADs of the batch.

"The same" means within what float32 rounding explains (`rounding_tolerance`): a batch of 1
and a batch of 8 may run different kernels that add the same terms in another order.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

# float32 machine epsilon, 2**-23: twice the unit roundoff u = 2**-24 of round-to-nearest.
EPS32 = torch.finfo(torch.float32).eps
INDEPENDENCE_BATCH = 8  # samples compared alone, in the batch and in the batch reversed
FIX = ("call model.eval() before torch.export.export or torch.jit.script (in training mode "
       "BatchNorm uses the batch's statistics and dropout draws a new mask each call)")


class AssumptionError(ValueError):
    """The network breaks an assumption of the engine; the message says which, and the fix."""


# -- one output tensor --------------------------------------------------------------------------
def describe_structure(value: object, depth: int = 0) -> str:
    """'tuple(Tensor(3, 10), Tensor(3, 5))', 'dict(logits: Tensor(3, 10), ...)': what a network
    returned, for a refusal (bounded: the first 8 entries, 3 levels)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    if depth >= 3:
        return type(value).__name__
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe_structure(v, depth + 1) for v in value[:8])
        return f"{type(value).__name__}({inner}{', ...' if len(value) > 8 else ''})"
    if isinstance(value, dict):
        items = list(value.items())
        inner = ", ".join(f"{str(k)[:40]}: {describe_structure(v, depth + 1)}"
                          for k, v in items[:8])
        return f"dict({inner}{', ...' if len(items) > 8 else ''})"
    return type(value).__name__


def _choices(value: tuple | list | dict) -> str:
    if isinstance(value, dict):
        return "one of the keys " + ", ".join(repr(str(k)[:40]) for k in list(value)[:8])
    return f"an index 0..{len(value) - 1}"


def select_output(value: object, output: str | None) -> torch.Tensor:
    """The tensor the engine uses of what the network returned: the tensor itself (with no
    `output` named), or element `output` of a tuple or list (an index) or a dict (a key).
    AssumptionError naming the structure otherwise."""
    if isinstance(value, torch.Tensor):
        if output is not None:
            raise AssumptionError(f"output: the network returns one tensor "
                                  f"({describe_structure(value)}); leave output unset")
        return value
    if not isinstance(value, (tuple, list, dict)) or not value:
        raise AssumptionError(f"file: the network returns {describe_structure(value)}, "
                              "expected a tensor of shape (B,) or (B, m)")
    if output is None:
        raise AssumptionError(
            f"output: the network returns {describe_structure(value)}, not one tensor; name the "
            f"element to use with the upload's field output ({_choices(value)})")
    if isinstance(value, dict):
        keys = {str(k): k for k in value}
        found = output in keys
        chosen = value[keys[output]] if found else None
    else:
        found = output.isdigit() and int(output) < len(value)
        chosen = value[int(output)] if found else None
    if not found:
        raise AssumptionError(f"output: {output[:40]!r} is not an element of what the network "
                              f"returns, {describe_structure(value)} (give {_choices(value)})")
    if not isinstance(chosen, torch.Tensor):
        raise AssumptionError(f"output: element {output[:40]!r} of "
                              f"{describe_structure(value)} is not a tensor")
    return chosen


# -- the tolerance ------------------------------------------------------------------------------
def reduction_length(net: nn.Module, largest_activation: int) -> int:
    """An upper bound on how many float32 terms an output accumulates on its way through the
    network: every weight's fan-in (a Linear's in_features, a Conv's in_channels/groups x
    kernel area: the length of the dot product each of its outputs is), summed over the layers,
    plus one reduction over the largest activation (a pooling or a normalization over a whole
    feature map)."""
    fan_ins = sum(p.numel() // p.shape[0] for p in net.parameters() if p.dim() >= 2)
    return int(fan_ins + largest_activation)


def rounding_tolerance(length: int, magnitude: float) -> float:
    """How far two float32 evaluations of the same outputs may differ when only the order of
    their sums changes (another batch size picks another kernel and blocking).

    A sum of n terms t_i computed in any order is within gamma_(n-1) * sum |t_i| of the exact
    sum, gamma_k = k u / (1 - k u) ~ k u, u = 2**-24 (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., eq. 4.4); two orders thus differ by at most
    2 (n - 1) u sum |t_i| < n * EPS32 * sum |t_i|. Layer after layer these first-order errors
    add, so n is the summed reduction length of the network (`reduction_length`). The terms'
    size sum |t_i| is not observable from outside; it is taken as the largest |output| of the
    batch, which is the terms' size for a network at its initialization (no layer cancels much
    larger terms). The bound is the worst case: rounding errors of random sign grow like
    sqrt(n) u, so the tolerance leaves a margin of about 2 sqrt(n) over typical differences
    (measured in BENCHMARKS.md). The smallest normal float32 keeps an all-zero output exact."""
    return float(length * EPS32 * magnitude + torch.finfo(torch.float32).tiny)


# -- determinism and per-sample independence ----------------------------------------------------
def _largest_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """max |a - b| and the sample (row) where it is."""
    diff = (a - b).abs().reshape(a.shape[0], -1).amax(dim=1)
    worst = int(diff.argmax())
    return float(diff[worst]), worst


def check_assumptions(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      length: int, what: str = "the network") -> dict[str, float]:
    """Refuses (AssumptionError, field `file`, with the fix) a network that is not
    deterministic or whose samples' outputs depend on the rest of the batch; `forward` maps a
    batch to its (B, m) output tensor, `x` is a batch of INDEPENDENCE_BATCH inputs and
    `length` the network's `reduction_length`. Returns the measured differences and the
    tolerance (for the validation report)."""
    with torch.no_grad():
        batch = forward(x)
        again = forward(x)
        tol = rounding_tolerance(length, float(batch.abs().max()))
        repeat, _ = _largest_difference(batch, again)
        if not repeat <= tol:
            raise AssumptionError(
                f"file: {what} is not deterministic: two evaluations of the same batch differ "
                f"by up to {repeat:.3g} (float32 rounding explains {tol:.3g}); a random layer "
                f"such as dropout is active: {FIX}")
        alone = torch.cat([forward(x[i:i + 1]) for i in range(x.shape[0])])
        order = torch.arange(x.shape[0] - 1, -1, -1)
        reordered = forward(x[order])[order]  # reversing is its own inverse
        worst = {}
        for name, other in (("alone", alone), ("in the batch reversed", reordered)):
            worst[name] = _largest_difference(batch, other)
    for name, (value, sample) in worst.items():
        if not value <= tol:
            raise AssumptionError(
                f"file: {what} mixes the samples of a batch: the output of sample {sample} of "
                f"a batch of {x.shape[0]} changes by {value:.3g} when it is evaluated {name} "
                f"(float32 rounding explains {tol:.3g}), so finite differences would measure "
                f"the batch, not the network; {FIX}")
    return {"tolerance": tol, "repeat": repeat, "alone": worst["alone"][0],
            "reordered": worst["in the batch reversed"][0]}


def check_larger_batches(forward: Callable[[torch.Tensor], torch.Tensor],
                         evaluated: dict[int, tuple[torch.Tensor, torch.Tensor]], length: int,
                         what: str = "the network") -> dict[str, dict[str, float]]:
    """Per-sample independence at the batch sizes jobs use: `evaluated` maps a batch size b to
    its inputs and the outputs `forward` gave them in one batch (the pass validation makes at
    the job's batch sizes anyway, reused); every b above INDEPENDENCE_BATCH is evaluated again
    in batches of INDEPENDENCE_BATCH (the last one overlapping the one before when b is not a
    multiple), whose independence `check_assumptions` showed, and each sample's output must
    agree within `rounding_tolerance` of that batch's largest |output|. AssumptionError
    (field `file`) naming the batch size, the sample, the difference and the tolerance;
    otherwise the largest difference and the tolerance of each b (for the report)."""
    found: dict[str, dict[str, float]] = {"larger_batches": {}, "larger_batches_tolerance": {}}
    k = INDEPENDENCE_BATCH
    for b, (x, out) in sorted(evaluated.items()):
        if b <= k:
            continue
        with torch.no_grad():
            pieces = []
            for i in range(0, b, k):
                start = min(i, b - k)
                pieces.append(forward(x[start:start + k]).reshape(k, -1)[i - start:])
            batch = out.reshape(b, -1)
            tol = rounding_tolerance(length, float(batch.abs().max()))
            value, sample = _largest_difference(batch, torch.cat(pieces))
        if not value <= tol:
            raise AssumptionError(
                f"file: {what} mixes the samples of a batch: the output of sample {sample} of "
                f"a batch of {b} changes by {value:.3g} when the same inputs are evaluated in "
                f"batches of {k} (float32 rounding explains {tol:.3g}), so finite differences "
                f"would measure the batch, not the network (jobs evaluate {b} inputs in one "
                "batch); compute each sample's output from that sample alone, whatever the "
                "batch size (no branch on the batch size, no statistic over the batch)")
        found["larger_batches"][str(b)] = value
        found["larger_batches_tolerance"][str(b)] = tol
    return found


# -- no state written -----------------------------------------------------------------------------
# Operators that update running statistics (arguments 3 and 4) when their argument 5 (training,
# use_input_stats) is true, with no write in their schema: BatchNorm and InstanceNorm.
_UPDATES_RUNNING_STATISTICS = frozenset({
    "aten::batch_norm", "aten::native_batch_norm", "aten::_batch_norm_impl_index",
    "aten::cudnn_batch_norm", "aten::instance_norm"})
_KINDS = ("parameter", "buffer", "constant", "input")
_SCRIPT_KINDS = ("parameter", "buffer", "attribute", "input")


def _bound(schema: torch.FunctionSchema, node: torch.fx.Node
           ) -> list[tuple[torch.Argument, object]]:
    """(schema argument, value) for each argument of the schema, in its order: what the call
    passes, positionally or by name, else the default (None where there is none)."""
    return [(argument, node.args[i] if i < len(node.args) else
             node.kwargs.get(argument.name, argument.default_value))
            for i, argument in enumerate(schema.arguments)]


def tensors_written_in_forward(module: torch.fx.GraphModule,
                               program: torch.export.ExportedProgram | None = None
                               ) -> dict[str, list[str]]:
    """What a torch.export program writes in place when it is called, by kind (parameter,
    buffer, constant, input): the names, sorted; an empty dict when nothing.

    torch.export.export writes its training IR, in which a write stays an in-place operator
    (`aten::add_` on the buffer, or on a view of it) and the graph signature lists no
    mutation; a program run through `run_decompositions` lists them in its signature
    (buffers_to_mutate, parameters_to_mutate, user_inputs_to_mutate), and its unlifted module
    copies the new values back with `aten::copy_`. So: the unlifted module's graph (`module`,
    `ExportedProgram.module()`), each operator's schema saying which arguments it writes
    (`Tensor(a!)`) and which its outputs alias (a view of a buffer is the buffer), followed
    from the parameters, buffers and constants (get_attr) and the inputs (placeholders); the
    BatchNorm and InstanceNorm operators that update running statistics without saying so in
    their schema; and the signature of `program`, when given. Writes into a tensor the forward
    made (ReLU in place on a convolution's output) are no state and are not listed. A program
    with torch.cond, map or while_loop is refused before this (`control_flow_in_program`); their
    branches may write nothing of their operands anyway (torch refuses it when it exports
    them)."""
    params = {name for name, _ in module.named_parameters(remove_duplicate=False)}
    buffers = {name for name, _ in module.named_buffers(remove_duplicate=False)}
    aliases: dict[torch.fx.Node, set[tuple[str, str]]] = {}
    written: set[tuple[str, str]] = set()

    def reached(value: object) -> set[tuple[str, str]]:
        return set().union(*(aliases.get(leaf, set()) for leaf in
                             torch.utils._pytree.tree_leaves(value)
                             if isinstance(leaf, torch.fx.Node)))

    for node in module.graph.nodes:
        aliases[node] = set()
        if node.op == "placeholder":
            aliases[node] = {("input", str(node.target))}
        elif node.op == "get_attr":
            if isinstance(_attribute(module, str(node.target)), torch.Tensor):
                kind = ("parameter" if node.target in params else
                        "buffer" if node.target in buffers else "constant")
                aliases[node] = {(kind, str(node.target))}
        elif node.op == "call_function" and node.target is operator.getitem:
            aliases[node] = reached(node.args[0])
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            schema = node.target._schema
            bound = _bound(schema, node)
            for argument, value in bound:
                if argument.alias_info is not None and argument.alias_info.is_write:
                    written |= reached(value)
            if schema.name in _UPDATES_RUNNING_STATISTICS and bound[5][1] is True:
                written |= reached([bound[3][1], bound[4][1]])
            if any(r.alias_info is not None for r in schema.returns):  # a view, or self
                aliases[node] = reached([value for argument, value in bound
                                         if argument.alias_info is not None])
    if program is not None:
        signature = program.graph_signature
        written |= {("buffer", name) for name in signature.buffers_to_mutate.values()}
        written |= {("parameter", name) for name in signature.parameters_to_mutate.values()}
        written |= {("input", name) for name in signature.user_inputs_to_mutate.values()}
    return {kind: sorted(name for k, name in written if k == kind)
            for kind in _KINDS if any(k == kind for k, _ in written)}


_CONTROL_FLOW = {"cond": "torch.cond", "while_loop": "torch.while_loop",
                 "map_impl": "control_flow.map"}


def control_flow_in_program(module: nn.Module) -> list[str]:
    """The structured control flow (torch.cond, while_loop, map: higher-order operators) that
    a torch.export program's graphs call, sorted, as a user writes them. The allow-list lets
    them load; they fail the engine's activation profile (its dispatch mode has no rule for a
    higher-order operator: a bare NotImplementedError at validation) and their condition is one
    value for the whole batch."""
    found = set()
    for sub in module.modules():
        if isinstance(sub, torch.fx.GraphModule):
            for node in sub.graph.nodes:
                if isinstance(node.target, torch._ops.HigherOrderOperator):
                    name = node.target.name()
                    found.add(_CONTROL_FLOW.get(name, f"torch's {name}"))
    return sorted(found)


def _attribute(module: nn.Module, path: str) -> object:
    """module.a.b.c for 'a.b.c' (None where a part is missing)."""
    value: object = module
    for part in path.split("."):
        value = getattr(value, part, None)
    return value


def _scripted_graphs(module: torch.jit.ScriptModule
                     ) -> list[tuple[str, torch.jit.ScriptModule, torch._C.Graph]]:
    """(path, module, graph inlined) of what runs when a TorchScript module is called: its
    forward, and each forward pre-hook and hook of it and of its submodules (whose first input
    is the module at path)."""
    graphs = [("", module, module._c._get_method("forward").graph)]
    for path, sub in module.named_modules():
        graphs += [(path, sub, hook.graph) for hook in (*sub._c._get_forward_pre_hooks(),
                                                        *sub._c._get_forward_hooks())]
    inlined = []
    for path, owner, graph in graphs:
        graph = graph.copy()
        torch._C._jit_pass_inline(graph)
        inlined.append((path, owner, graph))
    return inlined


def attributes_set_in_forward(module: torch.jit.ScriptModule) -> list[str]:
    """The attributes a TorchScript module (or a submodule) assigns when it is called: the
    `prim::SetAttr` nodes of its forward, inlined, and of its forward hooks."""
    names: list[str] = []

    def walk(block: torch._C.Block | torch._C.Graph) -> None:
        for node in block.nodes():
            if node.kind() == "prim::SetAttr":
                names.append(node.s("name"))
            for sub in node.blocks():
                walk(sub)

    for _, _, graph in _scripted_graphs(module):
        walk(graph)
    return sorted(set(names))


_UNKNOWN = object()  # a value the walk cannot tell before the network runs
# operators on values known before the network runs (an attribute, a constant) that a branch's
# condition is made of: `if self.training`, `if self.mode == "fast"`, `is not None`
_FOLDED: dict[str, Callable[..., object]] = {
    "aten::__not__": operator.not_, "aten::eq": operator.eq, "aten::ne": operator.ne,
    "aten::__is__": operator.is_, "aten::__isnot__": operator.is_not,
    "aten::__and__": operator.and_, "aten::__or__": operator.or_, "aten::lt": operator.lt,
    "aten::le": operator.le, "aten::gt": operator.gt, "aten::ge": operator.ge}


def tensors_written_in_script(module: torch.jit.ScriptModule) -> dict[str, list[str]]:
    """What a TorchScript module writes in place when it is called, in its current mode, by
    kind (parameter, buffer, attribute: a tensor attribute that is neither, input): the
    names, sorted; an empty dict when nothing. The counterpart of `tensors_written_in_forward`
    for a torch.export program: an in-place write (`self.calls.add_(1)`, `self.weight.mul_(..)`,
    `self.running.copy_(..)`, `x.relu_()` on the input) is no attribute assignment, so
    `attributes_set_in_forward` does not see it.

    The inlined forward and hooks (`_scripted_graphs`) are walked in order: each operator's
    schema says which arguments it writes (`Tensor(a!)`) and which its outputs alias
    (`Tensor(a)`: a view of a buffer, a list holding it, an element taken from that list are
    the buffer), followed from the `prim::GetAttr` of a tensor (named by its attribute path)
    and from the forward's inputs (a hook of the top module: its input tuple); an operator
    with no schema or no alias annotation in it (building or unpacking a list or tuple,
    `prim::TupleIndex`), and one returning a list or tuple holding tensors, passes on what its
    inputs alias. A branch on a value known before the network runs
    (`self.training`, a constant) is walked where it goes, so BatchNorm's `if self.training:
    self.num_batches_tracked.add_(1)` counts only in training mode, as do the running
    statistics that `aten::batch_norm` updates without saying so in its schema (comparisons and
    `not`, `and`, `or` of such values are folded: `if self.mode == "fast"`); any other
    branch, and a loop's body (twice: what a pass carries to the next), are walked whole.
    Writes into a tensor the forward made (ReLU in place on a convolution's output) are no
    state and are not listed."""
    params = {name for name, _ in module.named_parameters()}
    buffers = {name for name, _ in module.named_buffers()}
    schemas: dict[str, torch.FunctionSchema | None] = {}
    written: set[tuple[str, str]] = set()
    input_names = [a.name for a in module._c._get_method("forward").schema.arguments[1:]]

    def schema_of(node: torch._C.Node) -> torch.FunctionSchema | None:
        text = node.schema()
        if text not in schemas:
            schemas[text] = None if text == "(no schema)" else torch._C.parse_schema(text)
        return schemas[text]

    def walk_graph(root: str, owner: object, graph: torch._C.Graph, forward: bool) -> None:
        aliases: dict[int, set[tuple[str, str]]] = {}
        known: dict[int, object] = {}
        objects: dict[int, tuple[str, object]] = {}  # a module: its path and itself

        def of(values: Sequence[torch._C.Value]) -> set[tuple[str, str]]:
            return set().union(*(aliases.get(v.unique(), set()) for v in values))

        def effects(node: torch._C.Node) -> None:
            inputs, outputs = list(node.inputs()), list(node.outputs())
            kind = node.kind()
            if kind == "prim::Constant":
                with contextlib.suppress(RuntimeError):  # one Python cannot hold
                    known[outputs[0].unique()] = outputs[0].toIValue()
            elif kind == "prim::GetAttr" and inputs[0].unique() in objects:
                path, obj = objects[inputs[0].unique()]
                name = node.s("name")
                full = f"{path}.{name}" if path else name
                value = getattr(obj, name, None)
                if isinstance(value, torch.jit.ScriptModule):
                    objects[outputs[0].unique()] = (full, value)
                elif any(isinstance(leaf, torch.Tensor)
                         for leaf in torch.utils._pytree.tree_leaves(value)):
                    what = ("parameter" if full in params else "buffer" if full in buffers
                            else "attribute")
                    aliases[outputs[0].unique()] = {(what, full)}
                else:
                    known[outputs[0].unique()] = value
            elif kind in _FOLDED and all(v.unique() in known for v in inputs) and all(
                    isinstance(known[v.unique()], (bool, int, float, str, type(None)))
                    for v in inputs):
                with contextlib.suppress(TypeError):  # a comparison Python refuses: unknown
                    known[outputs[0].unique()] = _FOLDED[kind](
                        *(known[v.unique()] for v in inputs))
            elif kind == "prim::If":
                condition = known.get(inputs[0].unique(), _UNKNOWN)
                blocks = list(node.blocks())
                taken = (blocks if not isinstance(condition, bool) else
                         [blocks[0] if condition else blocks[1]])
                for block in taken:
                    walk(block)
                for i, output in enumerate(outputs):
                    aliases[output.unique()] = of([list(b.outputs())[i] for b in taken])
                    if len(taken) == 1:
                        inner = list(taken[0].outputs())[i].unique()
                        if inner in known:
                            known[output.unique()] = known[inner]
            elif kind == "prim::Loop":  # inputs (trips, condition, *carried)
                carried = [of([v]) for v in inputs[2:]]
                for block in node.blocks():
                    for _ in range(2):
                        for param, held in zip(list(block.inputs())[1:], carried, strict=False):
                            aliases[param.unique()] = set(held)
                        walk(block)
                        carried = [held | of([v]) for held, v in
                                   zip(carried, list(block.outputs())[1:], strict=False)]
                for output, held in zip(outputs, carried, strict=False):
                    aliases[output.unique()] = held
            elif any(True for _ in node.blocks()):  # nothing else on the allow-list has blocks
                for block in node.blocks():
                    for param in block.inputs():
                        aliases[param.unique()] = of(inputs)
                    walk(block)
                for output in outputs:
                    aliases[output.unique()] = of(inputs)
            else:
                schema = schema_of(node)
                if schema is None or kind.startswith("prim::"):
                    # building, unpacking, indexing a tuple, casting (their schemas, where
                    # they have one, annotate no alias): passes its inputs on
                    for output in outputs:
                        aliases[output.unique()] = of(inputs)
                    if schema is None:
                        return
                for output in outputs:
                    aliases.setdefault(output.unique(), set())
                bound = list(zip(schema.arguments, inputs, strict=False))
                for argument, value in bound:
                    if argument.alias_info is None or not argument.alias_info.is_write:
                        continue
                    if "Tensor" in str(argument.type):
                        written.update(of([value]))
                    else:  # a list or dict written: it now holds what is put in it
                        aliases[value.unique()] = of(inputs)
                if schema.name in _UPDATES_RUNNING_STATISTICS and len(inputs) > 5 and \
                        known.get(inputs[5].unique(), _UNKNOWN) is not False:
                    written.update(of(inputs[3:5]))
                viewed = of([value for argument, value in bound
                             if argument.alias_info is not None])
                for output, returned in zip(outputs, schema.returns, strict=False):
                    if returned.alias_info is not None:  # a view, or self
                        aliases[output.unique()] |= viewed
                    elif "Tensor" in str(output.type()) and \
                            not isinstance(output.type(), torch.TensorType):
                        aliases[output.unique()] |= of(inputs)  # a list of what it was given

        def walk(block: torch._C.Block | torch._C.Graph) -> None:
            for node in block.nodes():
                effects(node)

        graph_inputs = list(graph.inputs())
        objects[graph_inputs[0].unique()] = (root, owner)
        if forward:  # the network's own input
            for value, name in zip(graph_inputs[1:], input_names, strict=False):
                aliases[value.unique()] = {("input", name)}
        elif not root and len(graph_inputs) > 1:  # a hook of the top module: (input,)
            aliases[graph_inputs[1].unique()] = {("input", name) for name in input_names}
        walk(graph)

    for i, (root, owner, graph) in enumerate(_scripted_graphs(module)):
        walk_graph(root, owner, graph, i == 0)
    return {kind: sorted(name for k, name in written if k == kind)
            for kind in _SCRIPT_KINDS if any(k == kind for k, _ in written)}


def refuse_attribute_state(module: torch.jit.ScriptModule) -> None:
    """AssumptionError naming the attributes a TorchScript network assigns while it runs."""
    names = attributes_set_in_forward(module)
    if names:
        listed = ", ".join(repr(n[:40]) for n in names[:5])
        raise AssumptionError(
            f"file: the network assigns its attribute(s) {listed} when it is called, so its "
            "output could depend on how many calls came before (the engine calls each network "
            "many times, in batches its plan chooses): compute them in forward as locals, or "
            "keep them constant")


def independence_inputs(input_shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    return torch.randn((INDEPENDENCE_BATCH, *input_shape), generator=gen)


__all__ = ["EPS32", "FIX", "INDEPENDENCE_BATCH", "AssumptionError", "attributes_set_in_forward",
           "check_assumptions", "check_larger_batches", "control_flow_in_program",
           "refuse_attribute_state", "tensors_written_in_forward", "tensors_written_in_script",
           "describe_structure", "independence_inputs", "reduction_length",
           "rounding_tolerance", "select_output"]
