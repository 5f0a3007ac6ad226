"""gmdf_cli/tools/crossval.py: identity folds for the card's cross-validated figures."""

from __future__ import annotations

import csv
from pathlib import Path

from gmdf_cli.data.cache import read_index
from gmdf_cli.tools import crossval


def write_cache(cache: Path) -> None:
    """Two domains: 8 people with a real and a fake video (2 held out as val/test); 12 one-class stills (2 held out)."""
    cache.mkdir()
    rows = []
    for i in range(8):
        split = {0: "val", 1: "test"}.get(i, "train")
        for label, kind in ((0, "real"), (1, "fake")):
            for frame in range(3):
                rows.append(["celeb", split, f"{kind}/id{i}", label, frame, f"crops/{kind}{i}_{frame}.png", f"id{i}"])
    for i in range(12):
        split = "val" if i < 2 else "train"
        rows.append(["images", split, f"img/{i}", i % 2, 0, f"crops/img{i}.png", f"img{i}"])
    with (cache / "index.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["domain", "split", "video_id", "label", "frame", "path", "identity"], *rows])


def test_folds_keep_each_identity_in_one_fold_and_fold_zero_is_the_caches_own_held_out_split(tmp_path: Path) -> None:
    cv = crossval
    write_cache(tmp_path / "cache")
    folders = cv.write_folds(tmp_path / "cache", tmp_path / "folds", 3, seed=0)
    assert [f.name for f in folders] == ["fold0", "fold1", "fold2"]
    held: list[set[tuple[str, str]]] = []
    for folder in folders:
        rows = read_index(folder)
        assert len(rows) == 8 * 6 + 12
        assert all(r.path.is_absolute() and r.path.parent == (tmp_path / "cache" / "crops") for r in rows)
        val = {(r.domain, r.identity) for r in rows if r.split == "val"}
        train = {(r.domain, r.identity) for r in rows if r.split == "train"}
        assert val and not val & train
        for domain in ("celeb", "images"):  # both classes left to train on, and held out
            assert {r.label for r in rows if r.domain == domain and r.split == "train"} == {0, 1}
            assert {r.label for r in rows if r.domain == domain and r.split == "val"} == {0, 1}
        held.append(val)
    assert held[0] == {("celeb", "id0"), ("celeb", "id1"), ("images", "img0"), ("images", "img1")}
    assert not held[0] & held[1] and not held[0] & held[2] and not held[1] & held[2]
    assert len(held[0] | held[1] | held[2]) == 8 + 12  # every identity is held out exactly once
    assert {len([g for g in h if g[0] == "celeb"]) for h in held[1:]} == {3}  # the 6 train people dealt 3 and 3
