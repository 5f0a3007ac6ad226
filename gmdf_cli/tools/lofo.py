"""Leave-one-family-out figures: how well models detect a generator family none of them was trained on.

    python -m gmdf_cli.tools.lofo --cache CACHE [--cache CACHE2 ...] --held FAMILY=WEIGHTS [--held ...] [--json OUT]

FAMILY is a domain of one of the caches (``gmdf prepare --name``: e.g. ``celeb``, ``ffpp``, or a cache of
talking-head videos that no recipe trains on); every split of it is scored. WEIGHTS is anything ``--weights``
takes, trained without FAMILY: a model whose config lists FAMILY among its source domains is refused, so no figure
here comes from a family its model has seen. Give one ``--held`` per trained run; several runs of one family (other
seeds) are averaged. One run may serve several families (e.g. trained without Celeb-DF, it is also judged on
talking heads that no run trains on).

Per family and run: the video-level AUC (a video's score the mean of its frames', the wildcard domain, as
``gmdf scan`` scores), then each family's mean over its runs, the mean over families, and whether they meet the
selection bar of the default detector's issue: every family at least 0.75, their mean at least 0.80.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from gmdf_cli.data.cache import Crop, read_index
from gmdf_cli.engine.batching import score_cached
from gmdf_cli.errors import GMDFError
from gmdf_cli.tools.card_metrics import metrics
from gmdf_cli.weights import load_weights

BAR_EACH = 0.75
BAR_MEAN = 0.80


def parse_held(items: list[str]) -> list[tuple[str, str]]:
    """``FAMILY=WEIGHTS`` items -> (family, weights) pairs."""
    pairs = []
    for item in items:
        family, sep, weights = item.partition("=")
        if not sep or not family or not weights:
            raise SystemExit(f"lofo: --held {item!r}: expected FAMILY=WEIGHTS")
        pairs.append((family, weights))
    return pairs


def family_rows(caches: list[Path]) -> dict[str, list[Crop]]:
    """Each domain of the caches -> its crops (every split). A domain name in two caches is ambiguous: refused."""
    rows: dict[str, list[Crop]] = {}
    where: dict[str, Path] = {}
    for cache in caches:
        for domain, crops in _by_domain(read_index(cache)).items():
            if domain in rows:
                raise SystemExit(f"lofo: domain {domain!r} is in both {where[domain]} and {cache}")
            rows[domain], where[domain] = crops, cache
    return rows


def _by_domain(rows: list[Crop]) -> dict[str, list[Crop]]:
    grouped: dict[str, list[Crop]] = defaultdict(list)
    for r in rows:
        grouped[r.domain].append(r)
    return grouped


def leave_one_family_out(caches: list[Path], held: list[tuple[str, str]]) -> dict[str, Any]:
    rows = family_rows(caches)
    unknown = sorted({f for f, _ in held} - set(rows))
    if unknown:
        raise SystemExit(f"lofo: no domain {', '.join(unknown)} in the caches (they hold {', '.join(sorted(rows))})")
    families_of: dict[str, list[str]] = defaultdict(list)
    for family, weights in held:
        if family in families_of[weights]:
            raise SystemExit(f"lofo: --held {family}={weights} is given twice")
        families_of[weights].append(family)
    runs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for weights, families in families_of.items():
        model, resolved, _ = load_weights(weights)
        seen = sorted(set(families) & set(model.config.domains))
        if seen:
            raise SystemExit(f"lofo: {weights} was trained on {', '.join(seen)}: it cannot be judged on them")
        chosen = [r for f in families for r in rows[f]]
        kept, scores = score_cached(model, chosen, 0)
        for family in families:
            mine = [(r, s) for r, s in zip(kept, scores, strict=True) if r.domain == family]
            m = metrics([r for r, _ in mine], [s for _, s in mine])
            runs[family][weights] = {
                "sha256": resolved.sha256,
                "video_auc": m["video_auc"],
                "n_real_videos": m["n_real_videos"],
                "n_fake_videos": m["n_fake_videos"],
            }
    per_family = {f: sum(r["video_auc"] for r in by_run.values()) / len(by_run) for f, by_run in runs.items()}
    mean = sum(per_family.values()) / len(per_family)
    meets = mean >= BAR_MEAN and all(a >= BAR_EACH for a in per_family.values())
    return {"runs": dict(runs), "families": per_family, "mean": mean, "meets_bar": meets}


def print_summary(summary: dict[str, Any]) -> None:
    print("| held-out family | run | real / fake videos | video AUC |")
    print("|---|---|---|---|")
    for family, by_run in summary["runs"].items():
        for weights, r in by_run.items():
            print(f"| {family} | {weights} | {r['n_real_videos']} / {r['n_fake_videos']} | {r['video_auc']:.3f} |")
        print(f"| {family} | mean of {len(by_run)} | | **{summary['families'][family]:.3f}** |")
    verdict = "meets" if summary["meets_bar"] else "does not meet"
    print(
        f"mean over {len(summary['families'])} families: {summary['mean']:.3f}; {verdict} the bar "
        f"(every family >= {BAR_EACH}, mean >= {BAR_MEAN})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, action="append", required=True, help="a prepared cache (repeatable)")
    parser.add_argument("--held", action="append", required=True, help="FAMILY=WEIGHTS, one per run (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        summary = leave_one_family_out(args.cache, parse_held(args.held))
    except GMDFError as exc:  # a missing cache or weights file: one line, not a traceback
        raise SystemExit(f"lofo: {exc}") from None
    print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
