"""The background catalog build (nads/catalog_background.py): shards written as partials,
resumed from the partials present, finalized into the same entry a one-shot run writes."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nadcore.nads.partial import PartialNADs
from nads.catalog_background import (
    BuildError,
    PartialFile,
    builds_computing,
    check_precision,
    claim_path,
    compute,
    finalize_build,
    missing_shards,
    partials_dir,
    present,
    time_left,
)
from nads.catalog_export import export_direct
from nads.cli import build_app


def _quiet(_line: str) -> None:
    pass


def test_missing_shards_cut_at_the_same_multiples_whatever_is_present():
    def files(*ranges):
        return [PartialFile(Path(f"{a}-{b}"), a, b) for a, b in ranges]

    assert missing_shards([], 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert missing_shards(files((0, 4)), 10, 4) == [(4, 8), (8, 10)]
    # a partial of another cut (e.g. a GPU run's larger shard) is respected as it is
    assert missing_shards(files((2, 5)), 10, 4) == [(0, 2), (5, 8), (8, 10)]
    assert missing_shards(files((0, 12)), 10, 4) == []
    assert missing_shards(files((0, 4), (8, 10)), 10, 4) == [(4, 8)]


def test_resume_computes_only_the_missing_shards(tmp_path: Path):
    compute(tmp_path, "logreg", 12, "fp32", shard_networks=4, max_shards=1, report=_quiet)
    folder = partials_dir(tmp_path, "logreg")
    assert [(p.start, p.stop) for p in present(folder)] == [(0, 4)]
    # mark the first partial: a resumed build that recomputed it would overwrite the mark
    first = PartialNADs.load(folder / "00000-00004.npz")
    first.gradients = first.gradients + 1.0
    first.meta["marked"] = True
    first.save(folder / "00000-00004.npz")
    lines = []
    compute(tmp_path, "logreg", 12, "fp32", shard_networks=4, finalize=False,
            report=lines.append)
    assert lines[0].startswith("logreg: 4 of 12 networks present in 1 partials; 2 shards"), lines
    assert [(p.start, p.stop) for p in present(folder)] == [(0, 4), (4, 8), (8, 12)]
    assert PartialNADs.load(folder / "00000-00004.npz").meta.get("marked")
    assert not list(folder.glob(".*.tmp"))  # written through a temporary name, renamed
    meta = PartialNADs.load(folder / "00004-00008.npz").meta
    assert meta["seed_range"] == [4, 8] and meta["precision"] == "fp32"
    for key in ("seconds", "torch", "device_name", "load_average", "finished_at", "plan"):
        assert key in meta, key
    # an entry of the first 8 networks takes the partials within it; [8, 12) stays
    entry = finalize_build(tmp_path, "logreg", 8, "fp32")
    assert json.loads((entry / "provenance.json").read_text())["networks"] == 8
    assert [(p.start, p.stop) for p in present(folder)] == [(8, 12)]


def test_finalize_equals_a_one_shot_run(tmp_path: Path):
    """Three runs (interrupted after one shard, then after another, then to the end) write the
    entry a single in-process run of the same 12 networks writes, and remove the partials."""
    built = tmp_path / "built"
    for max_shards in (1, 1, None):
        entry = compute(built, "logreg", 12, "fp32", shard_networks=5, max_shards=max_shards,
                        report=_quiet)
    assert entry == built / "logreg"
    assert not partials_dir(built, "logreg").exists()
    direct = export_direct(tmp_path / "direct", "logreg", networks=12, precision="fp32",
                           device="cpu", check_networks=4)
    for name in ("nads.npy", "eigenvalues.npy", "eval_point.npy", "check_gradients.npy"):
        np.testing.assert_array_equal(np.load(entry / name), np.load(direct / name), name)
    prov = json.loads((entry / "provenance.json").read_text())
    one_shot = json.loads((direct / "provenance.json").read_text())
    assert prov["networks"] == 12 and prov["precision"] == "fp32"
    assert prov["stability"] == one_shot["stability"]
    assert prov["build"]["shards"] == 3
    assert [s["networks"] for s in prov["build"]["shard_list"]] == [[0, 5], [5, 10], [10, 12]]
    assert prov["wall_seconds"] > 0 and prov["build"]["seconds_per_network"] > 0
    # a build the entry already covers computes nothing
    lines = []
    assert compute(built, "logreg", 8, "fp32", shard_networks=4, report=lines.append) is None
    assert lines == [f"logreg: {entry} already holds an entry of 8 or more networks in fp32; "
                     "nothing to compute"]
    assert not partials_dir(built, "logreg").exists()
    # and a smaller entry never replaces a larger one
    compute(built, "logreg", 16, "fp32", shard_networks=4, max_shards=2, report=_quiet)
    with pytest.raises(BuildError, match="already holds an entry of more than 8 networks"):
        finalize_build(built, "logreg", 8, "fp32")
    assert json.loads((entry / "provenance.json").read_text())["networks"] == 12


def test_time_left_is_the_median_pace_of_the_last_shards_over_the_builds():
    # the first shard compiles (100 s per network): the median of four hardly sees it
    assert time_left([100.0, 40.0, 42.0, 41.0], 10, 2) == pytest.approx(41.5 * 10 / 2)
    assert time_left([50.0], 3, 0) == 150.0  # no claim seen: this build alone
    # only the last 8 shards count: 12 slow ones (a test run beside) then 8 at 40 s
    assert time_left([400.0] * 12 + [40.0] * 8, 100, 1) == pytest.approx(4000.0)
    # a lasting change of pace shows within a few shards (5 of the last 8 at 80 s)
    assert time_left([40.0] * 8 + [80.0] * 5, 100, 1) == pytest.approx(8000.0)


def test_a_shard_claimed_by_another_build_is_left_to_it(tmp_path: Path):
    """While another build holds a shard's claim, this one computes the other shards and
    leaves that one; the claim of a build that died (its lock gone, its file left) is taken
    over, and the build that saves the last shard finalizes."""
    import fcntl

    folder = partials_dir(tmp_path, "logreg")
    folder.mkdir(parents=True)
    other = open(claim_path(folder, 4, 8), "a")  # noqa: SIM115 (another build's claim)
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lines = []
    assert compute(tmp_path, "logreg", 12, "fp32", shard_networks=4,
                   report=lines.append) is None
    assert [(p.start, p.stop) for p in present(folder)] == [(0, 4), (8, 12)]
    assert lines[-1] == ("logreg: the 1 shard(s) left are being computed by other builds; "
                         "the last of them finalizes")
    # the time left is divided among the builds computing: the other one and this one
    shard_lines = [line for line in lines if "networks [" in line]
    assert len(shard_lines) == 2 and all("with 2 build(s) computing" in line
                                         for line in shard_lines), lines
    assert "last 1 shard(s)" in shard_lines[0] and "last 2 shard(s)" in shard_lines[1]
    assert builds_computing(folder) == 1
    assert not (tmp_path / "logreg" / "provenance.json").exists()
    other.close()  # that build died: its lock is released, its claim file stays
    assert claim_path(folder, 4, 8).exists() and builds_computing(folder) == 0
    entry = compute(tmp_path, "logreg", 12, "fp32", shard_networks=4, report=_quiet)
    prov = json.loads((entry / "provenance.json").read_text())
    assert [s["networks"] for s in prov["build"]["shard_list"]] == [[0, 4], [4, 8], [8, 12]]
    assert not folder.exists()


def test_two_builds_at_once_share_the_shards(tmp_path: Path):
    """Two `nads catalog compute` processes of one entry: every shard computed once, by
    either, and one entry written, equal to a one-shot run's."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "nads.cli", "catalog", "compute", "--arch", "lenet",
               "--networks", "24", "--shard-networks", "2", "--data", str(tmp_path / "built"),
               "--foreground", "--no-compile"]  # eager: bitwise the one-shot run's
    builds = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for _ in range(2)]
    outputs = [b.communicate(timeout=600)[0] for b in builds]
    assert [b.returncode for b in builds] == [0, 0], outputs
    computed = [re.findall(r"networks \[(\d+), (\d+)\)", out) for out in outputs]
    shards = sorted((int(a), int(b)) for found in computed for a, b in found)
    assert shards == [(i, i + 2) for i in range(0, 24, 2)], outputs  # each once
    assert sum("finalized" in out for out in outputs) == 1, outputs
    entry = tmp_path / "built" / "lenet"
    direct = export_direct(tmp_path / "direct", "lenet", networks=24, precision="fp32",
                           device="cpu", check_networks=4)
    np.testing.assert_array_equal(np.load(entry / "nads.npy"), np.load(direct / "nads.npy"))
    assert not partials_dir(tmp_path / "built", "lenet").exists()


