"""weights/card_metrics.py: the figures of the model card, here its within-identity comparison."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from gmdf_cli.data.cache import Crop

SCRIPT = Path(__file__).resolve().parents[1] / "weights" / "card_metrics.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("card_metrics", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def crops(identity: str, label: int, video: str, n: int) -> list[Crop]:
    return [Crop("celeb", "test", video, label, i, Path(f"{video}/{i}.png"), identity) for i in range(n)]


def test_same_identity_pairs_compare_video_means_within_each_identity_only() -> None:
    card = load_script()
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
