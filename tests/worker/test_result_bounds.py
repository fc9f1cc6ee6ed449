"""Results from the sandbox are bounded before they are decompressed: a shard's .npz that
declares (and would inflate to) far more than the spec asks for is refused from its sizes, and
the worker's memory stays where it was (the issue's result inflated a worker from 384 MiB to
3,461 MiB and it kept it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nadcore.nads.partial import PartialNADs
from store.settings import get_settings
from tests.hostile_models import lenet_pt2, pickled_weight_pt2
from worker.sandbox import Limits, SandboxError, check_available, run_sandboxed
from worker.tasks import _Throttle
from worker.uploaded import clean_info, load_result, result_bytes, validate

BOMB_BYTES = 1 << 30


def zip_bomb(path: Path, declared: int = BOMB_BYTES) -> None:
    """A PartialNADs-shaped .npz whose gradients member inflates to `declared` bytes of zeros
    (about 1 MB deflated) with an honest .npy header."""
    n = declared // (8 * 3072)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (n, 3072)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("gradients.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(64 << 20)
            left = n * 3072 * 8
            while left:
                member.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
        z.writestr("eval_point.npy", _npy(np.zeros(3072)))
        z.writestr("header.npy", _npy(np.frombuffer(json.dumps(
            {"key": "k", "start": 0, "stop": n, "meta": {}}).encode(), dtype=np.uint8)))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


MEASURE = """
import sys
from pathlib import Path
from nadcore.nads.partial import PartialNADs
from worker.sandbox import SandboxError
from worker.uploaded import load_result, result_bytes
def rss(field):
    line = next(l for l in open('/proc/self/status') if l.startswith(field + ':'))
    return int(line.split()[1]) * 1024
data = Path(sys.argv[1]).read_bytes()
before = rss('VmRSS')
try:
    load_result(PartialNADs.load, data, 'networks 0..9', result_bytes(10 * 3072, 2 * 3072 ** 2))
    print('loaded')
except SandboxError as exc:
    print(str(exc))
