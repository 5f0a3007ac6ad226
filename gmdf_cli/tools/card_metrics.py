"""Per-source validation metrics for the model card (gmdf_cli/weights/shipped/CARD.md).

    python -m gmdf_cli.tools.card_metrics WEIGHTS CACHE [--split val,test] [--domains celeb,cross,images] [--json OUT]

Scores the cache's held-out crops as `gmdf scan` does (the wildcard domain: a deployed model never knows the
source) and reports video- and frame-level AUC per domain and per media source. A source holding one class only
(e.g. Stable Diffusion fakes, SimSwap reals) is measured against the held-out items of the other class of its domain.
A video's score is the mean of its frames' scores. The last column compares real and fake videos of the same
identity (see ``same_identity_pairs``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from gmdf_cli.analysis.metrics import detection_metrics, video_level
from gmdf_cli.data.cache import Crop, read_index
from gmdf_cli.engine.batching import score_cached
from gmdf_cli.jobs.evaluate import Scored
from gmdf_cli.weights import load_weights


def source_of(row: Crop) -> str:
    """The media source a cached crop came from, from its video id (``real/<source>/...``, or a synth folder
    ``real/<group>/<source>__<file>/<frame>``); the domain itself when there is nothing finer."""
    parts = row.video_id.split("/")
    if row.domain == "images" and len(parts) > 2:
        return parts[1]
    if row.domain == "cross" and len(parts) > 2:
        return re.split("__", parts[-2])[0]
    return row.domain


def same_identity_pairs(rows: list[Crop], scores: list[float]) -> tuple[int, int]:
    """Within-identity comparison: of the identities (prepare's ``--group-by`` groups) that hold both real and fake
    videos, in how many does the mean fake video score above the mean real one? Celeb-DF and FaceForensics++ fakes
    are made from real videos of the same person and scene, so this asks whether the forgery raises the score with
    scene, camera and resolution held fixed, which a pooled AUC over a few videos cannot separate."""
    keys = [f"{r.domain}/{r.video_id}" for r in rows]
    identity_of = {key: (r.domain, r.identity) for key, r in zip(keys, rows, strict=True)}
    by_class: dict[tuple[str, str], dict[int, list[float]]] = {}
    for key, label, score in zip(*video_level(keys, [r.label for r in rows], scores), strict=True):
        if identity_of[key][1]:
            by_class.setdefault(identity_of[key], {}).setdefault(label, []).append(score)
    both = [c for c in by_class.values() if 0 in c and 1 in c]
    above = sum(sum(c[1]) / len(c[1]) > sum(c[0]) / len(c[0]) for c in both)
    return above, len(both)


def metrics(rows: list[Crop], scores: list[float]) -> dict[str, float | int]:
    scored = Scored([f"{r.domain}/{r.video_id}" for r in rows], [r.label for r in rows], scores)
    frame, video = (detection_metrics(*scored.at(level)) for level in ("frame", "video"))
    above, pairs = same_identity_pairs(rows, scores)
    return {
        "video_auc": video["auc"],
        "frame_auc": frame["auc"],
        "video_acc": video["acc"],
        "n_real_videos": video["n_real"],
        "n_fake_videos": video["n_fake"],
        "n_frames": len(rows),
        "pairs_fake_above": above,
        "n_pairs": pairs,
    }


STILL_DOMAINS = ("images", "hardfakes")
"""Domains of still images against generated faces (train_default.sh's `images` and `hardfakes`); every other domain
comes from videos or from photos and their self-blends."""


def build_report(kept: list[Crop], scores: list[float]) -> dict[str, dict[str, float | int]]:
    """Metrics per domain, per media source inside a domain (when it has several), over the video domains
    together (when stills are also present) and over everything."""
    by_row = list(zip(kept, scores, strict=True))
    report: dict[str, dict[str, float | int]] = {}
    for domain in sorted({r.domain for r in kept}):
        mine = [(r, s) for r, s in by_row if r.domain == domain]
        report[domain] = metrics([r for r, _ in mine], [s for _, s in mine])
        sources = sorted({source_of(r) for r, _ in mine})
        for source in sources if len(sources) > 1 else []:
            own = [(r, s) for r, s in mine if source_of(r) == source]
            classes = {r.label for r, _ in own}
            if len(classes) == 1:  # one-class source: against the other class of its domain
                own += [(r, s) for r, s in mine if r.label not in classes]
            report[f"{domain}/{source}"] = metrics([r for r, _ in own], [s for _, s in own])
    from_video = [(r, s) for r, s in by_row if r.domain not in STILL_DOMAINS]
    if 0 < len(from_video) < len(by_row):
        report["video domains"] = metrics([r for r, _ in from_video], [s for _, s in from_video])
    report["all"] = metrics(kept, scores)
    return report


def print_report(report: dict[str, dict[str, float | int]]) -> None:
    print("| set | video AUC | frame AUC | video ACC | real / fake videos | frames | same identity: fake above real |")
    print("|---|---|---|---|---|---|---|")
    for name, m in report.items():
        pairs = f"{m['pairs_fake_above']} / {m['n_pairs']}" if m["n_pairs"] else "-"
        print(
            f"| {name} | {m['video_auc']:.3f} | {m['frame_auc']:.3f} | {m['video_acc']:.3f} | "
            f"{m['n_real_videos']} / {m['n_fake_videos']} | {m['n_frames']} | {pairs} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("cache", type=Path)
    parser.add_argument("--split", default="val,test", help="comma-separated splits (or all)")
    parser.add_argument("--domains", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    splits = set(args.split.split(","))
    model, resolved, _ = load_weights(args.weights)
    rows = [r for r in read_index(args.cache) if "all" in splits or r.split in splits]
    if args.domains:
        rows = [r for r in rows if r.domain in args.domains.split(",")]
    kept, scores = score_cached(model, rows, 0)
    report = build_report(kept, scores)
    print(f"weights {resolved.name} (sha256 {resolved.sha256[:16]}), splits {sorted(splits)}, wildcard domain")
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
