"""How often a weights file commits, and how often it is wrong when it does: its verdicts on held-out files.

    python -m gmdf_cli.tools.verdicts WEIGHTS --cache CACHE [--cache ...] [--domains talk,ph] [--split all] [--json OUT]

Each file (a video's crops, or one photo's) is scored as ``gmdf scan`` scores it (the mean of its crops' P(fake),
wildcard domain) and given the verdict of the weights' own threshold and uncertainty band (``engine.rules``). Per
domain and over all: how many files are ``uncertain``, how many real files are called ``fake`` (false alarms) or
score at or above the threshold, and how many fakes are called ``fake``. A model card quotes these beside each other:
a band that swallows most files avoids false alarms by saying nothing.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from gmdf_cli.analysis.metrics import video_level
from gmdf_cli.data.cache import Crop, read_index
from gmdf_cli.engine import rules
from gmdf_cli.engine.batching import score_cached
from gmdf_cli.errors import GMDFError
from gmdf_cli.weights import load_weights
from gmdf_cli.weights.card import read_decision


def tally(labels: list[int], scores: list[float], threshold: float, band: rules.Band | None) -> dict[str, Any]:
    """Verdict counts of files with these labels (0 real, 1 fake) and scores."""
    counts: Counter[tuple[int, str]] = Counter(
        (label, rules.verdict(score, threshold, band)) for label, score in zip(labels, scores, strict=True)
    )
    reals, fakes = labels.count(0), labels.count(1)
    files = reals + fakes
    uncertain = counts[(0, "uncertain")] + counts[(1, "uncertain")]
    above = sum(s >= threshold for s, y in zip(scores, labels, strict=True) if y == 0)
    return {
        "files": files,
        "real": reals,
        "fake": fakes,
        "uncertain": uncertain,
        "uncertain_share": uncertain / files if files else float("nan"),
        "real_called_fake": counts[(0, "fake")] / reals if reals else float("nan"),
        "real_at_or_above_threshold": above / reals if reals else float("nan"),
        "fake_called_fake": counts[(1, "fake")] / fakes if fakes else float("nan"),
    }


def verdict_report(
    weights: str, caches: list[Path], domains: list[str] | None = None, splits: set[str] | None = None
) -> dict[str, Any]:
    model, resolved, meta = load_weights(weights)
    threshold, band = read_decision(meta)
    if threshold is None:
        raise SystemExit(f"verdicts: {weights} carries no threshold (export it with --calibrate)")
    rows: list[Crop] = []
    for cache in caches:
        rows += [
            r
            for r in read_index(cache)
            if (not domains or r.domain in domains) and (splits is None or "all" in splits or r.split in splits)
        ]
    if not rows:
        raise SystemExit("verdicts: no crops of those domains and splits in the caches")
    kept, scores = score_cached(model, rows, 0)
    keys, labels, file_scores = video_level([f"{r.domain}/{r.video_id}" for r in kept], [r.label for r in kept], scores)
    domain_of = [k.split("/", 1)[0] for k in keys]
    report: dict[str, Any] = {"weights": resolved.name, "threshold": threshold, "band": band, "domains": {}}
    for domain in sorted(set(domain_of)):
        mine = [i for i, d in enumerate(domain_of) if d == domain]
        report["domains"][domain] = tally([labels[i] for i in mine], [file_scores[i] for i in mine], threshold, band)
    report["all"] = tally(list(labels), list(file_scores), threshold, band)
    return report


def _pct(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"


def print_report(report: dict[str, Any]) -> None:
    band = report["band"]
    shown = f"[{band[0]:.3f}, {band[1]:.3f})" if band else "none"
    print(f"weights {report['weights']}: threshold {report['threshold']:.3f}, band {shown}")
    print("| set | files (real / fake) | uncertain | real called fake | real >= threshold | fakes called fake |")
    print("|---|---|---|---|---|---|")
    for name, t in [*report["domains"].items(), ("all", report["all"])]:
        print(
            f"| {name} | {t['files']} ({t['real']} / {t['fake']}) | {_pct(t['uncertain_share'])} | "
            f"{_pct(t['real_called_fake'])} | {_pct(t['real_at_or_above_threshold'])} | {_pct(t['fake_called_fake'])} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--cache", type=Path, action="append", required=True, help="a prepared cache (repeatable)")
    parser.add_argument("--domains", default="", help="comma-separated domains (default: all)")
    parser.add_argument("--split", default="all", help="comma-separated splits, or all")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        report = verdict_report(
            args.weights, args.cache, [d for d in args.domains.split(",") if d] or None, set(args.split.split(","))
        )
    except GMDFError as exc:  # a missing cache or weights file: one line, not a traceback
        raise SystemExit(f"verdicts: {exc}") from None
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