print(before, rss('VmRSS'), rss('VmHWM'))
"""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "result.npz"
    zip_bomb(path)
    return path


def test_a_result_that_would_inflate_is_refused_and_memory_stays(bomb: Path) -> None:
    assert bomb.stat().st_size < 4 << 20
    with zipfile.ZipFile(bomb) as z:  # it does inflate: zipfile alone would read it all
        assert z.getinfo("gradients.npy").file_size > BOMB_BYTES - (1 << 20)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(bomb)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    message, sizes = done.stdout.strip().splitlines()
    before, after, peak = map(int, sizes.split())
    assert "refused result" in message and "what the job's spec asks for" in message, message
    assert after - before < 32 << 20, (before, after)  # back where it was
    assert peak - before < 64 << 20, (before, peak)  # and never inflated on the way


def test_a_result_within_the_bound_loads() -> None:
    part = PartialNADs("k", 0, 10, np.zeros(3072), gradients=np.ones((10, 3072)))
    buf = io.BytesIO()
    part.save(buf)
    limit = result_bytes(10 * 3072, 2 * 3072 ** 2, 3 * 3072, 2)
    got = load_result(PartialNADs.load, buf.getvalue(), "networks 0..9", limit)
    np.testing.assert_array_equal(got.gradients, part.gradients)
    # and the bound is what refuses: the same bytes under a bound of the gradients' size
    with pytest.raises(SandboxError, match="past the limit"):
        load_result(PartialNADs.load, buf.getvalue(), "networks 0..9", 10 * 3072 * 8)


@pytest.mark.skipif(check_available() is not None, reason="no sandbox here")
def test_a_frame_nested_too_deep_is_the_models_failure(tmp_path: Path) -> None:
    """A JSON frame of 200,000 `[` (within the 1 MiB bound) made the worker's json.loads raise
    RecursionError, which escaped as no SandboxError: the validation task failed, the
    architecture stayed `validating` and reconcile sent its validation again, for ever."""
    code = ("import os, struct, sys; p = b'[' * 200_000; "
            "os.write(int(sys.argv[2]), b'I' + struct.pack('>I', len(p)) + p); os._exit(0)")
    archive = tmp_path / "model.pt2"
    archive.write_bytes(pickled_weight_pt2(lenet_pt2(tmp_path), code))
    request = {"input_shape": [1, 16, 16], "init": "default", "archive_checks": False}
    with pytest.raises(SandboxError, match="info: the sandboxed model sent malformed data"):
        run_sandboxed("validate", request, archive, Limits(wall_s=120, memory_bytes=2 << 30))


@pytest.mark.skipif(check_available() is not None, reason="no sandbox here")
def test_a_report_with_a_huge_integer_is_cleaned_not_raised(tmp_path: Path) -> None:
    """JSON integers are unbounded: a validation report of {"flops": 10**400} made clean_info's
    np.isfinite raise TypeError in the worker (the task failed, the architecture stayed
    `validating`, and reconcile sent it again for ever). Numbers past int64 are dropped."""
    code = ("import json, os, struct, sys; p = json.dumps({'flops': 10 ** 400, 'num_outputs': "
            "10 ** 400}).encode(); os.write(int(sys.argv[2]), b'I' + struct.pack('>I', len(p))"
            " + p); os._exit(0)")
    archive = tmp_path / "model.pt2"
    archive.write_bytes(pickled_weight_pt2(lenet_pt2(tmp_path), code))
    settings = get_settings().model_copy(update={"unsafe_skip_archive_checks": True})
    info, reason = validate(settings, archive, [1, 16, 16], "default")
    assert info is None and reason == "validation returned an incomplete report"
    assert clean_info({"a": [10 ** 400, -(10 ** 30), 7, 1.5, float("nan")]}) == \
        {"a": [None, None, 7, 1.5, None]}


@pytest.mark.skipif(check_available() is not None, reason="no sandbox here")
def test_repeated_final_progress_is_one_database_round_trip(tmp_path: Path) -> None:
    """Progress frames are the model's word. A child repeating {"done": 1, "total": 1} sent
    565,000 frames in 3 s, and the worker's throttle let every final-looking one through (a
    database UPDATE each); the forced update now happens once per shard."""
    code = ("import os, struct, sys, time; fd = int(sys.argv[2]); p = b'{\"done\":1,\"total\":1}'"
            "; f = b'P' + struct.pack('>I', len(p)) + p; t = time.time()\n"
            "while time.time() - t < 2: os.write(fd, f * 100)\nos._exit(0)")
    archive = tmp_path / "model.pt2"
    archive.write_bytes(pickled_weight_pt2(lenet_pt2(tmp_path), code))
    gate, frames, round_trips = _Throttle(60.0), [], []

    def progress(done: int, total: int) -> None:
        frames.append(done)
        if gate.due(force=done >= total):
            round_trips.append(done)

    request = {"input_shape": [1, 16, 16], "init": "default", "archive_checks": False}
    with pytest.raises(SandboxError, match="without a result"):
        run_sandboxed("validate", request, archive, Limits(wall_s=120, memory_bytes=2 << 30),
                      progress=progress)
    assert len(frames) > 1000
    assert round_trips == [1]


def _shard_spec(archive: Path, input_shape: tuple[int, int, int], networks: int):  # noqa: ANN202
    import hashlib

    from nadcore.nads.spec import NADSpec
    return NADSpec(architecture={"id": "ab12cd", "sha256": hashlib.sha256(
        archive.read_bytes()).hexdigest()}, input_shape=input_shape, num_networks=networks,
        shards=2)


@pytest.mark.skipif(check_available() is not None, reason="no sandbox here")
def test_a_nad_shard_frame_is_bounded_by_the_specs_representation(tmp_path: Path) -> None:
    """A NAD shard's result was bounded by its gradients *plus* the moments' 2 x D x D floats,
    whichever the spec used: for 1 x 128 x 128 inputs and 2 networks (some 200 kB of
    gradients) 4.3 GB, for 3 x 512 x 512 some 10 TB, i.e. only by the frame's 4 GiB. A model
    that sent a frame of 256 MiB of zeros was taken whole into the worker's memory (its peak
    RSS rose by 770 MiB: the frame is copied on its way) before the .npz was refused. The
    bound is now that of the representation the engine uses for the spec, and the frame is
    refused from its header."""
    from worker.kinds import nads as nad_kind

    size = 64 << 20
    code = ("import os, struct, sys; fd = int(sys.argv[2]); "
            f"os.write(fd, b'R' + struct.pack('>I', {size})); z = bytes(1 << 20)\n"
            f"for _ in range({size >> 20}): os.write(fd, z)\nos._exit(0)")
    archive = tmp_path / "model.pt2"
    archive.write_bytes(pickled_weight_pt2(lenet_pt2(tmp_path), code))
    spec = _shard_spec(archive, (1, 128, 128), 4)
    settings = get_settings().model_copy(update={"unsafe_skip_archive_checks": True})
    limit = result_bytes(2 * 128 * 128, 128 * 128)  # the gradients and eval_point
    with pytest.raises(SandboxError, match=rf"sent {size:,} bytes; at most {limit:,} are"):
        nad_kind.sandboxed_shard(settings, spec, archive, 0, 2, 1, lambda d, t: None,
                                 lambda: False)


def test_a_moments_shard_is_bounded_by_its_moments_only() -> None:
    from nadcore.nads.spec import NADSpec
    from worker.kinds import nads as nad_kind

    d = 4096
    spec = NADSpec(architecture="lenet", input_shape=(1, 64, 64), num_networks=70_000,
                   shards=2)
    assert spec.representation == "moments"
    assert nad_kind.shard_result_limit(spec, 0, 35_000) == result_bytes(2, 2 * d, 2 * d * d, d)


WHOLE_REPLY = """
import io, json, os, struct, sys
import numpy as np
info = json.dumps({'num_networks': 3, 'stability': STABILITY,
                   'decomposition': DECOMPOSITION, 'info': {}}).encode()
