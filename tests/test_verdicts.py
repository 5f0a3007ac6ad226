"""gmdf_cli/tools/verdicts.py: held-out files' verdicts under the weights' own threshold and band."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmdf_cli.tools import verdicts
from gmdf_cli.weights import export_weights
from tests.test_lofo import save_model, write_cache


def test_tally_counts_uncertain_files_and_false_alarms_apart() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.45, 0.55, 0.9, 0.2, 0.5, 0.7, 0.95]
    t = verdicts.tally(labels, scores, threshold=0.5, band=(0.4, 0.6))
    assert (t["files"], t["uncertain"]) == (8, 3)  # 0.45, 0.55 and 0.5
    assert t["uncertain_share"] == pytest.approx(3 / 8)
    assert t["real_called_fake"] == pytest.approx(1 / 4)  # 0.9 (0.55 is uncertain)
    assert t["real_at_or_above_threshold"] == pytest.approx(2 / 4)  # 0.55 and 0.9
    assert t["fake_called_fake"] == pytest.approx(2 / 4)  # 0.7 and 0.95
    assert verdicts.tally(labels, scores, threshold=0.5, band=None)["uncertain"] == 0


def test_each_file_gets_the_verdict_of_the_weights_threshold_and_band(tmp_path: Path) -> None:
    write_cache(tmp_path, ("talk", "ph"), videos=4)
    weights = save_model(tmp_path / "w.safetensors", ["blend", "photos"], seed=3)
    banded = export_weights(weights, tmp_path / "b.safetensors", half=False, threshold=0.5, band=[0.0, 1.0])
    report = verdicts.verdict_report(str(banded.path), [tmp_path], ["talk"])
    assert set(report["domains"]) == {"talk"}
    talk = report["domains"]["talk"]
    assert (talk["real"], talk["fake"], talk["uncertain_share"]) == (4, 4, 1.0)  # the band holds every score
    plain = export_weights(weights, tmp_path / "p.safetensors", half=False, threshold=0.5)
    free = verdicts.verdict_report(str(plain.path), [tmp_path])["all"]
    assert free["files"] == 16 and free["uncertain"] == 0
    with pytest.raises(SystemExit, match="no threshold"):
        verdicts.verdict_report(weights, [tmp_path])
