"""Figures of the evaluation jobs: ROC curves per target domain and AUC against corruption severity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..report.results import RobustnessReport


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_png(per_domain: dict[str, tuple[list[int], list[float]]], level: str, path: Path) -> None:
    """One ROC curve per domain (labels, scores) with its AUC, into a PNG."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, (labels, scores) in per_domain.items():
        if len(set(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate (reals flagged fake)")
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.set_title(f"ROC, {level} level")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def auc_vs_severity_png(path: Path, summary: RobustnessReport, levels: list[int]) -> None:
    """AUC per corruption against severity (clean at 0), with their average."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    clean = summary.clean.auc
    xs = [0, *levels]
    per_level: dict[int, list[float]] = {lv: [] for lv in levels}
    for name, per in summary.results.items():
        ys = [clean] + [per[str(lv)].auc for lv in levels]
        ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", ms=4, lw=1.3, label=name)
        for lv in levels:
            auc = per[str(lv)].auc
            if auc is not None:
                per_level[lv].append(auc)
    mean = [clean] + [float(np.mean(v)) if v else np.nan for v in per_level.values()]
    ax.plot(xs, [np.nan if y is None else y for y in mean], color="black", lw=2.4, ls="--", label="average")
    ax.set_xticks(xs, ["clean", *map(str, levels)])
    ax.set_xlabel("severity level")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    ax.set_title("AUC under corruption")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
