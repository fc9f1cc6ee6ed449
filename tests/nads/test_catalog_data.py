"""Every catalog entry shipped in catalog_data/ is what its provenance says: the catalog's spec,
files matching their sha256, orthonormal NADs with descending eigenvalues, and first-network
gradients that this machine recomputes within the tolerance of the entry's precision (network 0
only for the large architectures, a minute or more each on a CPU core; `nads catalog verify`
recomputes every shipped one)."""

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.shipped import FILES, ShippedError, read_entry, shipped_entries
from nads.catalog_export import catalog_spec, export_direct, verify
from store.settings import SHIPPED_CATALOG_DIR

ENTRIES = [e.name for e in shipped_entries(SHIPPED_CATALOG_DIR)]
# the large architectures (a GPU's work) may ship and be checked, but slowly
SLOW = {"vgg11", "resnet18", "densenet121"}
MAX_ENTRY_BYTES = 8 * 2**20  # git-friendly: a 1,024 x 1,024 float32 NAD array is 4 MiB


def test_the_cpu_entries_ship():
    assert {"logreg", "lenet"} <= set(ENTRIES), ENTRIES


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in ENTRIES])
def test_shipped_entry(name: str):
    folder = SHIPPED_CATALOG_DIR / name
    entry = read_entry(folder)
    prov = entry.provenance
    entry.check()  # every file's sha256
    assert set(prov["files"]) == set(FILES)
    assert sum((folder / f).stat().st_size for f in FILES) < MAX_ENTRY_BYTES
    # the catalog's own spec: finite differences, step 100, 1x32x32, seed 0, at the networks
    # it has (the paper's 10,000, or fewer from a background CPU build: labelled as such)
    networks, precision = prov["networks"], prov["spec"]["precision"]
    expected = catalog_spec(name, networks, precision).model_dump(mode="json")
    assert prov["spec"] == expected, prov["spec"]
    assert networks >= 2_000 and prov["precision"] in ("fp32", "tf32", "bf16")
    assert precision in ("auto", prov["precision"])
    assert set(prov["stability"]) == {"1", "4", "16", "64"}
    for key in ("device_name", "torch", "wall_seconds", "stability", "created_at"):
        assert prov[key], key
    nads = np.load(folder / "nads.npy")
    eigenvalues = np.load(folder / "eigenvalues.npy")
    assert nads.dtype == eigenvalues.dtype == np.float32
    assert nads.shape == (prov["num_nads"], 1024) == (1024, 1024)
    np.testing.assert_allclose(nads @ nads.T, np.eye(len(nads)), atol=2e-5)
    assert np.all(np.diff(eigenvalues) <= 0) and eigenvalues[-1] >= 0
    report = verify(folder, networks=1 if name in SLOW else None)
    print(json.dumps(report))
    assert report["eval_point_equal"]
    assert report["max_relative_error"] <= report["tolerance"], report
    assert report["ok"]


def test_verify_catches_a_wrong_entry(tmp_path: Path):
    """A tiny entry verifies; with another network's gradients, or a flipped byte, it fails."""
    folder = export_direct(tmp_path, "logreg", networks=12, device="cpu", check_networks=3)
    assert verify(folder)["ok"]
    grads = np.load(folder / "check_gradients.npy")
    np.save(folder / "check_gradients.npy", grads[::-1].copy())  # networks 2, 1, 0
    with pytest.raises(ShippedError, match="check_gradients.npy has sha256"):
        verify(folder)
    prov = json.loads((folder / "provenance.json").read_text())
    from jobs.shipped import sha256_file

    prov["files"]["check_gradients.npy"]["sha256"] = sha256_file(folder / "check_gradients.npy")
    (folder / "provenance.json").write_text(json.dumps(prov))
    report = verify(folder)
    assert not report["ok"] and report["max_relative_error"] > 0.5, report
