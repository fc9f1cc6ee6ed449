"""Issue 13, sizes bounded before work starts, at the spec level (torch-free specs; this test
module imports torch only to compare the static list of torchvision builders with the real one).
"""

from __future__ import annotations

import math
import time

import pytest
from pydantic import ValidationError

from nadcore.nads.cost import estimate_cost
from nadcore.nads.spec import NADSpec
from nadcore.poison.spec import PoisonSpec
from nadcore.probe.spec import NADDirections, ProbeSpec
from nadcore.specs.architecture import MAX_INPUT_DIM, MAX_OUTPUTS
from nadcore.specs.torchvision_names import TORCHVISION_CLASSIFIERS


def _messages(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.value.errors())


def test_the_static_torchvision_list_is_torchvisions_classification_builders() -> None:
    import torchvision.models as tvm

    assert list(TORCHVISION_CLASSIFIERS) == sorted(tvm.list_models(module=tvm))


@pytest.mark.parametrize("name", ["get_model", "list_models", "get_weight", "fcn_resnet50",
                                  "raft_small", "fasterrcnn_resnet50_fpn", "r3d_18",
                                  "quantized_resnet18", "resnet"])
def test_only_classification_builders_are_architectures(name: str) -> None:
    with pytest.raises(ValidationError) as exc:
        NADSpec(architecture=f"torchvision:{name}", num_networks=2)
    assert "architecture" in _messages(exc) and "classification builder" in _messages(exc)
    NADSpec(architecture="torchvision:resnet18", num_networks=2)


def test_a_nad_range_is_counted_without_being_built() -> None:
    d = NADDirections(catalog="lenet", start=0, stop=MAX_INPUT_DIM, step=1)
    t0 = time.perf_counter()
    assert d.count() == MAX_INPUT_DIM and d.max_row() == MAX_INPUT_DIM - 1
    assert time.perf_counter() - t0 < 0.01
    d = NADDirections(catalog="lenet", start=3, stop=20, step=5)
    assert d.count() == len(d.rows()) == 4 and d.max_row() == max(d.rows()) == 18
    d = NADDirections(catalog="lenet", indices=[4, 1, 9])
    assert d.count() == 3 and d.max_row() == 9


@pytest.mark.parametrize("stop", [5e7, 1e12, 10**30])
def test_a_nad_range_past_the_largest_input_is_refused(stop: float) -> None:
    with pytest.raises(ValidationError) as exc:
        NADDirections(catalog="lenet", start=0, stop=stop)
    assert "stop" in _messages(exc) and str(MAX_INPUT_DIM) in _messages(exc)


def test_nad_indices_are_bounded() -> None:
    with pytest.raises(ValidationError) as exc:
        NADDirections(catalog="lenet", indices=[10**12])
    assert str(MAX_INPUT_DIM - 1) in _messages(exc)


BAD_NUMBERS = [("scale", math.inf), ("scale", math.nan), ("scale", 1e308), ("scale", 1e-320),
               ("scale", -math.inf)]


@pytest.mark.parametrize(("field", "value"), BAD_NUMBERS)
def test_non_finite_and_out_of_range_scales_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as exc:
        NADSpec(architecture="lenet", num_networks=2, **{field: value})
    assert exc.value.errors()[0]["loc"] == (field,), _messages(exc)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e308, 1e-320])
def test_eval_point_values_must_be_finite_and_in_range(value: float) -> None:
    point = [0.5] * 16
    point[7] = value
    with pytest.raises(ValidationError) as exc:
        NADSpec(architecture="logreg", input_shape=(1, 4, 4), num_networks=2, eval_point=point)
    assert exc.value.errors()[0]["loc"][0] == "eval_point", _messages(exc)


@pytest.mark.parametrize(("path", "value"), [
    (("data", "sigma"), math.inf), (("data", "epsilon"), 1e308), (("training", "lr"), math.nan),
    (("training", "weight_decay"), 1e-320), (("training", "grad_clip"), math.inf),
])
def test_probe_numbers_must_be_finite_and_in_range(path: tuple[str, str], value: float) -> None:
    body = {"architecture": "logreg", "directions": {"kind": "random", "count": 2},
            path[0]: {path[1]: value}}
    with pytest.raises(ValidationError) as exc:
        ProbeSpec.model_validate(body)
    assert exc.value.errors()[0]["loc"][:2] == path, _messages(exc)


def test_custom_probe_directions_must_be_finite() -> None:
    body = {"architecture": "logreg", "input_shape": [1, 2, 2],
            "directions": {"kind": "custom", "values": [[1.0, 0.0, math.nan, 0.0]]}}
    with pytest.raises(ValidationError) as exc:
        ProbeSpec.model_validate(body)
    assert exc.value.errors()[0]["loc"][:2] == ("directions", "custom"), _messages(exc)


@pytest.mark.parametrize(("path", "value"), [
    (("eps",), math.nan), (("training", "lr"), math.inf), (("training", "mean"), (math.nan,)),
    (("training", "std"), (1e-320,)),
])
def test_poison_numbers_must_be_finite_and_in_range(path: tuple[str, ...], value: object) -> None:
    body: dict = {"architecture": "lenet", "dataset": {"name": "digits"},
                  "nads": {"catalog": "lenet"}, "indices": [0]}
    if len(path) == 1:
        body[path[0]] = value
    else:
        body["training"] = {"mean": (0.5,), "std": (0.2,), path[1]: value}
    with pytest.raises(ValidationError) as exc:
        PoisonSpec.model_validate(body)
    assert exc.value.errors()[0]["loc"][: len(path)] == path, _messages(exc)


def test_output_index_is_bounded_by_the_largest_classifier() -> None:
    NADSpec(architecture="lenet", num_networks=2, output_index=MAX_OUTPUTS - 1)
    with pytest.raises(ValidationError) as exc:
        NADSpec(architecture="lenet", num_networks=2, output_index=10**9)
    assert "output_index" in _messages(exc) and str(MAX_OUTPUTS - 1) in _messages(exc)


def test_the_memory_estimate_counts_parameters_and_activations() -> None:
    small = estimate_cost(NADSpec(architecture="logreg", input_shape=(3, 64, 64),
                                  num_networks=2))
    large = estimate_cost(NADSpec(architecture="logreg", input_shape=(3, 64, 64),
                                  num_networks=2, output_index=999))
    d = 3 * 64 * 64
    assert large.parameters == d * 1000 + 1000
    # Parameters (and a copy), and activations, in the memory quota; results alone are 2 x D x 4.
    assert large.memory_bytes >= 2 * 4 * large.parameters + 2 * d * 4
    assert large.memory_bytes - small.memory_bytes >= 2 * 4 * (large.parameters - small.parameters)
    resnet = estimate_cost(NADSpec(architecture="resnet18", num_networks=2))
    assert resnet.activation_floats is not None and resnet.activation_floats > 64 * 32 * 32 * 8
    assert resnet.memory_bytes > 4 * resnet.activation_floats
