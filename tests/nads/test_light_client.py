"""The client and the CLI's service verbs are light (issue 27): a user who only submits jobs and
downloads NADs needs httpx and numpy, not torch, the service's database layer or its broker. The
imports run in a fresh interpreter, where sys.modules shows everything they loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Packages of the engine and of the service (ours and third parties'): none may load.
HEAVY = ("torch", "torchvision", "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn",
         "celery", "kombu", "pydantic_settings", "matplotlib", "sklearn", "scipy",
         "nadcore", "store", "api", "jobs", "worker")

REPORT = f"""
import sys
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("HEAVY:", heavy)
"""

NOWHERE = "http://127.0.0.1:9"  # nothing listens: every verb fails at its first request


def _run(program: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
    out = subprocess.run([sys.executable, "-c", "import sys\n" + program + REPORT],
                         capture_output=True, text=True, timeout=60, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_nads_client_loads_only_httpx_and_numpy(tmp_path: Path) -> None:
    out = _run("import nads.client\nassert 'httpx' in sys.modules and 'numpy' in sys.modules",
               tmp_path)
    assert "HEAVY: []" in out, out


def test_the_cli_service_verbs_load_nothing_heavy(tmp_path: Path) -> None:
    """Each verb runs to its first request (refused: nothing listens at NOWHERE)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("architecture: lenet\nnum_networks: 10\n")
    archive = tmp_path / "net.pt"
    archive.write_bytes(b"PK")
    verbs = [["status", "ca3e0972"], ["wait", "ca3e0972"], ["cancel", "ca3e0972"],
             ["download", "ca3e0972", "--out", str(tmp_path)], ["ls"],
             ["submit", "nads", "--spec", str(spec), "--set", "seed=1"],
             ["submit", "probe", "--arch", "lenet", "--directions", "fourier"],
             ["catalog", "ls"], ["catalog", "get", "lenet", "--out", str(tmp_path / "x")],
             ["arch", "upload", str(archive), "--name", "n", "--input-shape", "1,8,8"],
             ["arch", "ls"], ["arch", "show", "ab12"], ["arch", "rm", "ab12"]]
    program = f"""
from nads.cli import main
for verb in {verbs!r}:
    try:
        main([*verb, "--url", {NOWHERE!r}])
    except SystemExit as exc:
        assert exc.code == 1, (verb, exc.code)
"""
    out = _run(program, tmp_path)
    assert "HEAVY: []" in out, out

