"""What an install pulls (issue 27): the client alone (`pip install 'nads[client]'`) brings no
torch, FastAPI or Celery; `dev` (scripts/install.sh, the README's commands) brings everything;
Python 3.11 to 3.13 are accepted, and scripts/install.sh prefers 3.11."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HEAVY = {"torch", "torchvision", "fastapi", "celery", "sqlalchemy", "uvicorn"}


def _names(extra: str | None) -> set[str]:
    """The distributions an install with `extra` asks for (the project's own extras expanded)."""
    reqs = PROJECT["dependencies"] + (PROJECT["optional-dependencies"][extra] if extra else [])
    names = set()
    for text in reqs:
        req = Requirement(text)
        if req.name == PROJECT["name"]:
            for nested in req.extras:
                names |= _names(nested)
        else:
            names.add(req.name.lower())
    return names


def test_the_client_asks_for_no_engine_and_no_service() -> None:
    assert {"httpx", "numpy"} <= _names("client") and not _names("client") & HEAVY
    assert not _names(None) & HEAVY  # `pip install nads` is the client too


def test_dev_and_service_ask_for_everything() -> None:
    assert HEAVY <= _names("service") <= _names("dev")
    assert {"torch", "torchvision"} <= _names("engine") and "fastapi" not in _names("engine")


def test_python_311_to_313() -> None:
    accepted = SpecifierSet(PROJECT["requires-python"])
    assert [v in accepted for v in ("3.10", "3.11.9", "3.12.3", "3.13.1", "3.14.0")] == \
        [False, True, True, True, False]


def _picked(tmp_path: Path, names: list[str]) -> str:
    """scripts/install.sh's choice with only `names` (links to this interpreter) on PATH."""
    bin_dir = tmp_path / "-".join(names)
    bin_dir.mkdir()
    for name in names:
        (bin_dir / name).symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"} | {"PATH": str(bin_dir)}
    out = subprocess.run(["/bin/bash", "-c", ". scripts/lib/python.sh && pick_python"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_install_prefers_python_311(tmp_path: Path) -> None:
    assert _picked(tmp_path, ["python3", "python3.13", "python3.12", "python3.11"]) == \
        "python3.11"
    assert _picked(tmp_path, ["python3", "python3.13", "python3.12"]) == "python3.12"
    assert _picked(tmp_path, ["python3"]) == "python3"


@pytest.mark.slow
def test_pip_resolves_a_client_install_without_torch_fastapi_celery(tmp_path: Path) -> None:
    """pip's own resolver (from the package index, nothing installed): the distributions
    `pip install '.[client]'` would install, transitive ones included."""
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                          "--ignore-installed", "--report", str(report), f"{ROOT}[client]"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
             for item in json.loads(report.read_text())["install"]}
    assert {"nads", "httpx", "numpy"} <= names, names
    assert not names & (HEAVY | {"pydantic-settings", "kombu", "scikit-learn"}), names
