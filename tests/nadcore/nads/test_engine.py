import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from nadcore import (
    Cancelled,
    NADSpec,
    PartialNADs,
    compute_shard,
    estimate_nads,
    finalize,
    merge_partials,
    run_spec,
    subspace_overlap,
)

SPEC = dict(architecture="lenet", input_shape=(1, 16, 16), num_networks=90, seed=7)


def _same(a, b):
    for name in ("nads", "eigenvalues", "eval_point"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_shards_merge_to_one_run_bitwise_whatever_the_chunking():
    spec = NADSpec(**SPEC)
    whole = run_spec(spec, device="cpu", chunk_size=64)
    parts = [compute_shard(spec, lo, hi, device="cpu", chunk_size=c)
             for (lo, hi), c in zip([(0, 31), (31, 32), (32, 90)], (5, 1, 17), strict=True)]
    merged = finalize(spec, merge_partials(reversed(parts)))
    _same(whole, merged)
    assert whole.stability == merged.stability
    # vmap groups are aligned, so vmap shards are bitwise equal to a whole vmap run too
    vm = run_spec(spec, device="cpu", strategy="vmap", chunk_size=7)
    vparts = [compute_shard(spec, lo, hi, device="cpu", strategy="vmap", chunk_size=7)
              for lo, hi in [(0, 31), (31, 32), (32, 90)]]
    _same(vm, finalize(spec, merge_partials(vparts)))
    # vmap and loop batching agree to float rounding
    assert subspace_overlap(vm.nads, whole.nads, 16) > 0.999
    np.testing.assert_allclose(vm.eigenvalues, whole.eigenvalues, rtol=1e-4)


def test_partials_roundtrip_and_moments_merge(tmp_path):
    spec = NADSpec(**SPEC)
    whole = run_spec(spec, device="cpu")
    parts = [compute_shard(spec, lo, hi, device="cpu") for lo, hi in spec.model_copy(
        update={"shards": 3}).shard_ranges()]
    for i, p in enumerate(parts):
        p.save(tmp_path / f"p{i}.npz")
    loaded = [PartialNADs.load(tmp_path / f"p{i}.npz") for i in range(3)]
    _same(whole, finalize(spec, merge_partials(loaded)))
    # moments (O(D^2) partials): the same NADs up to float64 rounding
    mom = [PartialNADs.from_gradients(p.key, p.start, torch.from_numpy(p.gradients), p.eval_point,
                            "moments") for p in parts]
    res = finalize(spec, merge_partials(mom))
    np.testing.assert_allclose(res.eigenvalues, whole.eigenvalues, rtol=1e-9)
    assert subspace_overlap(res.nads, whole.nads, 32) > 1 - 1e-6  # float32 NADs
    for k, v in whole.stability.items():
        assert res.stability[k] == pytest.approx(v, abs=1e-9)


def test_merge_rejects_gaps_and_foreign_specs():
    spec = NADSpec(**SPEC)
    a = compute_shard(spec, 0, 10, device="cpu")
    c = compute_shard(spec, 20, 30, device="cpu")
    with pytest.raises(ValueError, match="not contiguous"):
        merge_partials([a, c])
    other = NADSpec(**{**SPEC, "seed": 8})
    with pytest.raises(ValueError, match="another spec"):
        finalize(other, a)
    with pytest.raises(ValueError, match="within"):
        compute_shard(spec, 80, 91, device="cpu")


def test_seeds_and_given_eval_point():
    a = estimate_nads("lenet", (1, 16, 16), 40, seed=1)
    b = estimate_nads("lenet", (1, 16, 16), 40, seed=1, chunk_size=3)
    c = estimate_nads("lenet", (1, 16, 16), 40, seed=2)
    _same(a, b)
    assert not np.array_equal(a.nads, c.nads)
    assert not np.array_equal(a.eval_point, c.eval_point)
    x0 = np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 16, 16)
    d = estimate_nads("lenet", (1, 16, 16), 40, seed=1, eval_point=x0)
    assert np.array_equal(d.eval_point, x0)
    assert not np.array_equal(d.nads, a.nads)
    assert a.summary()["method"] == "finite_difference" and a.summary()["scale"] == 100.0
    assert a.summary()["eval_point"] == "N(0, I) from seed"
    assert d.summary()["eval_point"] == "given"
    assert a.nads.shape == (39, 256) and a.nads.dtype == np.float32


