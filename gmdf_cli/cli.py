"""The `gmdf` command line. Each command parses, calls one function, and renders (rich on stderr, JSON on stdout)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .data import DETECTION_SIDE
from .errors import EXIT_FAILURE, GMDFError
from .model import CONFIGS
from .progress import progress_bar

err = Console(stderr=True, highlight=False)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised by our own SIGINT handler. With Python's default handler an interrupted scan under CPU load
    sometimes ended by SIGINT (status -2) after it had caught the interrupt and written its report, instead of with
    exit code 130 (CPython flags an exact KeyboardInterrupt seen in some of its C entry points as unhandled, and
    never looks at subclasses); with this subclass it did not."""


def _on_sigint(signum: int, frame: object) -> None:
    raise Interrupted


class GMDFGroup(click.Group):
    """Click group that turns user-caused errors into one line and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
        try:
            return super().invoke(ctx)
        except GMDFError as exc:
            err.print(f"[bold red]gmdf: error:[/] {exc}", soft_wrap=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("[bold red]gmdf: interrupted[/]")
            ctx.exit(130)


def device_option(f: Any) -> Any:
    """--device, the same on every command that runs a network (the model, the face detector or both)."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.",
    )(f)


def precision_option(f: Any) -> Any:
    return click.option(
        "--precision",
        type=click.Choice(["fp32", "bf16", "fp16"]),
        default="fp32",
        show_default=True,
        help="fp32 reproduces bit for bit; bf16/fp16 halve memory and are much faster on GPUs "
        "(scores differ by ~1e-3; fp16 is for GPUs).",
    )(f)


def config_option(what: str) -> Any:
    """--config for the commands that train: the paper's vit-b-16 unless told otherwise."""
    return click.option(
        "--config",
        "config_name",
        type=click.Choice(sorted(CONFIGS)),
        default="vit-b-16",
        show_default=True,
        help=f"{what}: vit-b-16 (the paper, from pretrained CLIP), cnn-small (CPU-sized), vit-tiny (a test toy).",
    )


def _device(spec: str) -> str:
    """Check --device before any work (one clear line if it does not exist); returns the resolved name."""
    from .device import resolve_device

    return str(resolve_device(spec))


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=GMDFGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gmdf")
def cli() -> None:
    """gmdf: tell whether the faces in a video or image are deepfakes (GM-DF, ACM MM 2025).

    \b
    Exit codes: 0 success, 1 something failed (results already computed are kept), 2 usage error.
    """


