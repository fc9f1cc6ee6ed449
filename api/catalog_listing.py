"""The catalog as every client sees it: one entry per architecture of the paper, built or not.

`GET /v1/catalog` is the one list the CLI (`nads catalog ls`), the Python client and the web page
read, so they show the same entries. An architecture with no row yet is listed as `absent`,
with how an operator builds it and what that needs: at the paper's settings (10,000 networks,
finite differences at 1x32x32) VGG-11, ResNet-18 and DenseNet-121 cost 6.2e15, 2.3e16 and
3.6e16 FLOPs: 4 to 26 days for the two-core development machine's CPU workers at the 1.6e10
FLOP/s they reached building LeNet (1.7e13 FLOPs in 1,047 s, BENCHMARKS.md), so they need a GPU
worker. Torch-free: the FLOPs are `nadcore.nads.cost`'s arithmetic on the entry's target spec.
"""

from __future__ import annotations

from typing import Any

from jobs.catalog import CATALOG_ARCHITECTURES, PAPER_NETWORKS, target_spec
from jobs.shipped import PARTIALS, background_networks
from nadcore.nads.cost import estimate_cost
from store.settings import Settings

# Past this many FLOPs a build is a GPU worker's: LeNet (1.7e13) builds on CPU workers in
# minutes, VGG-11 (6.2e15) is the cheapest of the three that wait for a GPU.
GPU_FLOPS = 1e14
ABSENT = "absent"


def build_flops(name: str, settings: Settings) -> float:
    """FLOPs of the entry's build at its cap (the paper's 10,000 networks)."""
    return float(estimate_cost(target_spec(name, settings)).flops or 0.0)


def needs_gpu(name: str, settings: Settings) -> bool:
    return build_flops(name, settings) > GPU_FLOPS


def how_to_build(name: str, settings: Settings) -> str:
    """The command that builds `name`, and what it needs."""
    flops = build_flops(name, settings)
    spec = target_spec(name, settings)
    what = (f"{spec.num_networks:,} networks, {spec.method.replace('_', ' ')} at "
            f"{'x'.join(map(str, spec.input_shape))}: {flops:.1e} FLOPs")
    where = ("it needs a GPU worker (CPU workers would take days to weeks); or, without one, "
             f"`nads catalog compute --arch {name}` computes a 2,000-network entry in the "
             "background on one CPU core, resumable (scripts/catalog_build.sh)"
             if flops > GPU_FLOPS else "CPU workers build it")
    return (f"an operator builds it with `nads catalog build --arch {name}` on the service's "
            f"machine ({what}); {where}")


def absent_entry(name: str, settings: Settings) -> dict[str, Any]:
    """The public JSON of an architecture the catalog has not started (no row yet); where a
    background CPU build's partials ship with the repository, how many networks they hold."""
    spec = target_spec(name, settings)
    message = f"not built on this server: {how_to_build(name, settings)}"
    done = background_networks(settings.catalog_shipped_dir, name)
    if done:
        message += (f"; meanwhile a background CPU build (nads catalog compute) has computed "
                    f"{done:,} networks, in catalog_data/{name}/{PARTIALS}/")
    return {
        "name": name, "status": ABSENT, "progress": 0.0, "message": message,
        "networks_done": done, "input_shape": list(spec.input_shape), "method": spec.method,
        "scale": spec.scale, "seed": spec.seed, "networks": None,
        "max_networks": spec.num_networks, "stability": None,
        "stability_k": settings.catalog_stability_k,
        "target_stability": settings.catalog_target_stability, "stopped_early": None,
        "paper_networks": PAPER_NETWORKS, "full_build_pending": False, "rounds": 0,
        "sha256": None, "built_at": None, "job_id": None, "error": None,
        "origin": None, "precision": None, "provenance": None, "identifiability": None,
    }


def with_absent(entries: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """Every architecture of the paper, in the paper's order: the described rows, and an
    absent entry for each one without a row; each says whether its build needs a GPU."""
    by_name = {e["name"]: e for e in entries}
    listed = [by_name.get(name) or absent_entry(name, settings)
              for name in CATALOG_ARCHITECTURES]
    listed += [e for e in entries if e["name"] not in CATALOG_ARCHITECTURES]
    return [e | {"needs_gpu": needs_gpu(e["name"], settings)
                 if e["name"] in CATALOG_ARCHITECTURES else None} for e in listed]
