"""Every NAD result says how much it means (issue 26 item 4), end to end: a `nads serve` of its
own (SQLite, its own worker) serving the shipped catalog (logreg and LeNet at 1x32x32, 10,000
networks), NAD jobs through the Python client, `nads status` and `nads catalog ls` as a user
runs them. The maths of the noise band: tests/nadcore/nads/test_identifiability.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nads.client import Client
from tests.support import clean_env, nads_serve

NADS_BIN = str(Path(sys.executable).with_name("nads"))
# LeNet at 16 x 16 (a quarter of the finite differences of 32 x 32): no catalog entry has it
LENET = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 24, "seed": 3}
# logreg's input gradient is its weight vector, i.i.d. entries: an isotropic covariance
LOGREG = {"architecture": "logreg", "input_shape": [1, 32, 32], "num_networks": 200, "seed": 3}


def _cli(serve: object, *args: str) -> str:
    out = subprocess.run([NADS_BIN, *args], capture_output=True, text=True, timeout=120,
                         env=clean_env(NADS_URL=serve.url, NADS_KEY=serve.key))
    assert out.returncode == 0, out.stderr
    return out.stdout


def _overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """||A_k B_k^T||_F^2 / k, computed here (not by the service's code)."""
    return float(((a[:k].astype(np.float64) @ b[:k].T.astype(np.float64)) ** 2).sum() / k)


@pytest.mark.slow
def test_nad_results_say_how_much_they_mean(tmp_path: Path) -> None:
    with nads_serve(tmp_path, clean_env(NADS_CATALOG_AUTOBUILD="")) as serve, \
            Client(serve.url, serve.key) as client:
        ids = {name: client.submit("nads", spec).id
               for name, spec in (("lenet", LENET), ("logreg", LOGREG))}
        jobs = {name: client.wait(job_id, timeout=600, interval=0.5)
                for name, job_id in ids.items()}
        assert {j.status for j in jobs.values()} == {"succeeded"}, jobs

        # LeNet, 24 networks: halves of 12 resolve k = 1 and 4 (k < 12). Chance is k / 256,
        # with noise up to about 0.04 (nadcore/nads/identifiability.py). Twelve networks do not
        # resolve LeNet's first NAD alone (0.001 at k = 1: its top eigenvalues are close) but
        # do resolve its top-4 subspace: identifiable up to k = 4.
        lenet = jobs["lenet"].identifiability
        assert [r["k"] for r in lenet["ks"]] == [1, 4]
        assert [r["chance"] for r in lenet["ks"]] == pytest.approx([1 / 256, 4 / 256], abs=1e-6)
        assert [r["above_chance"] for r in lenet["ks"]] == [False, True]
        assert lenet["identifiable"] is True and lenet["up_to_k"] == 4
        assert jobs["lenet"].catalog_overlap is None  # the catalog holds 1x32x32 only
        assert "catalog" in jobs["lenet"].summary

        # logreg, 200 networks: halves of 100 resolve k = 1, 4, 16, 64, all within the noise
        # of chance: not identifiable, with the reason
        logreg = jobs["logreg"].identifiability
        assert [r["k"] for r in logreg["ks"]] == [1, 4, 16, 64]
        assert logreg["identifiable"] is False and logreg["up_to_k"] is None
        assert not any(r["above_chance"] for r in logreg["ks"])
        assert "isotropic" in logreg["reason"] and "arbitrary basis" in logreg["reason"]
        # ... compared with the shipped logreg entry (10,000 networks, seed 0: no network
        # shared with seed 3) at every k both hold (199 NADs): chance there too
        catalog = jobs["logreg"].catalog_overlap
        assert (catalog["entry"], catalog["networks"], catalog["shared_networks"]) == (
            "logreg", 10_000, 0)
        mine = client.nads(ids["logreg"]).nads
        reference = client.catalog("logreg")
        assert [r["k"] for r in catalog["ks"]] == [1, 4, 16, 64]
        for row in catalog["ks"]:
            assert row["overlap"] == pytest.approx(_overlap(mine, reference, row["k"]),
                                                   abs=1e-5)
            assert row["chance"] == pytest.approx(row["k"] / 1024, abs=1e-6)
            assert row["overlap"] < row["noise_upper"]

        # The CLI says the same
        text = _cli(serve, "status", ids["logreg"])
        assert "split-half stability: " in text and "(chance 0.0625)" in text
        assert "NOT identifiable" in text and "warning: NADs not identifiable" in text
        assert "overlap with the catalog's logreg (10000 networks)" in text
        text = _cli(serve, "status", ids["lenet"])
        assert "identifiable up to k=4" in text and "warning: NADs not" not in text
        assert "catalog: no ready entry" in text

        # The catalog flags its logreg entry (stability 0.062 at k = 64, chance 0.0625), not
        # its LeNet one, in the client and the CLI
        entries = {e.name: e for e in client.catalog_ls()}
        assert entries["logreg"].identifiability["identifiable"] is False
        assert entries["lenet"].identifiability["identifiable"] is True
        assert entries["lenet"].identifiability["up_to_k"] == 64
        lines = _cli(serve, "catalog", "ls").splitlines()
        flagged = [i for i, line in enumerate(lines) if "NADs not identifiable" in line]
        assert len(flagged) == 1 and lines[flagged[0] - 1].startswith("logreg"), lines
