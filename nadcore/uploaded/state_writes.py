"""What an uploaded network must not do between or inside its calls, checked at validation
(`nadcore.uploaded.validation`) before it runs; the refusals are `AssumptionError`s of
`nadcore.uploaded.engine_assumptions`.

- a TorchScript network assigns none of its attributes while it runs
  (`attributes_set_in_forward`): an attribute that counts calls or keeps the last output
  survives the engine's loading of each network's tensors, so a network's output would depend on
  how many calls came before it (the chunking, the device's plan, the sharding), which two
  evaluations at validation cannot see (an output that changes after the 40th call passed them
  and gave NADs that change with the shards);
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
  profile cannot run it (it failed validation with a bare NotImplementedError).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nadcore.uploaded.engine_assumptions import AssumptionError

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
                    if returned.alias_info is not None and "*" in returned.alias_info.before_set:
                        # an element of a container (`t(*)`: a dict's value, a list's item),
                        # whose own argument may carry no annotation (Dict(str, t))
                        aliases[output.unique()] |= of(inputs)
                    elif returned.alias_info is not None:  # a view, or self
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


__all__ = ["attributes_set_in_forward", "control_flow_in_program", "refuse_attribute_state",
           "tensors_written_in_forward", "tensors_written_in_script"]
