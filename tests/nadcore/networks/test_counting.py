"""Counting a network's cost with torch on the meta device (nadcore.networks.counting), as the
worker does for torchvision builders: it agrees exactly with nadcore.nads.cost's analytic walks of
every built-in, counts a torchvision builder without computing anything, and says when a builder
cannot take a shape."""

from __future__ import annotations

import pytest

from nadcore.networks.counting import count_layers
from nadcore.networks.zoo import BUILTIN_CLASSES, ArchitectureError
from nadcore.specs.layer_counts import layer_count


@pytest.mark.parametrize("architecture", sorted(BUILTIN_CLASSES))
def test_the_meta_count_of_a_built_in_is_its_analytic_walk(architecture: str) -> None:
    """MACs and parameters exactly; activations too, but for DenseNet, whose walk also counts
    the concatenations that hold its features (more than its layers' outputs)."""
    for shape, outputs in (((1, 32, 32), 1), ((3, 64, 48), 10)):
        counted = count_layers(architecture, shape, outputs)
        walked = layer_count(architecture, shape, outputs)
        assert (counted.macs, counted.params) == (walked.macs, walked.params), architecture
        if architecture == "densenet121":
            assert 0 < counted.activations < walked.activations
        else:
            assert counted.activations == walked.activations, architecture


def test_a_torchvision_builder_is_counted_and_a_shape_it_cannot_take_is_named() -> None:
    # torchvision's ResNet-18 at 224x224: 1.82 GMAC and 11.7 M parameters (1000 classes)
    count = count_layers("torchvision:resnet18", (3, 224, 224), 1000)
    assert count.macs == pytest.approx(1.82e9, rel=0.01) and count.params == 11_689_512
    assert count.activations > 0
    small = count_layers("torchvision:resnet18", (3, 32, 32), 10)
    assert small.macs < count.macs / 40  # 49 times fewer pixels; the head is smaller too
    with pytest.raises(ArchitectureError) as caught:
        count_layers("torchvision:squeezenet1_1", (3, 8, 8), 1)
    assert str(caught.value).startswith("torchvision:squeezenet1_1 cannot take an input of "
                                        "shape 3x8x8: "), caught.value
