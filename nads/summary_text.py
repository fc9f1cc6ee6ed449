"""A job's summary in words for a person (the CLI): what the service's JSON says about how much
a result means. Reads only the JSON (no engine), so the client stays light."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def report(summary: Mapping[str, Any] | None) -> list[str]:
    """Lines for a person (the CLI) about a NAD job's summary: its stability beside chance,
    identifiable or not, and its overlap with the catalog's entry; [] for other summaries."""
    summary = summary or {}
    ident = summary.get("identifiability")
    lines = []
    if ident and ident.get("ks"):
        stab = ", ".join(f"{r['stability']:.4g} at k={r['k']} (chance {r['chance']:.4g})"
                         for r in ident["ks"])
        verdict = (f"identifiable up to k={ident['up_to_k']}" if ident["identifiable"]
                   else "NOT identifiable")
        lines.append(f"split-half stability: {stab}; {verdict}")
    elif ident:
        lines.append(f"split-half stability: {ident.get('reason')}")
    if "catalog" in summary:
        c = summary["catalog"]
        if c is None:
            lines.append("catalog: no ready entry of this architecture, input shape and method")
        else:
            over = ", ".join(f"{r['overlap']:.4g} at k={r['k']} (chance {r['chance']:.4g})"
                             for r in c["ks"])
            shared = (f"; the first {c['shared_networks']} networks are the same ones (same "
                      "seed): not an independent check" if c.get("shared_networks") else "")
            lines.append(f"overlap with the catalog's {c['entry']} ({c['networks']} networks): "
                         f"{over}{shared}")
    return lines


def not_identifiable(identifiability: Mapping[str, Any] | None) -> str | None:
    """One line for a person (CLI, catalog): None unless the NADs are not identifiable."""
    if not identifiability or identifiability.get("identifiable") is not False:
        return None
    return "NADs not identifiable: " + str(identifiability.get("reason"))


def not_learned(summary: dict[str, Any] | None) -> str | None:
    """One line for a person (the CLI): what did not learn and what to change; None when
    everything learned (or the summary predates the check)."""
    learning = (summary or {}).get("learning")
    if not learning or not learning.get("not_learned"):
        return None
    what = "nothing learned" if learning["did_not_learn"] else (
        f"{learning['not_learned']} of {learning['of']} {learning.get('outcome', 'at chance')}")
    return f"{what}: {learning['hint']}"


def learning_severity(summary: dict[str, Any] | None) -> str | None:
    """The learning verdict's severity ("info" or "warning", nadcore.training.learning_check; a
    summary from before severities: warning when something did not learn), None when everything
    learned."""
    learning = (summary or {}).get("learning")
    if not learning or not learning.get("not_learned"):
        return None
    return learning.get("severity") or "warning"
