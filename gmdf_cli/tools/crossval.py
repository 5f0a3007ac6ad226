"""K-fold cross-validation over identities, for steadier held-out figures than one tiny validation split.

    python -m gmdf_cli.tools.crossval folds CACHE OUT [--folds 3] [--seed 0]
    gmdf train ... --data OUT/fold1 --out RUN1        (the card's training command, once per fold 1..K-1)
    python -m gmdf_cli.tools.crossval score OUT WEIGHTS0 WEIGHTS1 ... [--json FILE]

``folds`` writes one cache index per fold (``OUT/fold<k>/index.csv``, pointing at CACHE's crops, nothing copied)
whose ``val`` split is that fold's held-out identities and whose ``train`` split is everything else. Fold 0 holds
out exactly CACHE's own ``val`` and ``test`` identities, so the model trained on CACHE (the shipped default) is fold
0's model and needs no retraining. CACHE's training identities are dealt at random into folds 1..K-1, separately
for identities with both classes, only real and only fake videos, so that every fold holds out some of each.
An identity is prepare's ``--group-by`` group of a domain (a Celeb-DF person, a pair of synth source videos, a
still image): it never lies in two folds.

``score`` scores every fold's held-out crops with that fold's model (``WEIGHTS<k>``, in fold order) as `gmdf scan`
does, pools them, and prints the card's table (per domain and media source) over the pooled out-of-fold scores,
then one line per fold. Every item is then scored by a model that never saw its identity.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from gmdf_cli.data.cache import INDEX_FIELDS, Crop, read_index
from gmdf_cli.engine.batching import score_cached
from gmdf_cli.fileio import atomic_path
from gmdf_cli.tools.card_metrics import STILL_DOMAINS, build_report, metrics, print_report
from gmdf_cli.weights import load_weights


def group_of(row: Crop) -> tuple[str, str]:
    return row.domain, row.identity or row.video_id


def assign_folds(rows: list[Crop], folds: int, seed: int) -> dict[tuple[str, str], int]:
    """(domain, identity) -> fold: 0 for the cache's val and test identities, 1..folds-1 for its train identities,
    dealt in turn, at random, per domain and per class composition (both / real only / fake only)."""
    if folds < 2:
        raise SystemExit("crossval: --folds must be at least 2")
    rng = np.random.default_rng(seed)
    classes: dict[tuple[str, str], set[int]] = defaultdict(set)
    held: set[tuple[str, str]] = set()
    for r in rows:
        classes[group_of(r)].add(r.label)
        if r.split != "train":
            held.add(group_of(r))
    fold = {g: 0 for g in held}
    strata: dict[tuple[str, tuple[int, ...]], list[tuple[str, str]]] = defaultdict(list)
    for g in sorted(classes):
        if g not in held:
            strata[(g[0], tuple(sorted(classes[g])))].append(g)
    turn: dict[str, int] = {}  # per domain, the next fold to deal to: strata continue where the last one ended
    for (domain, _), members in strata.items():
        turn.setdefault(domain, int(rng.integers(folds - 1)))
        for j in rng.permutation(len(members)):
            fold[members[int(j)]] = 1 + turn[domain] % (folds - 1)
            turn[domain] += 1
    return fold


def write_folds(cache: Path, out: Path, folds: int, seed: int) -> list[Path]:
    rows = read_index(cache)
    fold = assign_folds(rows, folds, seed)
    paths = []
    for k in range(folds):
        train = [r for r in rows if fold[group_of(r)] != k]
        for domain in sorted({r.domain for r in rows}):
            labels = {r.label for r in train if r.domain == domain}
            if labels != {0, 1}:
                raise SystemExit(f"crossval: fold {k} would leave domain {domain!r} without both classes to train on")
        folder = out / f"fold{k}"
        with atomic_path(folder / "index.csv") as tmp, tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(INDEX_FIELDS)
            for r in rows:
                split = "val" if fold[group_of(r)] == k else "train"
                writer.writerow([r.domain, split, r.video_id, r.label, r.frame, r.path.resolve(), r.identity])
        paths.append(folder)
        mine = [(d, i) for (d, i), f in fold.items() if f == k]
        held = sorted(f"{d}:{i}" for d, i in mine if d not in STILL_DOMAINS)
        n_stills = sum(d in STILL_DOMAINS for d, _ in mine)
        print(f"fold {k}: holds out {' '.join(held)} and {n_stills} images -> {folder}")
    return paths


def score(out: Path, weights: list[str], as_json: Path | None) -> None:
    kept_all: list[Crop] = []
    scores_all: list[float] = []
    per_fold = {}
    for k, name in enumerate(weights):
        rows = [r for r in read_index(out / f"fold{k}") if r.split == "val"]
        if not rows:
            raise SystemExit(f"crossval: fold {k} holds out nothing")
        model, resolved, _ = load_weights(name)
        kept, scores = score_cached(model, rows, 0)
        per_fold[f"fold{k}"] = metrics(kept, scores)
        print(f"fold {k}: {resolved.name} (sha256 {resolved.sha256[:16]}), {len(kept)} held-out crops")
        kept_all += kept
        scores_all += scores
    report = build_report(kept_all, scores_all)
    print("pooled out-of-fold scores (wildcard domain):")
    print_report(report)
    print("per fold, all held-out items:")
    print_report(per_fold)
    if as_json:
        as_json.write_text(json.dumps({"pooled": report, "folds": per_fold}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("folds", help="write one cache index per fold")
    make.add_argument("cache", type=Path)
    make.add_argument("out", type=Path)
    make.add_argument("--folds", type=int, default=3)
    make.add_argument("--seed", type=int, default=0)
    rate = sub.add_parser("score", help="pooled out-of-fold metrics")
    rate.add_argument("out", type=Path)
    rate.add_argument("weights", nargs="+", help="one model per fold, fold 0 first")
    rate.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.command == "folds":
        write_folds(args.cache, args.out, args.folds, args.seed)
    else:
        score(args.out, args.weights, args.json)


if __name__ == "__main__":
    main()
