"""Metrics against sklearn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gmdf_cli.analysis.metrics import detection_metrics, equal_error_rate, m_eer, video_level


def test_eer_hand_computed_with_a_crossing_between_roc_points() -> None:
    # reals: 0.1 0.4 0.6 ; fakes: 0.3 0.7 0.8 0.9
    labels = [0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.9]
    rates = equal_error_rate(labels, scores)
    # threshold just above 0.6: FRR 0/3, FAR 1/4; at 0.6: FRR 1/3, FAR 1/4; at 0.4: FRR 2/3, FAR 1/4
    # FRR - FAR goes from -1/4 (t>0.6) to +1/12 (t=0.6): crossing 3/4 of the way; EER = 1/4
    assert rates.eer == pytest.approx(0.25)
    assert rates.far == pytest.approx(0.25) and rates.frr == pytest.approx(0.25)


def test_eer_of_a_perfect_and_a_random_detector() -> None:
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]).eer == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    assert equal_error_rate(labels, rng.random(20000)).eer == pytest.approx(0.5, abs=0.02)


def test_detection_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 500), 0, 1)
    m = detection_metrics(labels, scores)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["acc"] == pytest.approx(float(((scores >= 0.5) == labels).mean()))
    assert m["n_fake"] == labels.sum() and m["n_real"] == 500 - labels.sum()


def test_m_eer_with_a_prior_hand_computed() -> None:
    # domain A: EER point FAR = FRR = 1/4 (above); domain B: perfect
    a = ([0, 0, 0, 1, 1, 1, 1], [0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.9])
    b = ([0, 1], [0.2, 0.9])
    assert m_eer({"a": a, "b": b}, p_real=0.9) == pytest.approx(0.9 * 0.25 + 0.1 * 0.25)
    # domain-specific prior: P_real of A = 3/7; M = 3/7 * FRR + 4/7 * FAR = 1/4 since both are 1/4
    assert m_eer({"a": a, "b": b}) == pytest.approx(0.25)


def test_m_eer_uses_the_prior_when_far_and_frr_differ() -> None:
    # one real, one fake ranked wrong: FAR = FRR = 1 at every crossing -> M = 1 for any prior
    assert m_eer({"x": ([0, 1], [0.9, 0.1])}, p_real=0.3) == pytest.approx(1.0)


def test_video_level_groups_by_id_not_by_name() -> None:
    ids, labels, scores = video_level(["a/001", "a/001", "b/001"], [1, 1, 0], [0.2, 0.6, 0.3])
    assert ids == ["a/001", "b/001"] and labels == [1, 0] and scores == pytest.approx([0.4, 0.3])
    with pytest.raises(ValueError):
        video_level(["v", "v"], [0, 1], [0.1, 0.2])
