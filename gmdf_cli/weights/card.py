"""What a weights file says about its own use, validated before anything is built from it: the decision threshold,
the uncertainty band around it, and the model card in brief (metadata keys ``threshold``, ``band``, ``card``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import WeightsError

CARD_FIELDS = ("caveat", "trained_on", "validation", "weaknesses", "intended_use")
MAX_TEXT = 2000
MAX_WEAKNESSES = 20
DEFAULT_RATE = 0.05
"""Calibration: the share of validation fakes a ``real`` verdict may miss, and of validation reals a ``fake``
verdict may flag (see ``calibrate``)."""


def _probability(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WeightsError(f"the weights' {what} is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise WeightsError(f"the weights' {what} must lie in [0, 1], not {number!r}")
    return number


def read_decision(meta: Mapping[str, str]) -> tuple[float | None, tuple[float, float] | None]:
    """The stored ``threshold`` (a probability) and ``band`` ([low, high] with low <= threshold <= high), if any."""
    threshold = _probability(meta["threshold"], "threshold") if "threshold" in meta else None
    if "band" not in meta:
        return threshold, None
    try:
        raw = json.loads(meta["band"])
    except ValueError:
        raise WeightsError("the weights' band is not JSON") from None
    if not isinstance(raw, list) or len(raw) != 2:
        raise WeightsError("the weights' band must be a list [low, high]")
    low, high = (_probability(v, "band") for v in raw)
    centre = 0.5 if threshold is None else threshold
    if not low <= centre <= high:
        raise WeightsError(f"the weights' band [{low}, {high}] does not hold the threshold {centre}")
    return threshold, (low, high)


def read_card(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The model card in brief, checked field by field (strings of bounded length, a short list of weaknesses)."""
    if "card" not in meta:
        return None
    try:
        raw = json.loads(meta["card"])
    except ValueError:
        raise WeightsError("the weights' card is not JSON") from None
    if not isinstance(raw, dict) or set(raw) != set(CARD_FIELDS):
        raise WeightsError(f"the weights' card must hold exactly {', '.join(CARD_FIELDS)}")
    weaknesses = raw["weaknesses"]
    if not isinstance(weaknesses, list) or len(weaknesses) > MAX_WEAKNESSES:
        raise WeightsError(f"the weights' card: weaknesses must be a list of at most {MAX_WEAKNESSES} lines")
    for value in [raw[k] for k in CARD_FIELDS if k != "weaknesses"] + weaknesses:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise WeightsError(f"the weights' card: every entry must be text of at most {MAX_TEXT} characters")
    return {k: raw[k] for k in CARD_FIELDS}


def calibrate(
    labels: Sequence[int],
    scores: Sequence[float],
    rate: float = DEFAULT_RATE,
    max_fpr: float | None = None,
    max_uncertain: float | None = None,
) -> tuple[float, list[float]]:
    """Threshold and band from validation scores (0 real, 1 fake): the threshold is the equal-error point, or with
    ``max_fpr`` the lowest score at or above which at most that share of the reals lie (a stated false-alarm rate);
    below ``low`` lie only ``rate`` of the fakes, at or above ``high`` only ``rate`` of the reals. Between them the
    detector's errors are too frequent to call either way: ``uncertain``. When the classes separate better than
    ``rate`` at the threshold, the band shrinks to the threshold itself (no uncertain verdicts).

    With ``max_uncertain``, a band holding more than that share of the validation items is narrowed towards the
    threshold (both ends by the same factor of their distance to it) until it holds at most that share: a verdict
    that commits more often, at the price of the ``rate`` guarantees."""
    from ..analysis.metrics import equal_error_rate

    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    if not ((y == 0).any() and (y == 1).any()):
        raise WeightsError("calibration needs validation scores of both real and fake samples")
    if max_fpr is None:
        threshold = float(np.clip(equal_error_rate(y, s).threshold, 0.0, 1.0))
    else:
        threshold = false_alarm_threshold(s[y == 0], max_fpr)
    low = float(np.quantile(s[y == 1], rate))
    high = float(np.quantile(s[y == 0], 1.0 - rate))
    if low >= high:
        return threshold, [threshold, threshold]
    band = [min(low, threshold), max(high, threshold)]
    if max_uncertain is not None:
        band = narrowed(s, threshold, band, max_uncertain)
    return threshold, band


def narrowed(scores: np.ndarray, threshold: float, band: list[float], max_uncertain: float) -> list[float]:
    """The widest band ``[t - f (t - low), t + f (high - t))``, f in [0, 1], holding at most ``max_uncertain`` of
    ``scores`` (the share inside grows with f, so f is found by bisection)."""

    def at(f: float) -> list[float]:
        return [threshold - f * (threshold - band[0]), threshold + f * (band[1] - threshold)]

    def share(b: list[float]) -> float:
        return float(np.mean((scores >= b[0]) & (scores < b[1])))

    if share(band) <= max_uncertain:
        return band
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share(at(mid)) <= max_uncertain else (lo, mid)
    return at(lo)


def false_alarm_threshold(reals: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold t in [0, 1] with at most ``max_fpr`` of ``reals`` scoring t or more: just above the
    real score that would be the first too many."""
    ranked = np.sort(np.asarray(reals, dtype=float))[::-1]
    allowed = int(np.floor(max_fpr * len(ranked) + 1e-9))
    if allowed >= len(ranked):
        return 0.0
    return float(min(1.0, np.nextafter(ranked[allowed], np.inf)))


BUILD_PATHS = ("data", "out")
"""Fields of a training request that name folders of the machine that trained it: not shipped, not reported."""
MAX_TRAINING_JSON = 65536


def read_training(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The training record (``training``: the request, step, epoch and best validation AUC) as data, without the
    build machine's folders; None when absent, too long or not a JSON object (it is metadata, never trusted)."""
    text = meta.get("training")
    if not text or len(text) > MAX_TRAINING_JSON:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    request = record.get("request")
    if isinstance(request, dict):
        record["request"] = {k: v for k, v in request.items() if k not in BUILD_PATHS}
    return record
