"""The documents cite only what the repository holds: every relative link of README.md,
BENCHMARKS.md and docs/*.md resolves to a file (and its #anchor to a heading of that file, as
GitHub makes anchors), and every `.md` document they, the code, the tests, the scripts and the
benchmarks name exists (issues 17 and 27: the README and eighteen docstrings cited two planning
documents that were never in the repository)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NAMED = re.compile(r"(?<![\w/.-])([\w./-]*[A-Za-z]\w*\.md)\b")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# Files a document names that a script writes, not documents of the repository.
WRITTEN = {"summary.md": "benchmarks/gpu_run.sh"}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: Counter[str] = Counter()
    out = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            out.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return out


def _text(path: Path) -> str:
    return FENCE.sub("", path.read_text())


def test_the_science_and_design_documents_are_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/science.md", "docs/design.md"):
        assert (ROOT / doc).is_file() and f"]({doc}" in readme, doc


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in LINK.findall(_text(document)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (document.parent / file).resolve() if file else document
        if not path.exists() or ROOT not in path.parents and path != ROOT:
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_markdown_document_named_exists(document: Path) -> None:
    text = LINK.sub("", _text(document))  # links are the test above's
    missing = sorted({name for name in NAMED.findall(text)
                      if not (document.parent / name).exists() and not (ROOT / name).exists()
                      and Path(name).name not in WRITTEN})
    assert not missing, f"{document.relative_to(ROOT)} names {missing}, not in the repository"


# Where code names documents: every text file of the repository that is not a document itself.
SOURCE_SUFFIXES = {".py", ".sh", ".toml", ".yml", ".yaml", ".ini", ".ipynb", ".js", ".html",
                   ".css", ".mako", ".gpu", ".api", ""}
SKIPPED_DIRS = {".venv", ".git", "catalog_data", "node_modules", "__pycache__", "build", "var"}


def _source_files() -> list[Path]:
    return [path for path in sorted(ROOT.rglob("*"))
            if path.is_file() and path.suffix in SOURCE_SUFFIXES
            and not any(part in SKIPPED_DIRS or part.startswith(".") and part != ".ci"
                        for part in path.relative_to(ROOT).parts[:-1])]


def test_the_code_names_only_documents_of_the_repository() -> None:
    documents = {path.name for path in ROOT.rglob("*.md")
                 if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)}
    missing = sorted({f"{path.relative_to(ROOT)}: {name}"
                      for path in _source_files()
                      for name in NAMED.findall(path.read_text(errors="replace"))
                      if not (ROOT / name).exists() and Path(name).name not in documents
                      and Path(name).name not in WRITTEN})
    assert len(_source_files()) > 200, "the scan must see the repository's code"
    assert not missing, f"code names documents that are not in the repository: {missing}"


def test_the_files_named_as_written_are_written() -> None:
    for name, script in WRITTEN.items():
        assert name in (ROOT / script).read_text(), (name, script)


def test_the_slugs_are_githubs() -> None:
    assert slug("2. The estimator") == "2-the-estimator"
    assert slug("The architectures (`nadcore/networks/zoo.py`)") == \
        "the-architectures-nadcorenetworkszoopy"
    assert slug("Configuration (environment, `NADS_` prefix; `store/settings.py`)") == \
        "configuration-environment-nads_-prefix-storesettingspy"