@cli.command()
@click.option("--model", "model_name", type=click.Choice(sorted(CONFIGS)), help="Also report this config's parameters.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def info(model_name: str | None, as_json: bool) -> None:
    """Versions, device, weights cache and a model config's parameter counts."""
    from .info import system_report

    report = system_report(model_name)
    if as_json:
        _emit_json(report)
        return
    table = Table(title=f"gmdf {report['version']}", show_header=False)
    table.add_row("python", report["python"])
    table.add_row("platform", report["platform"])
    dev = report["device"]
    table.add_row("device", f"{dev['type']} ({dev['name']}), {dev['threads']} threads")
    for dist, ver in report["dependencies"].items():
        table.add_row(dist, ver or "[red]missing[/]")
    w = report["weights"]
    table.add_row("hub cache", w["hub_cache"] + (" (offline)" if w["offline"] else ""))
    table.add_row("shipped weights", w["shipped_dir"])
    for name, entry in w["zoo"].items():
        table.add_row(f"zoo: {name}", ("present " + entry["path"]) if entry["present"] else "not downloaded")
    if "model" in report:
        m = report["model"]
        p = m["parameters"]
        table.add_row("model", f"{m['name']} ({m['image_size']} px, domains {', '.join(m['domains'])})")
        table.add_row("parameters total", f"{p['total']:,}")
        table.add_row("CLIP backbone", f"{p['backbone']:,} (image tower {p['image_backbone']:,})")
        table.add_row(
            "GM-DF adds",
            f"{p['added']:,} = {m['added_fraction_of_backbone']:.2%} of the backbone, "
            f"{m['added_fraction_of_image_backbone']:.2%} of its image tower",
        )
    err.print(table)


@cli.group()
def weights() -> None:
    """The model zoo: list, download, locate weights."""


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
def weights_list(as_json: bool) -> None:
    """Known weights, where they come from, and whether they are on this machine."""
    from .weights import cached_path, zoo

    rows = [
        {
            "name": e.name,
            "config": e.config,
            "hub": e.hub_location,
            "sha256": e.sha256,
            "description": e.description,
            "path": str(p) if (p := cached_path(e)) else None,
        }
        for e in zoo().values()
    ]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        err.print("no weights registered (add your own with a JSON file named in $GMDF_ZOO)")
        return
    table = Table("name", "config", "hub", "on this machine", "description")
    for r in rows:
        table.add_row(r["name"], r["config"], r["hub"], r["path"] or "-", r["description"])
    err.print(table)


@weights.command("download")
@click.argument("name")
def weights_download(name: str) -> None:
    """Download NAME (zoo name or hf-hub:org/repo[/file]) into the Hugging Face cache and verify it."""
    from .weights import resolve_weights

    resolved = resolve_weights(name)
    err.print(f"[green]ok[/] {resolved.name}: {resolved.path} (sha256 {resolved.sha256[:16]}...)")
    click.echo(str(resolved.path))


@weights.command("export")
@click.argument("source")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--text-tower/--no-text-tower", default=False, show_default=True, help="Keep CLIP's text tower.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Decision threshold stored with the weights.")
def weights_export(source: str, target: Path, precision: str, text_tower: bool, threshold: float | None) -> None:
    """Re-save SOURCE (a checkpoint from `gmdf train`) as TARGET for shipping: small, inference-only."""
    from .weights import export_weights

    done = export_weights(source, target, half=precision == "fp16", text_tower=text_tower, threshold=threshold)
    size = done.path.stat().st_size / 2**20
    err.print(f"[green]ok[/] {done.path} ({size:.1f} MiB, sha256 {done.sha256})")
    click.echo(done.sha256)


@weights.command("path")
@click.argument("name")
def weights_path(name: str) -> None:
    """Print where NAME lies on this machine (no download); fails if it is not there."""
    from .weights import resolve_weights

    click.echo(str(resolve_weights(name, download=False).path))


VERDICT_STYLE = {"fake": "bold red", "real": "bold green", "no-face": "dim", "error": "yellow"}


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--weights", help="Zoo name, hf-hub:org/repo[/file] or a .safetensors path (default: shipped model).")
@click.option(
    "--frames", type=click.IntRange(min=1), default=32, show_default=True, help="Frames per video, spread evenly."
)
@click.option("--every", type=click.IntRange(min=1), help="Instead: every K-th frame.")
@click.option("--all", "all_frames", is_flag=True, help="Instead: every frame.")
@click.option("--start", type=click.FloatRange(min=0), help="Start time in seconds.")
@click.option("--end", type=click.FloatRange(min=0), help="End time in seconds.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    help="Fake when score >= threshold (default: the weights' own, else 0.5).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--detector",
    type=click.Choice(["retinaface", "retinaface-resnet50", "mtcnn"]),
    default="retinaface",
    show_default=True,
)
@click.option(
    "--detector-weights",
    type=click.Path(file_okay=False),
    help="Folder with RetinaFace weights (else $GMDF_DETECTOR_WEIGHTS, facexlib's cache, download).",
)
@click.option(
    "--det-size",
    type=click.IntRange(min=64),
    default=DETECTION_SIDE,
    show_default=True,
    help="Longest side frames are shrunk to for face detection.",
)
@click.option("--max-faces", type=click.IntRange(min=1), default=8, show_default=True, help="Faces scored per frame.")
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON report on stdout.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="One row per scored face.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.json, report.html and per-file plots.",
)
@click.option("--heatmaps", is_flag=True, help="With --out: Grad-CAM overlays of the most suspicious faces.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the model.")
@precision_option
@device_option
def scan(
    paths: tuple[str, ...],
    weights: str | None,
    frames: int,
    every: int | None,
    all_frames: bool,
    start: float | None,
    end: float | None,
    threshold: float | None,
    batch_size: int,
    detector: str,
    detector_weights: str | None,
    det_size: int,
    max_faces: int,
    as_json: bool,
    csv_path: Path | None,
    out: Path | None,
    heatmaps: bool,
    threads: int | None,
    precision: str,
    device: str,
) -> None:
    """Tell whether the faces in videos, images or folders of them are deepfakes.

    \b
    PATHS: videos (mp4 avi mov mkv webm), images (jpg png webp bmp, animated webp/gif), folders (recursive).
    Each face gets P(fake); a frame scores as its most suspicious face, a file as the mean of its frames.
    \b
    Exit codes: 0 success (whatever the verdicts), 1 some inputs failed (the others are still reported),
    2 usage error, 130 interrupted (finished files are still written).
    """
    from .analysis.scan_run import ScanRequest, run_scan
    from .data.media import Sampling

    if heatmaps and out is None:
        raise click.UsageError("--heatmaps needs --out DIR")
    if start is not None and end is not None and end <= start:
        raise click.UsageError("--end must be after --start")
    if threads:
        import torch

        torch.set_num_threads(threads)
    request = ScanRequest(
        paths=list(paths),
        weights=weights,
        threshold=threshold,
        batch_size=batch_size,
        sampling=Sampling(frames=frames, every=every, all=all_frames, start=start, end=end),
        detector=detector,
        detector_weights=detector_weights,
        det_size=det_size,
        max_faces=max_faces,
        out=out,
        csv=csv_path,
        heatmaps=heatmaps,
        precision=precision,
        device=_device(device),
    )
    outcome = run_scan(request, err)
    if as_json:
        click.echo(json.dumps(outcome.report, indent=2, allow_nan=False))
    table = Table("file", "verdict", "fake score", "faces", "frames", "time", title="gmdf scan")
    for f in outcome.report["files"]:
        verdict = f["verdict"]
        table.add_row(
            Path(f["path"]).name,
            f"[{VERDICT_STYLE[verdict]}]{verdict}[/]",
            "-" if f["score"] is None else f"{f['score']:.3f}",
            str(f["faces_found"]),
            f"{f['frames_with_faces']}/{f['frames_scanned']}",
            f"{f['seconds']:.1f}s",
        )
    err.print(table)
    if out is not None:
        err.print(f"report: {out / 'report.html'}")
    sys.exit(outcome.exit_code)


@cli.command()
@click.option(
    "--domain",
    "layout",
    required=True,
    type=click.Choice(["ff", "celeb", "dfdc", "wdf", "dff", "folder", "deepfakebench"]),
    help="Dataset layout (folder: ROOT/real/..., ROOT/fake/...).",
)
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The dataset's root folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The cache folder.")
@click.option("--name", help="Domain name in the cache (default: the layout's name).")
@click.option("--frames", type=click.IntRange(min=1), default=32, show_default=True, help="Frames per video.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--compression", default="c23", show_default=True, help="FaceForensics++ quality folder.")
@click.option(
    "--group-by",
    help="folder layout: regex whose first match in a file's path below real/ or fake/ is "
    "the identity, e.g. 'id[0-9]+' or '^[^/]+' (its first folder).",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="deepfakebench layout: the dataset JSON.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@click.option("--detector", type=click.Choice(["retinaface", "retinaface-resnet50", "mtcnn"]), default="retinaface")
@click.option("--detector-weights", type=click.Path(file_okay=False))
@click.option("--det-size", type=click.IntRange(min=64), default=DETECTION_SIDE, show_default=True)
@device_option
def prepare(
    layout: str,
    root: Path,
    out: Path,
    name: str | None,
    frames: int,
    workers: int,
    compression: str,
    group_by: str | None,
    json_file: Path | None,
    seed: int,
    detector: str,
    detector_weights: str | None,
    det_size: int,
    device: str,
) -> None:
    """Face crops and an index from a dataset in its official layout (resumable)."""
    from .data.prepare import PrepareRequest, run_prepare

    summary = run_prepare(
        PrepareRequest(
            layout=layout,
            root=root,
            out=out,
            domain=name,
            frames=frames,
            workers=workers,
            detector=detector,
            detector_weights=detector_weights,
            det_size=det_size,
            compression=compression,
            group_by=group_by,
            json_file=json_file,
            seed=seed,
            device=_device(device),
        ),
        err,
    )
    table = Table(title=f"gmdf prepare: {summary['domain']}", show_header=False)
    table.add_row("sources", f"{summary['prepared']} prepared of {summary['sources']}")
    for reason, n in summary["skipped"].items():
        table.add_row("skipped", f"{n} ({reason})")
    table.add_row("crops", str(summary["crops"]))
    for key, n in summary["crops_by_split"].items():
        table.add_row(f"  {key}", str(n))
    table.add_row("index", summary["index"])
    err.print(table)


@cli.command()
@click.option("--domains", help="Comma-separated source domains from the cache, e.g. ff,celeb,dff.")
@click.option("--data", type=click.Path(path_type=Path), help="The cache made by `gmdf prepare`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder (checkpoints, metrics).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="Continue the run in this folder.")
@config_option("Model to train")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option(
    "--lr",
    type=float,
    help="delta: Adam's rate for theta_O (eq. 12; default 3e-6 for vit-b-16 as in the paper, 1e-3 otherwise).",
)
@click.option(
    "--inner-lr",
    type=click.FloatRange(min=0),
    help="beta: the meta-train phase's gradient-descent step on theta_E (eq. 10; default 0.01).",
)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), help="Default: train crops / batch size.")
@click.option("--save-every", type=click.IntRange(min=0), default=0, help="Also save resume state every N steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--baseline", is_flag=True, help="Plain CLIP fine-tuning on the merged data (the paper's baseline).")
@click.option("--second-order", is_flag=True, help="Differentiate through the inner update (default: first-order).")
@click.option(
    "--pretrained",
    default="default",
    show_default=True,
    help="CLIP weights for the backbone: an open_clip tag or file, 'default' (the config's), or 'none'.",
)
@click.option(
    "--mim-weight",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Weight of the masked-image-modelling loss (the paper: 1).",
)
@click.option(
    "--align-weight",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Weight of the domain-alignment (Frechet) loss (the paper: 1).",
)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads.")
@click.option("--augment", is_flag=True, help="Random crop, colour, blur, rescaling and JPEG on training crops.")
@click.option(
    "--online-blend",
    is_flag=True,
    help="Add a 'blend' domain: real training crops against self-blended fakes made from them at every step.",
)
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Data-loader processes (same batches for any).")
@precision_option
@device_option
def train(
    domains: str | None,
    data: Path | None,
    out: Path | None,
    resume: Path | None,
    config_name: str,
    epochs: int,
    batch_size: int,
    lr: float | None,
    inner_lr: float | None,
    steps_per_epoch: int | None,
    save_every: int,
    seed: int,
    baseline: bool,
    second_order: bool,
    pretrained: str,
    mim_weight: float,
    align_weight: float,
    threads: int | None,
    augment: bool,
    online_blend: bool,
    workers: int,
    precision: str,
    device: str,
) -> None:
    """Train GM-DF on several source domains with meta-learning (torchrun for several processes).

    \b
    --batch-size is the global batch: with N processes (torchrun) each takes an equal share of every domain's
    crops, so N processes see exactly the crops one would.
    """
    from .train.loop import Trainer, TrainRequest, load_request

    if resume is not None:
        request = load_request(resume)
        if threads:
            request.threads = threads
        request.device, request.workers = device, workers  # where it runs, not what it computes
    else:
        if not (domains and data and out):
            raise click.UsageError("--domains, --data and --out are required (or --resume RUN)")
        request = TrainRequest(
            domains=[d.strip() for d in domains.split(",") if d.strip()],
            data=str(data),
            out=str(out),
            config=config_name,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            inner_lr=inner_lr,
            steps_per_epoch=steps_per_epoch,
            save_every=save_every,
            seed=seed,
            baseline=baseline,
            second_order=second_order,
            pretrained=None if pretrained == "none" else pretrained,
            mim_weight=mim_weight,
            align_weight=align_weight,
            threads=threads,
            augment=augment,
            online_blend=online_blend,
            device=device,
            precision=precision,
            workers=workers,
        )
    trainer = Trainer(request, err)
    with progress_bar(err, "steps", disable=not trainer.dist.main) as progress:
        summary = trainer.fit(progress)
    if trainer.dist.main:
        table = Table(title=f"gmdf train: {summary['run']}", show_header=False)
        table.add_row("steps", str(summary["steps"]))
        table.add_row("best mean val video AUC", f"{summary['best_val_auc']:.3f}")
        for key, value in summary["last"].items():
            if key.startswith("val_") and key.endswith("video_auc"):
                table.add_row(key, f"{value:.3f}")
        table.add_row("device", f"{summary['device']}, {summary['precision']}")
        if summary["world_size"] > 1:
            table.add_row("processes", f"{summary['world_size']} (weights agree: {summary['ranks_agree']})")
        err.print(table)


@cli.command("eval")
@click.argument("folder", required=False, type=click.Path(path_type=Path))
@click.option("--weights", help="Weights to evaluate: zoo name, hf-hub:..., or a .safetensors path (default: shipped).")
@click.option("--data", type=click.Path(path_type=Path), help="A prepared cache (instead of FOLDER).")
@click.option("--domains", help="Comma-separated target domains in the cache.")
@click.option("--split", default="test", show_default=True, help="Cache split to evaluate (train/val/test/all).")
@click.option("--level", type=click.Choice(["frame", "video", "both"]), default="both", show_default=True)
@click.option("--p-real", type=click.FloatRange(0, 1), help="Prior of a real sample for M_EER (default: per domain).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="For ACC.")
@click.option(
    "--protocol",
    type=click.Choice(["multi-domain", "single-source"]),
    help="Run one of the paper's protocols end to end (train, then evaluate) on --data.",
)
@config_option("--protocol: model to train")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True, help="--protocol: epochs.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=32, show_default=True, help="FOLDER: frames per video.")
@click.option("--detector-weights", type=click.Path(file_okay=False), help="FOLDER: RetinaFace weights folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="metrics.json, metrics.md, ROC curves (with --protocol: the runs and results).",
)
@precision_option
@device_option
def eval_command(
    folder: Path | None,
    weights: str | None,
    data: Path | None,
    domains: str | None,
    split: str,
    level: str,
    p_real: float | None,
    threshold: float,
    protocol: str | None,
    config_name: str,
    epochs: int,
    batch_size: int,
    seed: int,
    frames: int,
    detector_weights: str | None,
    as_json: bool,
    out: Path | None,
    precision: str,
    device: str,
) -> None:
    """AUC / ACC / EER / AP per domain and M_EER, frame- and video-level, as in the paper.

    \b
    gmdf eval --weights W --data CACHE --domains dfdc,wdf       a prepared cache
    gmdf eval --weights W FOLDER                                FOLDER/real and FOLDER/fake, scanned
    gmdf eval --protocol multi-domain --data CACHE --out RUN    train + evaluate, resumable
    """
    from .analysis import evaluate as ev

    device = _device(device)
    if protocol:
        from .train.loop import TrainRequest
        from .train.protocols import results_table, run_protocol

        if data is None or out is None:
            raise click.UsageError("--protocol needs --data CACHE and --out RUN")
        template = TrainRequest(
            domains=[],
            data=str(data),
            out=str(out),
            config=config_name,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            pretrained="default",
            device=device,
            precision=precision,
        )
        summary = run_protocol(protocol, data, out, template, err, split, p_real)
        if as_json:
            _emit_json(summary["results"])
        err.print(results_table(summary))
        return
    from .weights import DEFAULT_WEIGHTS, load_weights

    model, _, _ = load_weights(weights or DEFAULT_WEIGHTS, device=device, precision=precision)
    if data is not None:
        if not domains:
            raise click.UsageError("--data needs --domains")
        names = [d.strip() for d in domains.split(",") if d.strip()]
        scored = ev.score_cache(model, data, names, split, err)
    elif folder is not None:
        scored, unusable = ev.score_folder(
            model, folder, err, detector_weights=detector_weights, frames=frames, device=device
        )
        for line in unusable:
            err.print(f"[yellow]left out:[/] {line}", soft_wrap=True, highlight=False)
    else:
        raise click.UsageError("give a FOLDER with real/ and fake/, or --data CACHE --domains ...")
    levels = ["frame", "video"] if level == "both" else [level]
    reports = [ev.metrics_report(scored, lv, p_real, threshold) for lv in levels]
    if out is not None:
        ev.write_outputs(out, reports, scored)
    if as_json:
        _emit_json(ev.json_payload(reports))
    for report in reports:
        table = Table(
            "domain",
            "AUC",
            "ACC",
            "EER",
            "AP",
            "real",
            "fake",
            title=f"{report['level']}-level, M_EER {report['m_eer']:.4f}",
        )
        for name, m in report["domains"].items():
            table.add_row(
                name, *(f"{m[k]:.4f}" for k in ("auc", "acc", "eer", "ap")), str(m["n_real"]), str(m["n_fake"])
            )
        err.print(table)


def _levels(text: str) -> list[int]:
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            chosen = list(range(lo, hi + 1))
        else:
            chosen = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a range like 1-5 or a list like 1,3,5") from None
    if not chosen or not all(1 <= lv <= 5 for lv in chosen):
        raise click.BadParameter(f"{text!r}: levels go from 1 to 5")
    return chosen


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--weights", help="Weights to test: zoo name, hf-hub:..., or a .safetensors path (default: shipped).")
@click.option(
    "--corruption",
    default="all",
    show_default=True,
    help="blur, compression, contrast, saturation, pixelation, noise, block, a comma list, or all.",
)
@click.option("--levels", default="1-5", show_default=True, help="Severities: 1-5, or a list like 1,3,5.")
@click.option(
    "--at",
    "where",
    type=click.Choice(["frame", "crop"]),
    default="frame",
    show_default=True,
    help="Corrupt whole frames before face detection, or the face crops.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("robustness-report"),
    show_default=True,
    help="Report folder; a sweep interrupted there resumes.",
)
@click.option("--frames", type=click.IntRange(min=1), default=32, show_default=True, help="Frames per video.")
@click.option("--domains", help="Prepared cache: comma-separated domains (default: all).")
@click.option("--split", default="test", show_default=True, help="Prepared cache: split (or all).")
@click.option("--detector-weights", type=click.Path(file_okay=False), help="RetinaFace weights folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@precision_option
@device_option
def robustness(
    data: Path,
    weights: str | None,
    corruption: str,
    levels: str,
    where: str,
    out: Path,
    frames: int,
    domains: str | None,
    split: str,
    detector_weights: str | None,
    as_json: bool,
    precision: str,
    device: str,
) -> None:
    """AUC and ACC under compression, blur, contrast, saturation, pixelation, noise and block corruptions at five
    severities (DeeperForensics-1.0 definitions). DATA: a folder with real/ and fake/, or a prepared cache."""
    from .analysis.corruptions import CORRUPTIONS
    from .analysis.robustness import RobustnessRequest, run_robustness
    from .weights import DEFAULT_WEIGHTS, load_weights

    names = list(CORRUPTIONS) if corruption == "all" else [c.strip() for c in corruption.split(",") if c.strip()]
    unknown = [c for c in names if c not in CORRUPTIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown {unknown}; choose from {', '.join(CORRUPTIONS)} or all", param_hint="--corruption"
        )
    device = _device(device)
    model, resolved, _ = load_weights(weights or DEFAULT_WEIGHTS, device=device, precision=precision)
    request = RobustnessRequest(
        data=data,
        weights=resolved.sha256,
        corruptions=names,
        levels=_levels(levels),
        out=out,
        at=where,
        frames=frames,
        domains=[d.strip() for d in domains.split(",")] if domains else None,
        split=split,
        detector_weights=detector_weights,
        device=device,
    )
    summary = run_robustness(request, model, err)
    if as_json:
        _emit_json(summary)
    lv = request.levels
    table = Table("corruption", "clean", *(f"level {x}" for x in lv), "average", title="gmdf robustness: AUC")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    clean = fmt(summary["clean"]["auc"])
    for name, per in summary["results"].items():
        table.add_row(name, clean, *(fmt(per[str(x)]["auc"]) for x in lv), fmt(summary["average"][name]))
    err.print(table)
    err.print(f"report: {out}/robustness.md, auc_vs_severity.png, contact_sheet.png")


@cli.command()
@click.option(
    "--root",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Real footage: videos, images or folders of them.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--kind", "kinds", type=click.Choice(["sbi", "cross", "both"]), default="both", show_default=True)
@click.option("--frames", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per video.")
@click.option("--per-frame", type=click.IntRange(min=1), default=1, show_default=True, help="Fakes of each kind.")
@click.option(
    "--group-size",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Input files per group; cross blends take donor faces from their own group only.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--detector-weights", type=click.Path(file_okay=False), help="RetinaFace weights folder.")
@device_option
def synth(
    root: Path,
    out: Path,
    kinds: str,
    frames: int,
    per_frame: int,
    group_size: int,
    seed: int,
    detector_weights: str | None,
    device: str,
) -> None:
    """Make fakes from real faces: self-blended images (sbi) and cross-identity blends (cross).

    The output (OUT/real/<group>/<source>/..., OUT/fake/<group>/<source>/...) is a folder dataset for `gmdf prepare
    --domain folder --group-by '^[^/]+'`: a group's real frames and fakes, and the donors of its cross blends, all
    share one split.
    """
    from .data.synth import KINDS, SynthRequest, run_synth

    summary = run_synth(
        SynthRequest(
            root=root,
            out=out,
            kinds=KINDS if kinds == "both" else (kinds,),
            frames=frames,
            per_frame=per_frame,
            seed=seed,
            group_size=group_size,
            detector_weights=detector_weights,
            device=_device(device),
        ),
        err,
    )
    table = Table(title=f"gmdf synth: {out}", show_header=False)
    table.add_row("sources", str(summary["sources"]))
    for key, n in summary["written"].items():
        table.add_row(key, str(n))
    for path, why in summary["skipped"].items():
        table.add_row("skipped", f"{path}: {why}")
    table.add_row("next", summary["prepare"])
    err.print(table)


def main() -> None:
    try:
        cli.main(prog_name="gmdf")
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