def test_a_partial_of_another_precision_is_refused(tmp_path: Path):
    compute(tmp_path, "logreg", 8, "fp32", shard_networks=4, max_shards=1, report=_quiet)
    with pytest.raises(BuildError, match="another spec or precision"):  # wherever bf16 runs
        finalize_build(tmp_path, "logreg", 4, "bf16")


def test_the_command_builds_and_verify_fails_on_a_corrupted_copy(tmp_path: Path):
    runner = CliRunner()
    app = build_app()
    result = runner.invoke(app, ["catalog", "compute", "--arch", "logreg", "--networks", "10",
                                 "--shard-networks", "5", "--data", str(tmp_path),
                                 "--foreground"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    result = runner.invoke(app, ["catalog", "verify", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # another network's gradients under a matching sha256: only the recomputation catches it
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "logreg", copy / "logreg")
    grads = np.load(copy / "logreg" / "check_gradients.npy")
    np.save(copy / "logreg" / "check_gradients.npy", grads[::-1].copy())
    from jobs.shipped import sha256_file

    prov_path = copy / "logreg" / "provenance.json"
    prov = json.loads(prov_path.read_text())
    prov["files"]["check_gradients.npy"]["sha256"] = sha256_file(
        copy / "logreg" / "check_gradients.npy")
    prov_path.write_text(json.dumps(prov))
    result = runner.invoke(app, ["catalog", "verify", "--data", str(copy)])
    assert result.exit_code == 1, result.output
    assert "logreg: FAILED" in result.output


def test_lowest_priority_lowers_only_its_own_session_group():
    """nice 19 for the process, and where the kernel groups by session (autogroup), a session
    group of its own at nice 19: the caller's group keeps its priority."""
    import subprocess
    import sys

    from nads.catalog_background import group_nice

    before = group_nice()
    # once lowered, the child gets next to no CPU on a busy machine: it prints and leaves
    # without the interpreter's teardown
    code = ("import json, os, sys; from nads.catalog_background import lowest_priority; "
            "sys.stdout.write(json.dumps(lowest_priority(1))); sys.stdout.flush(); os._exit(0)")
    # started as a job of this session, and as `setsid` starts it (already leading a session
    # of its own, where setsid() is refused: its group was left at nice 0 before)
    for own_session in (False, True):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600, check=True, start_new_session=own_session)
        got = json.loads(out.stdout)
        assert got["nice"] == 19 and got["threads"] == 1
        if before is not None:
            assert got["autogroup_nice"] == 19, (own_session, got)
        assert group_nice() == before


def test_a_failed_entry_write_keeps_the_partials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """write_entry carries a background build's partials over into the new entry folder; if
    replacing the old folder fails midway, the partials are put back, not deleted."""
    from nads import catalog_export

    compute(tmp_path, "logreg", 8, "fp32", shard_networks=4, report=_quiet)  # an entry
    compute(tmp_path, "logreg", 12, "fp32", shard_networks=4, finalize=False, report=_quiet)
    folder = partials_dir(tmp_path, "logreg")
    before = {p.path.name: p.path.read_bytes() for p in present(folder)}
    assert list(before) == ["00000-00004.npz", "00004-00008.npz", "00008-00012.npz"]
    real_rmtree = shutil.rmtree

    def failing_rmtree(path, *args, **kwargs):
        if Path(path) == tmp_path / "logreg":
            raise OSError("disk trouble")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(catalog_export.shutil, "rmtree", failing_rmtree)
    with pytest.raises(OSError, match="disk trouble"):
        catalog_export.export_direct(tmp_path, "logreg", networks=6, precision="fp32",
                                     device="cpu")
    assert {p.path.name: p.path.read_bytes() for p in present(folder)} == before
    assert not list(tmp_path.glob(".logreg-*"))  # the temporary folder is gone


def test_a_bf16_build_is_refused_where_bf16_is_emulated(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    """On a CPU without native bf16 a bf16 build is tens of times slower than fp32
    (benchmarks/cpu_bf16.py): refused, saying so, before any shard; allowed where bf16 is
    native or unknown."""
    with pytest.raises(BuildError, match="precision: bf16 is emulated on this CPU"):
        check_precision("bf16", native=False)
    for precision, native in (("bf16", True), ("bf16", None), ("fp32", False)):
        check_precision(precision, native)
    # the build asks the CPU itself (here told it has no native bf16, whatever this one has)
    monkeypatch.setattr("nadcore.nads.precision.native_bf16", lambda device: False)
    with pytest.raises(BuildError, match="precision: bf16 is emulated on this CPU"):
        compute(tmp_path, "logreg", 4, "bf16", shard_networks=4, report=_quiet)
    assert not partials_dir(tmp_path, "logreg").exists()


def test_a_build_whose_compilation_fails_goes_on_in_eager_mode(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    """Where torch.compile cannot build its kernels (no C++ compiler on the machine), the
    build says so and computes the shard in eager mode, recorded as such."""
    import torch

    def no_compiler(fn, **_kwargs):  # noqa: ANN001, ANN202
        def fails(*_args, **_kw):  # noqa: ANN202
            raise RuntimeError("no C++ compiler")
        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    lines = []
    compute(tmp_path, "lenet", 4, "fp32", shard_networks=2, finalize=False, compiled=True,
            report=lines.append)
    assert lines[1] == ("lenet: compiling the forward passes failed (RuntimeError: no C++ "
                        "compiler); eager mode from here"), lines
    folder = partials_dir(tmp_path, "lenet")
    assert [(p.start, p.stop) for p in present(folder)] == [(0, 2), (2, 4)]
    assert not any(PartialNADs.load(p.path).meta["plan"]["compiled"] for p in present(folder))
