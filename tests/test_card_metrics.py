"""gmdf_cli/tools/card_metrics.py: the figures of the model card, here its within-identity comparison."""

from __future__ import annotations

from pathlib import Path

from gmdf_cli.data.cache import Crop
from gmdf_cli.tools import card_metrics


def crops(identity: str, label: int, video: str, n: int) -> list[Crop]:
    return [Crop("celeb", "test", video, label, i, Path(f"{video}/{i}.png"), identity) for i in range(n)]


def test_same_identity_pairs_compare_video_means_within_each_identity_only() -> None:
    card = card_metrics
    rows = (
        crops("id1", 0, "real/id1_0001", 2)  # video mean 0.55
        + crops("id1", 1, "fake/id1_id2_0001", 3)  # 0.6: above its own real video, though below id2's real one
        + crops("id2", 0, "real/id2_0004", 2)  # 0.9
        + crops("id2", 1, "fake/id2_id1_0004", 1)  # 0.8: below
        + crops("id3", 1, "fake/id3_id1_0007", 1)  # no real video of id3: not a pair
    )
    scores = [0.5, 0.6, 0.6, 0.6, 0.6, 0.9, 0.9, 0.8, 0.99]  # frame scores, in the order above
    assert card.same_identity_pairs(rows, scores) == (1, 2)
    m = card.metrics(rows, scores)
    assert (m["pairs_fake_above"], m["n_pairs"]) == (1, 2)
    assert m["n_real_videos"] == 2 and m["n_fake_videos"] == 3


def test_the_report_has_a_row_per_domain_one_over_the_video_domains_and_one_over_everything() -> None:
    card = card_metrics
    rows = crops("id1", 0, "real/id1_0001", 2) + crops("id1", 1, "fake/id1_id2_0001", 2)
    rows += [Crop("images", "test", f"real/photos/{i}", i % 2, 0, Path(f"{i}.png"), f"p{i}") for i in range(4)]
    scores = [0.2, 0.4, 0.7, 0.9, 0.1, 0.8, 0.6, 0.3]  # images: real 0.1, 0.6; fake 0.8, 0.3
    report = card.build_report(rows, scores)
    assert list(report) == ["celeb", "images", "video domains", "all"]
    assert report["video domains"]["video_auc"] == 1.0 and report["video domains"]["n_frames"] == 4
    assert report["images"]["video_auc"] == 0.75  # 3 of the 4 fake-real pairs ordered right
    assert report["all"]["n_frames"] == 8


def test_unsplash_against_stylegan2_stills_stay_out_of_the_video_domains_row() -> None:
    card = card_metrics
    rows = crops("id1", 0, "real/id1_0001", 1) + crops("id1", 1, "fake/id1_id2_0001", 1)
    rows += [Crop("hardfakes", "test", f"{k}/{i}", i % 2, 0, Path(f"h{i}.png"), f"h{i}") for i, k in enumerate("rf")]
    report = card.build_report(rows, [0.2, 0.7, 0.1, 0.9])
    assert report["video domains"]["n_frames"] == 2 and report["all"]["n_frames"] == 4