buf = io.BytesIO()
np.savez(buf, nads=np.eye(2, 256, dtype=np.float32), eigenvalues=np.ones(2, np.float32),
         eval_point=np.zeros((1, 16, 16), np.float32))
for kind, payload in ((b'I', info), (b'R', buf.getvalue())):
    os.write(int(sys.argv[2]), kind + struct.pack('>I', len(payload)) + payload)
os._exit(0)
"""


@pytest.mark.skipif(check_available() is not None, reason="no sandbox here")
@pytest.mark.parametrize(("stability", "decomposition"), [
    ("{'\\u00b2': 0.5, '4': 0.25}", "'covariance'"), ("[1, 2]", "'covariance'"),
    ("{'1': 10 ** 400, '4': 0.25}", "'covariance'"), ("{'4': 0.25}", "'\\x1b]0;owned\\x07'")])
def test_a_whole_nad_jobs_report_is_cleaned_before_it_is_read(tmp_path: Path, stability: str,
                                                             decomposition: str) -> None:
    """The `info` of a whole NAD job (early stopping) was read raw: a stability key that
    str.isdigit() accepts and int() does not ('²'), a list, or an integer past any float made
    the worker raise ValueError / AttributeError / TypeError instead of keeping or refusing
    the model's word, and the decomposition's first 20 characters, terminal escapes included,
    went into the job's summary. The report is cleaned (clean_info) before anything reads it:
    what is not a stability is dropped, and the decomposition is one of the engine's two
    words or the result is refused."""
    from worker.kinds import nads as nad_kind

    code = WHOLE_REPLY.replace("STABILITY", stability).replace("DECOMPOSITION", decomposition)
    archive = tmp_path / "model.pt2"
    archive.write_bytes(pickled_weight_pt2(lenet_pt2(tmp_path), code))
    spec = _shard_spec(archive, (1, 16, 16), 3)
    settings = get_settings().model_copy(update={"unsafe_skip_archive_checks": True})

    def run():  # noqa: ANN202
        return nad_kind.sandboxed_whole(settings, spec, archive, 1, lambda d, t: None,
                                        lambda: False)

    if "covariance" not in decomposition:
        with pytest.raises(SandboxError, match="the job: the sandbox returned no valid "
                                               "decomposition"):
            run()
        return
    result = run()
    assert result.decomposition == "covariance"
    assert result.stability == ({} if stability.startswith("[") else {4: 0.25})


@pytest.mark.parametrize("curves", [np.float32(1.0), np.zeros((2, 1, 5), np.float32)],
                         ids=["0-d", "five-columns"])
def test_a_probe_shards_curves_take_every_dimension_from_the_spec(curves: np.ndarray) -> None:
    """The shape a probe shard's curves must have comes from the spec alone: a 0-d array raised
    IndexError in the worker (its shape was read off the array), and five columns passed."""
    from nadcore.probe.spec import ProbeSpec
    from nadcore.training.shards import ProbePartial
    from worker.kinds.probe import check_uploaded_shard

    spec = ProbeSpec.model_validate({"architecture": "logreg", "input_shape": [1, 4, 4],
                                     "directions": {"kind": "fourier"},
                                     "training": {"epochs": 1}})
    good = ProbePartial(0, 2, np.full(2, 50.0), np.zeros((2, 1, 4), np.float32), {})
    check_uploaded_shard(spec, 0, 2, good)
    with pytest.raises(SandboxError, match=r"directions 0\.\.1: curves has shape"):
        check_uploaded_shard(spec, 0, 2, ProbePartial(0, 2, good.accuracies, curves, {}))
