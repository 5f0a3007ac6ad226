"""The `gmdf train` job: a training request from the command line (or the run folder it resumes), the trainer with
a progress bar, and the rows of its closing summary. The training itself lives in ``gmdf_cli.train``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ..errors import UsageError
from ..progress import progress_bar

if TYPE_CHECKING:  # the trainer and torch load once the command line has been checked
    from ..train.loop import TrainRequest


def train_request(resume: Path | None, options: dict[str, Any]) -> TrainRequest:
    """``options`` are TrainRequest's fields as the command line gives them (``domains`` comma-separated,
    ``pretrained`` 'none' for random weights). With ``resume``, the run's own request, where and how fast it runs
    taken from ``options``."""
    if resume is None and not (options.get("domains") and options.get("data") and options.get("out")):
        raise UsageError("--domains, --data and --out are required (or --resume RUN)")
    from ..train.loop import TrainRequest, load_request

    if resume is not None:
        request = load_request(resume)
        if options.get("threads"):
            request.threads = options["threads"]
        request.device, request.workers = options["device"], options["workers"]  # where it runs, not what it computes
        return request
    fields = dict(options)
    fields.update(
        domains=[d.strip() for d in fields["domains"].split(",") if d.strip()],
        data=str(fields["data"]),
        out=str(fields["out"]),
        pretrained=None if fields["pretrained"] == "none" else fields["pretrained"],
        meta_test_weights=parse_weights(fields.get("meta_test_weights")),
    )
    return TrainRequest(**fields)


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``dfdc=3,celeb=0.5`` -> {"dfdc": 3.0, "celeb": 0.5}; one clear line for anything else."""
    if not text:
        return None
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or not weight > 0 or weight == float("inf"):
            raise UsageError(f"--meta-test-weights {item.strip()!r}: expected DOMAIN=WEIGHT with a positive weight")
        weights[name.strip()] = weight
    return weights


def run_train(request: TrainRequest, console: Console) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Train; returns the summary and, on the main process only, the rows of the closing table."""
    from ..train.loop import Trainer

    trainer = Trainer(request, console)
    with progress_bar(console, "steps", disable=not trainer.dist.main) as progress:
        summary = trainer.fit(progress)
    if not trainer.dist.main:
        return summary, None
    best = summary["best_val_auc"]
    shown = f"{best:.3f}" if best >= 0 else "none (no validation split holds both classes)"
    rows = {"steps": str(summary["steps"]), "best mean val video AUC": shown}
    for key, value in summary["last"].items():
        if key.startswith("val_") and key.endswith("video_auc"):
            rows[key] = f"{value:.3f}"
    rows["device"] = f"{summary['device']}, {summary['precision']}"
    if summary["world_size"] > 1:
        rows["processes"] = f"{summary['world_size']} (weights agree: {summary['ranks_agree']})"
    return summary, rows