def test_network_j_does_not_depend_on_n():
    """Network j is seeded by (seed, j) alone: the first networks of a larger run are equal."""
    small = compute_shard(NADSpec(**SPEC), 0, 10, device="cpu")
    big = compute_shard(NADSpec(**{**SPEC, "num_networks": 200}), 0, 20, device="cpu")
    assert np.array_equal(small.gradients, big.gradients[:10])


def test_lowrank_matches_covariance_top_k():
    kw = dict(architecture="lenet", input_shape=(1, 16, 16), num_networks=300, seed=3, k=8)
    cov = run_spec(NADSpec(**kw, decomposition="covariance"), device="cpu")
    low = run_spec(NADSpec(**kw, decomposition="lowrank"), device="cpu")
    assert low.decomposition == "lowrank" and cov.decomposition == "covariance"
    np.testing.assert_allclose(low.eigenvalues[:4], cov.eigenvalues[:4], rtol=1e-3)
    assert subspace_overlap(low.nads, cov.nads, 4) > 0.99
    assert low.nads.shape == (8, 256)


def test_early_stopping_reaches_target_with_fewer_networks():
    spec = NADSpec(architecture="lenet", input_shape=(1, 16, 16), num_networks=5000, seed=0,
                   target_stability=0.6, stability_k=4, check_every=100)
    seen = []
    res = run_spec(spec, device="cpu", progress=lambda done, total: seen.append((done, total)))
    assert res.info["stopped_early"] and res.num_networks < 5000
    assert res.stability[4] >= 0.6 and res.num_networks % 100 == 0
    assert seen[-1] == (res.num_networks, 5000)
    assert all(a[0] < b[0] for a, b in zip(seen, seen[1:], strict=False))


def test_stability_grows_with_networks_on_lenet():
    # autograd: stability grows with the number of samples whatever the gradient method, and
    # one backward pass a network costs less than 512 forward passes (38 s of the suite)
    few = estimate_nads("lenet", (1, 16, 16), 60, method="autograd", seed=0)
    many = estimate_nads("lenet", (1, 16, 16), 600, method="autograd", seed=0)
    assert many.stability[4] > few.stability[4]
    assert set(many.stability) == {1, 4, 16, 64}


def test_cancellation_between_chunks():
    calls = []
    with pytest.raises(Cancelled):
        compute_shard(NADSpec(**SPEC), 0, 90, device="cpu", chunk_size=10,
                      should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3


@pytest.mark.parametrize(
    "kwargs,field",
    [({"architecture": "nonesuch"}, "architecture"),
     ({"num_networks": 1}, "num_networks"),
     ({"scale": 0.0}, "scale"),
     ({"scale": -1.0}, "scale"),
     ({"input_shape": (1, 0, 32)}, "input_shape"),
     ({"k": 5000}, "k"),
     ({"eval_point": [0.0, 1.0]}, "eval_point"),
     ({"method": "spline"}, "method")],
)
def test_bad_specs_name_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        NADSpec(**{**SPEC, **kwargs})


def test_shape_the_architecture_cannot_take():
    """Refused by the spec's arithmetic (no torch), before any network is built."""
    with pytest.raises(ValidationError, match=r"input_shape: lenet cannot take input shape "
                       r"\(1, 8, 8\): H = 8 is below lenet's minimum 16"):
        estimate_nads("lenet", (1, 8, 8), 10)


def test_spec_and_cost_do_not_import_torch():
    code = ("import sys, nadcore, nadcore.nads.spec, nadcore.nads.cost; "
            "nadcore.estimate_cost(nadcore.NADSpec(architecture='lenet')); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_compute(tmp_path):
    out = tmp_path / "lenet.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "nads.cli", "compute", "--arch", "lenet", "--input-shape",
         "1,16,16", "--networks", "40", "--method", "finite-difference", "--scale", "100",
         "--seed", "0", "--out", str(out), "--npy-dir", str(tmp_path / "npy")],
        capture_output=True, text=True, check=True,
    )
    summary = json.loads(proc.stdout)
    assert summary["num_networks"] == 40
    with np.load(out) as z:
        nads = z["nads"]
    assert np.array_equal(nads, np.load(tmp_path / "npy" / "nads.npy"))
    direct = estimate_nads("lenet", (1, 16, 16), 40, seed=0)
    assert np.array_equal(nads, direct.nads)
    bad = subprocess.run([sys.executable, "-m", "nads.cli", "compute", "--arch", "lenet",
                          "--input-shape", "1,8,8", "--networks", "5", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot take input shape" in bad.stderr
