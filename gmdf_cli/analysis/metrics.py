"""Detection metrics as the paper reports them: ACC, AUC, EER, AP, and M_EER (journal eq. 13), frame- and video-level.

Labels: 1 = fake (the positive class), 0 = real. Scores: P(fake).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score, roc_curve

from ..engine.rules import file_score


@dataclass(frozen=True)
class ErrorRates:
    eer: float
    threshold: float
    far: float
    """False acceptance rate at that threshold: share of fakes scored as real."""
    frr: float
    """False rejection rate: share of reals scored as fake."""


def equal_error_rate(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> ErrorRates:
    """The operating point where FAR (fakes passed as real) equals FRR (reals flagged as fake), interpolated
    linearly between the two ROC points that bracket it."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("EER needs both real and fake samples")
    fpr, tpr, thresholds = roc_curve(y, s)  # fpr: reals flagged fake (FRR); 1 - tpr: fakes passed (FAR)
    far, frr = 1.0 - tpr, fpr
    diff = frr - far  # rises from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        eer = float((far[i] + frr[i]) / 2)
        return ErrorRates(eer, float(thresholds[i]), float(far[i]), float(frr[i]))
    t = diff[i - 1] / (diff[i - 1] - diff[i])  # fraction of the way from point i-1 to i where diff crosses 0
    eer_far = far[i - 1] + t * (far[i] - far[i - 1])
    eer_frr = frr[i - 1] + t * (frr[i] - frr[i - 1])
    threshold = (
        thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1])
        if np.isfinite(thresholds[i - 1])
        else (thresholds[i])
    )
    return ErrorRates(float((eer_far + eer_frr) / 2), float(threshold), float(eer_far), float(eer_frr))


def finite_or_none(value: float) -> float | None:
    """A metric as reported: None where it is undefined (NaN, e.g. AUC with one class only)."""
    return None if value != value else float(value)


def detection_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """ACC at ``threshold``, AUC, AP, EER, and the counts, for one set of samples."""
    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    n_fake, n_real = int(y.sum()), int(len(y) - y.sum())
    out: dict[str, float] = {"n_real": n_real, "n_fake": n_fake, "acc": float(accuracy_score(y, s >= threshold))}
    if n_real and n_fake:
        out.update(
            auc=float(roc_auc_score(y, s)), ap=float(average_precision_score(y, s)), eer=equal_error_rate(y, s).eer
        )
    else:
        out.update(auc=float("nan"), ap=float("nan"), eer=float("nan"))
    return out


def weighted_error(labels: Sequence[int], scores: Sequence[float], p_real: float) -> float:
    """``min_t P_real * FRR(t) + (1 - P_real) * FAR(t)`` over every threshold t (flagging nothing and flagging
    everything included): the smallest prior-weighted error any threshold reaches on these samples."""
    fpr, tpr, _ = roc_curve(np.asarray(labels), np.asarray(scores, dtype=float), drop_intermediate=False)
    frr, far = fpr, 1.0 - tpr  # reals flagged fake; fakes passed as real
    return float(np.min(p_real * frr + (1.0 - p_real) * far))


def m_eer(per_domain: Mapping[str, tuple[Sequence[int], Sequence[float]]], p_real: float | None = None) -> float:
    """Journal eq. 13: for each target domain i, ``M^i = P_real^i * FRR^i + (1 - P_real^i) * FAR^i`` and M_EER is the
    maximum over domains. Taken at the EER point, where FRR = FAR, the prior would cancel out (M^i = EER^i); so each
    domain's FRR and FAR are taken at the threshold that minimises its prior-weighted error (``weighted_error``):
    with P_real = 0.5 that is the minimum half total error rate. ``p_real`` is the prior of a real sample (default:
    each domain's own share of real samples)."""
    worst = 0.0
    for labels, scores in per_domain.values():
        y = np.asarray(labels)
        if len(np.unique(y)) < 2:
            raise ValueError("M_EER needs both real and fake samples in every domain")
        prior = float((y == 0).mean()) if p_real is None else p_real
        worst = max(worst, weighted_error(labels, scores, prior))
    return worst


def video_level(
    video_ids: Iterable[str], labels: Iterable[int], scores: Iterable[float]
) -> tuple[list[str], list[int], list[float]]:
    """Video score = the scoring rule's file score (the mean of its frame scores), grouped by video id. A video whose
    frames disagree on the label is an error in the data."""
    grouped: dict[str, list[float]] = defaultdict(list)
    label_of: dict[str, int] = {}
    for vid, label, score in zip(video_ids, labels, scores, strict=True):
        if label_of.setdefault(vid, int(label)) != int(label):
            raise ValueError(f"video {vid!r} has frames labelled both real and fake")
        grouped[vid].append(float(score))
    ids = sorted(grouped)
    return ids, [label_of[v] for v in ids], [file_score(grouped[v]) for v in ids]
