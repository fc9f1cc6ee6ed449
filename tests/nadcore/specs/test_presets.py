"""`preset: paper` is the paper's setting: checked against the Paper column of docs/science.md's
settings tables, read from the page (no number copied here), for probe and poison jobs."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from nadcore.poison.spec import PoisonSpec
from nadcore.probe.spec import ProbeSpec

SCIENCE = Path(__file__).resolve().parents[3] / "docs" / "science.md"


def paper_column(heading: str) -> list[tuple[list[str], list[str], str]]:
    """(setting names, Paper values, the Paper cell) of each row of the table under
    `heading`. Names are the backticked dotted names of the first cell; values are the
    backticked words of the Paper cell, else its numbers ("same": the Default cell's)."""
    text = SCIENCE.read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Setting", "---"):
            continue
        names = re.findall(r"`([\w.]+)`", cells[0])
        paper = cells[1] if cells[2].startswith("same") else cells[2]
        values = re.findall(r"`(\w+)`", paper) or re.findall(
            r"\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?", paper)
        rows.append((names, [v.replace(",", "") for v in values], paper))
    return rows


def _field(dump: dict[str, Any], name: str) -> Any:
    value: Any = dump
    for part in name.split("."):
        value = value[part]
    return value


def _same(expected: str, got: Any) -> bool:
    if isinstance(got, (bool, str)):
        return str(got).lower() == expected.lower()
    return float(expected) == pytest.approx(float(got))


def check_paper(heading: str, spec: Any, least: int) -> None:
    """Every setting of the table with a value in the Paper column equals the spec's."""
    dump = spec.model_dump(mode="json")
    checked = []
    for names, values, cell in paper_column(heading):
        for i, name in enumerate(names):
            try:
                got = _field(dump, name)
            except (KeyError, TypeError):
                continue  # not a field of the spec (e.g. a prose row)
            words = re.search(r"`\w+`", cell)
            if (not values or got is None or isinstance(got, dict)
                    or (isinstance(got, str) and not words)):
                # the paper's value is prose ("ResNet-18", "—"), or the spec's is decided at
                # run time (training.mean: CIFAR-10's for 3 channels, the data's otherwise)
                continue
            if isinstance(got, list):
                expected = values if len(names) == 1 else [values[i]]
                assert [float(v) for v in expected] == pytest.approx(
                    [float(v) for v in got]), (name, cell)
            else:
                expected = values[i] if len(values) == len(names) else values[0]
                assert _same(expected, got), (name, expected, got, cell)
            checked.append(name)
    assert len(checked) >= least, checked  # the table was read, not skipped


def test_probe_preset_paper_is_the_papers_column() -> None:
    spec = ProbeSpec.model_validate({"architecture": "lenet", "preset": "paper",
                                     "directions": {"kind": "fourier"}})
    check_paper("### Settings of a probe job", spec, least=13)
    assert spec.directions.phase == "sin"
    # given explicitly, the phase wins; other directions have none to fill
    given = ProbeSpec.model_validate({"architecture": "lenet", "preset": "paper",
                                      "directions": {"kind": "fourier", "phase": "cos"}})
    assert given.directions.phase == "cos"
    nad = ProbeSpec.model_validate({"architecture": "lenet", "preset": "paper",
                                    "directions": {"kind": "nad", "catalog": "lenet",
                                                   "indices": [0]}})
    assert nad.directions.kind == "nad"


def test_poison_preset_paper_is_the_papers_column() -> None:
    spec = PoisonSpec.model_validate({"architecture": "resnet18", "preset": "paper",
                                      "dataset": {"name": "digits"},
                                      "nads": {"catalog": "lenet"}, "indices": [0]})
    check_paper("### Settings of a poison job", spec, least=7)


def test_the_reader_sees_a_wrong_paper_value(tmp_path: Path, monkeypatch) -> None:
    """A table saying the paper used cosines would fail the check."""
    wrong = SCIENCE.read_text().replace("| `cos` | `sin` (the paper's heatmaps) |",
                                        "| `cos` | `cos` |")
    assert wrong != SCIENCE.read_text()
    page = tmp_path / "science.md"
    page.write_text(wrong)
    monkeypatch.setattr(sys.modules[__name__], "SCIENCE", page)
    spec = ProbeSpec.model_validate({"architecture": "lenet", "preset": "paper",
                                     "directions": {"kind": "fourier"}})
    with pytest.raises(AssertionError):
        check_paper("### Settings of a probe job", spec, least=13)
