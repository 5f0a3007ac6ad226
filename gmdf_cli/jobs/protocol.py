"""The paper's evaluation protocols, run end to end (train, then evaluate), resumable part by part.

- ``multi-domain``: four leave-one-out protocols: train on 3 of ff / wdf / celeb / dff, test on the held-out one and
  on dfdc (the paper's multi-domain table: M_EER and AUC per protocol).
- ``single-source``: train on ff, test on each of celeb, dfdc, wdf, dff found in the cache.

``RUN/results.json`` keeps every finished part; a rerun skips them, and a part interrupted mid-training resumes from
its own checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from ..data.cache import read_index
from ..errors import UsageError
from ..fileio import write_text_atomic
from ..report.results import ProtocolPart
from ..report.schema import to_jsonable
from ..train.loop import Trainer, TrainRequest
from ..weights import load_checkpoint
from .evaluate import metrics_report, score_cache

MULTI_DOMAIN = ("ff", "wdf", "celeb", "dff")
EXTRA_TARGET = "dfdc"
SINGLE_SOURCE = ("ff", ("celeb", "dfdc", "wdf", "dff"))
PROTOCOLS = ("multi-domain", "single-source")


def plan(protocol: str, available: set[str]) -> list[tuple[str, list[str], list[str]]]:
    """(key, source domains, target domains) for each part of a protocol."""
    if protocol == "multi-domain":
        needed = set(MULTI_DOMAIN) | {EXTRA_TARGET}
        missing = sorted(needed - available)
        if missing:
            raise UsageError(
                f"the multi-domain protocol needs domains {', '.join(sorted(needed))} in the cache; "
                f"missing: {', '.join(missing)}"
            )
        return [(f"w/o {held}", [d for d in MULTI_DOMAIN if d != held], [held, EXTRA_TARGET]) for held in MULTI_DOMAIN]
    if protocol == "single-source":
        source, candidates = SINGLE_SOURCE
        targets = [d for d in candidates if d in available]
        if source not in available or not targets:
            raise UsageError(
                f"the single-source protocol needs {source} and at least one of {', '.join(candidates)} in the cache"
            )
        return [(f"{source} only", [source], targets)]
    raise UsageError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def run_protocol(
    protocol: str,
    cache: Path,
    out: Path,
    template: TrainRequest,
    console: Console,
    split: str = "test",
    p_real: float | None = None,
) -> dict[str, Any]:
    rows = read_index(cache)
    parts = plan(protocol, {r.domain for r in rows})
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for key, sources, targets in parts:
        if key in results:
            console.print(f"{key}: done already, skipped", markup=False)
            continue
        run_dir = out / key.replace("/", "").replace(" ", "-")
        console.print(f"{key}: training on {', '.join(sources)}", markup=False)
        request = dataclasses.replace(template, domains=sources, data=str(cache), out=str(run_dir))
        Trainer(request, console).fit()
        model, _ = load_checkpoint(run_dir / "best.safetensors", inference=True)
        scored = score_cache(model, cache, targets, split, console)
        frame, video = (metrics_report(scored, level, p_real, 0.5) for level in ("frame", "video"))
        results[key] = to_jsonable(ProtocolPart(sources, targets, str(run_dir / "best.safetensors"), frame, video))
        write_text_atomic(results_path, json.dumps(results, indent=2))
    markdown = to_markdown(protocol, results)
    write_text_atomic(out / "results.md", markdown)
    return {"protocol": protocol, "results": results, "markdown": markdown}


def to_markdown(protocol: str, results: dict[str, Any], level: str = "video") -> str:
    """The paper's table layout: one row per protocol, AUC per target and M_EER."""
    lines = [f"{protocol} protocol, {level}-level", "", "| protocol | targets: AUC | M_EER |", "|---|---|---|"]
    for key, r in results.items():
        m = r[level]
        aucs = ", ".join(f"{t} {_fmt(m['domains'][t]['auc'])}" for t in r["targets"])
        lines.append(f"| {key} | {aucs} | {_fmt(m['m_eer'])} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4f}"
