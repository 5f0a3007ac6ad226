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


def test_m_eer_weighs_frr_and_far_by_the_prior_at_the_best_threshold() -> None:
    # domain A: reals 0.1 0.4 0.6, fakes 0.3 0.7 0.8 0.9 (flag fake when score >= t). (FRR, FAR) by threshold:
    # inf (0, 1), 0.9 (0, 3/4), 0.8 (0, 2/4), 0.7 (0, 1/4), 0.6 (1/3, 1/4), 0.4 (2/3, 1/4), 0.3 (2/3, 0), 0.1 (1, 0).
    # Domain B is perfect (0 at t = 0.9). At the EER point FRR = FAR = 1/4 whatever the prior.
    a = ([0, 0, 0, 1, 1, 1, 1], [0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.9])
    b = ([0, 1], [0.2, 0.9])
    # P_real 0.9: best 0.9 * 0 + 0.1 * 1/4 = 0.025 at t = 0.7
    assert m_eer({"a": a, "b": b}, p_real=0.9) == pytest.approx(0.025)
    # P_real 0.1: best 0.1 * 2/3 + 0.9 * 0 = 1/15 at t = 0.3 (t = 0.7 would give 0.225)
    assert m_eer({"a": a, "b": b}, p_real=0.1) == pytest.approx(1 / 15)
    # each domain's own share of reals, 3/7 for A: 3/7 * 0 + 4/7 * 1/4 = 1/7 at t = 0.7
    assert m_eer({"a": a, "b": b}) == pytest.approx(1 / 7)


def test_m_eer_of_a_detector_ranked_upside_down_depends_on_the_prior() -> None:
    # one real scored 0.9, one fake 0.1: flag nothing (FRR 0, FAR 1), flag all (FRR 1, FAR 0), t = 0.9 (1, 1)
    x = {"x": ([0, 1], [0.9, 0.1])}
    assert m_eer(x, p_real=0.3) == pytest.approx(0.3)  # flag everything: only the real (weight 0.3) is wrong
    assert m_eer(x, p_real=0.8) == pytest.approx(0.2)  # flag nothing: only the fake (weight 0.2) is wrong


def test_video_level_groups_by_id_not_by_name() -> None:
    ids, labels, scores = video_level(["a/001", "a/001", "b/001"], [1, 1, 0], [0.2, 0.6, 0.3])
    assert ids == ["a/001", "b/001"] and labels == [1, 0] and scores == pytest.approx([0.4, 0.3])
    with pytest.raises(ValueError):
        video_level(["v", "v"], [0, 1], [0.1, 0.2])
