"""The `gmdf` command line. Each command parses, calls one job, and renders (rich on stderr, JSON on stdout).
Choices and their help come from the registries: configs, dataset layouts, corruptions, face detectors."""

from __future__ import annotations

import dataclasses
import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .analysis.corruptions import CORRUPTIONS
from .data import DETECTION_SIDE
from .data.datasets import LAYOUTS
from .data.detectors import DETECTOR_ENV, DETECTORS, DetectorOptions
from .data.media import Sampling
from .data.synth import KINDS, MASKS
from .engine.keyframes import DETECT_EVERY
from .errors import EXIT_FAILURE, EXIT_USAGE, GMDFError, Terminated, interrupt_exit_code
from .model.config import CONFIG_HELP, CONFIGS
from .terminal import plain
from .version import __version__

err = Console(stderr=True, highlight=False)
"""Messages, progress and warnings; tables too when stdout carries --json."""
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
"""Data: tables of results and facts, JSON with --json. Into a pipe, 200 columns wide, so that rows are not wrapped
and `gmdf weights list | grep gmdf` finds whole names."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised by our own SIGINT handler. With Python's default handler an interrupted scan under CPU load
    sometimes ended by SIGINT (status -2) after it had caught the interrupt and written its report, instead of with
    exit code 130 (CPython flags an exact KeyboardInterrupt seen in some of its C entry points as unhandled, and
    never looks at subclasses); with this subclass it did not."""


def _on_sigint(signum: int, frame: object) -> None:
    raise Interrupted


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


class GMDFGroup(click.Group):
    """Click group that turns user-caused errors into one line and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_sigint)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except GMDFError as exc:
            err.print(f"[bold red]gmdf: error:[/] {plain(str(exc))}", soft_wrap=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:  # a bad command line, a missing input: one line, exit 2, nothing loaded
            where = f" (gmdf {exc.ctx.info_name} -h for help)" if exc.ctx and exc.ctx.info_name != "gmdf" else ""
            err.print(f"[bold red]gmdf: error:[/] {plain(exc.format_message())}{where}", soft_wrap=True)
            ctx.exit(EXIT_USAGE)
        except (KeyboardInterrupt, Exception) as exc:
            code = None if isinstance(exc, click.exceptions.Exit) else interrupt_exit_code(exc)  # exits stay exits
            if code is None:
                raise
            err.print("[bold red]gmdf: interrupted[/]")
            ctx.exit(code)


# -- shared options ------------------------------------------------------------------------------------------------
def _stack(f: Any, options: list[Callable[[Any], Any]]) -> Any:
    for option in reversed(options):
        f = option(f)
    return f


def device_option(f: Any) -> Any:
    """--device, the same on every command that runs a network (the model, the face detector or both)."""
    return click.option(
        "--device", default="auto", show_default=True, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."
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


def _check_weights(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from .weights.registry import check_spec

        check_spec(value)
    return value


def _name(param: click.Parameter) -> str:
    """How the user wrote a parameter: its flag (--out), or an argument's name (TARGET)."""
    return param.opts[0] if isinstance(param, click.Option) else (param.name or "").upper()


def _output_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An output folder, checked as it is parsed: one line, before anything loads, if it could never be written."""
    from .checks import writable_folder

    return None if value is None else writable_folder(value, _name(param))


def _output_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """An output file, checked as it is parsed (see ``_output_folder``)."""
    from .checks import writable_file

    return None if value is None else writable_file(value, _name(param))


def weights_option(f: Any) -> Any:
    """--weights, checked before anything loads (a missing file or an unknown name fails at once)."""
    return click.option(
        "--weights",
        callback=_check_weights,
        help="Zoo name, hf-hub:org/repo[/file] or a .safetensors path (default: the shipped model).",
    )(f)


def _show(table: Table, as_json: bool = False) -> None:
    """A table of results: data, so on stdout, unless stdout carries the JSON."""
    (err if as_json else out).print(table)


def mask_option(flag: str, what: str) -> Any:
    """A self-blend mask choice: the hull of the face's 68 landmarks (SBI's) or an ellipse over its box."""
    return click.option(
        flag,
        type=click.Choice(list(MASKS)),
        default="hull",
        show_default=True,
        help=f"{what}: hull of the face's 68 landmarks (SBI's), or ellipse over its detector box.",
    )


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")(f)


def config_option(what: str) -> Any:
    """--config for the commands that train: the paper's vit-b-16 unless told otherwise."""
    described = "; ".join(f"{name}: {text}" for name, text in CONFIG_HELP.items())
    return click.option(
        "--config",
        "config",
        type=click.Choice(sorted(CONFIGS)),
        default="vit-b-16",
        show_default=True,
        help=f"{what} ({described}).",
    )


def detector_options(f: Any) -> Any:
    """--detector, --detector-weights and --det-size, gathered into one ``detector: DetectorOptions`` argument."""

    @functools.wraps(f)
    def wrapper(*args: Any, detector: str, detector_weights: str | None, det_size: int, **kwargs: Any) -> Any:
        return f(*args, detector=DetectorOptions(detector, detector_weights, det_size), **kwargs)

    choices = "; ".join(f"{e.name}: {e.description}" for e in DETECTORS.values())
    return _stack(
        wrapper,
        [
            click.option(
                "--detector", type=click.Choice(list(DETECTORS)), default="retinaface", show_default=True, help=choices
            ),
            click.option(
                "--detector-weights",
                type=click.Path(file_okay=False),
                envvar=DETECTOR_ENV,
                help=f"Folder with RetinaFace weights (default ${DETECTOR_ENV}, else facexlib's cache, download).",
            ),
            click.option(
                "--det-size",
                type=click.IntRange(min=64),
                default=DETECTION_SIDE,
                show_default=True,
                help="Longest side frames are shrunk to for face detection.",
            ),
        ],
    )


def sampling_options(f: Any) -> Any:
    """--frames, --every, --all, --start, --end, gathered into one ``sampling: Sampling`` argument."""

    @functools.wraps(f)
    def wrapper(*args: Any, frames: int, every: int | None, all_frames: bool, start: Any, end: Any, **kw: Any) -> Any:
        if start is not None and end is not None and end <= start:
            raise click.UsageError("--end must be after --start")
        return f(*args, sampling=Sampling(frames=frames, every=every, all=all_frames, start=start, end=end), **kw)

    return _stack(
        wrapper,
        [
            click.option(
                "--frames", type=click.IntRange(min=1), default=32, show_default=True, help="Frames per video, evenly."
            ),
            click.option("--every", type=click.IntRange(min=1), help="Instead: every K-th frame."),
            click.option("--all", "all_frames", is_flag=True, help="Instead: every frame."),
            click.option("--start", type=click.FloatRange(min=0), help="Start time in seconds."),
            click.option("--end", type=click.FloatRange(min=0), help="End time in seconds."),
        ],
    )


detect_every_option = click.option(
    "--detect-every",
    type=click.IntRange(min=1),
    default=DETECT_EVERY,
    show_default=True,
    help="Detect faces on every K-th sampled video frame (and on scene cuts and lost faces), carrying them between; "
    "1: on every frame.",
)
"""The same key-frame detection for scan and eval, so that their scores agree (robustness detects on every frame:
its clean and corrupted frames must be found alike)."""


def _device(spec: str) -> str:
    """Check --device before any work (one clear line if it does not exist); returns the resolved name."""
    from .device import resolve_device

    return str(resolve_device(spec))


def _emit_json(data: Any) -> None:
    from .report.schema import dumps

    click.echo(dumps(data))


def _split(text: str | None) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()] if text else []


@click.group(cls=GMDFGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gmdf")
def cli() -> None:
    """gmdf: tell whether the faces in a video or image are deepfakes (GM-DF, ACM MM 2025).

    \b
    Exit codes: 0 success, 1 something failed (results already computed are kept), 2 usage error.
    """


# -- info and weights ----------------------------------------------------------------------------------------------
@cli.command()
@click.option("--model", "model_name", type=click.Choice(sorted(CONFIGS)), help="Also report this config's parameters.")
@json_option
def info(model_name: str | None, as_json: bool) -> None:
    """Versions, device, weights cache and a model config's parameter counts."""
    from .info import info_rows, system_report
    from .report.render import key_value_table

    report = system_report(model_name)
    if as_json:
        _emit_json(report)
        return
    _show(key_value_table(f"gmdf {report['version']}", info_rows(report)))


@cli.group()
def weights() -> None:
    """The model zoo: list, download, locate weights."""


@weights.command("list")
@json_option
def weights_list(as_json: bool) -> None:
    """Known weights, where they come from, and whether they are on this machine."""
    from .info import weights_rows
    from .report.render import weights_table

    rows = weights_rows()
    if as_json:
        _emit_json(rows)
    elif not rows:
        err.print("no weights registered (add your own with a JSON file named in $GMDF_ZOO)")
    else:
        _show(weights_table(rows))


@weights.command("download")
@click.argument("name")
def weights_download(name: str) -> None:
    """Download NAME (zoo name or hf-hub:org/repo[/file]) into the Hugging Face cache and verify it."""
    from .weights import resolve_weights

    resolved = resolve_weights(name)
    err.print(f"[green]ok[/] {plain(resolved.name)}: {plain(str(resolved.path))} (sha256 {resolved.sha256[:16]}...)")
    click.echo(str(resolved.path))


@weights.command("export")
@click.argument("source")
@click.argument("target", type=click.Path(path_type=Path), callback=_output_file)
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option("--text-tower/--no-text-tower", default=False, show_default=True, help="Keep CLIP's text tower.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Decision threshold stored with the weights.")
@click.option(
    "--calibrate",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A prepared cache: its --split videos set the threshold (equal-error point) and the uncertainty band.",
)
@click.option("--split", default="val", show_default=True, help="--calibrate: the cache split to calibrate on.")
@click.option(
    "--max-fpr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="--calibrate: put the threshold where at most this share of the split's real videos score fake "
    "(default: the equal-error point).",
)
@click.option(
    "--max-uncertain",
    type=click.FloatRange(0, 1, max_open=True),
    help="--calibrate: narrow the uncertainty band until at most this share of the split's videos fall inside it "
    "(default: the band --rate gives, however wide).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.001, 0.5),
    default=0.05,
    show_default=True,
    help="--calibrate: share of validation fakes a 'real' verdict may miss, and of reals a 'fake' may flag.",
)
@click.option(
    "--card", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON model card to store inside."
)
def weights_export(source: str, target: Path, precision: str, text_tower: bool, **options: Any) -> None:
    """Re-save SOURCE (a checkpoint from `gmdf train`) as TARGET for shipping: small, inference-only."""
    from .jobs.weights import ExportRequest, run_export

    request = ExportRequest(source, target, half=precision == "fp16", text_tower=text_tower, **options)
    done, decision = run_export(request, err)
    size = done.path.stat().st_size / 2**20
    err.print(f"[green]ok[/] {plain(str(done.path))} ({size:.1f} MiB, sha256 {done.sha256})")
    if decision["threshold"] is not None:
        rule = f" (at most {decision['max_fpr']:.0%} of the real videos at or above it)" if decision["max_fpr"] else ""
        err.print(f"threshold {decision['threshold']:.4f}{rule}, uncertainty band {decision['band']}", highlight=False)
    click.echo(done.sha256)


@weights.command("path")
@click.argument("name")
def weights_path(name: str) -> None:
    """Print where NAME lies on this machine (no download); fails if it is not there."""
    from .weights import resolve_weights

    click.echo(str(resolve_weights(name, download=False).path))


# -- scan ----------------------------------------------------------------------------------------------------------
@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--files-from",
    metavar="LIST",
    help="Also scan the paths in LIST, one per line ('-': standard input); missing ones become error rows.",
)
@weights_option
@sampling_options
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    help="Fake when score >= threshold (default: the weights' own, else 0.5).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@detector_options
@click.option("--max-faces", type=click.IntRange(min=1), default=8, show_default=True, help="Faces scored per frame.")
@detect_every_option
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON report on stdout.")
@click.option("--csv", "csv", type=click.Path(path_type=Path), callback=_output_file, help="One row per scored face.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=_output_folder,
    help="Folder for results.jsonl (one row per file; a rerun finishes only the rest), report.json, report.html.",
)
@click.option("--heatmaps", is_flag=True, help="With --out: Grad-CAM overlays of the most suspicious faces.")
@click.option("--parquet", is_flag=True, help="With --out: also results.parquet (needs pyarrow: the ray extra).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes sharing the files, each with its own model (with --engine ray: scoring actors).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: Ray Data batch inference (pip install 'gmdf-cli[ray]'), decoding as tasks, the model as actors.",
)
@click.option("--address", help="--engine ray: the cluster ('auto', ray://HOST:10001); default: a local Ray.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the model (per worker).")
@precision_option
@device_option
def scan(paths: tuple[str, ...], as_json: bool, device: str, **options: Any) -> None:
    """Tell whether the faces in videos, images or folders of them are deepfakes.

    \b
    PATHS: videos (mp4 avi mov mkv webm), images (jpg png webp bmp, animated webp/gif), folders (recursive).
    Each face gets P(fake); a frame scores as its most suspicious face, a file as the mean of its frames.
    \b
    Exit codes: 0 success (whatever the verdicts), 1 some inputs failed (the others are still reported),
    2 usage error, 130 interrupted, 143 terminated (finished files are still written; rerun with the same
    --out to finish the rest).
    """
    if options["heatmaps"] and options["out"] is None:
        raise click.UsageError("--heatmaps needs --out DIR")
    if options["parquet"] and options["out"] is None:
        raise click.UsageError("--parquet needs --out DIR")
    if options["address"] and options["engine"] != "ray":
        raise click.UsageError("--address is for --engine ray")
    if not paths and not options["files_from"]:
        raise click.UsageError("give PATHS to scan, or --files-from LIST")
    from .jobs.scan import REPORT_MAX_FILES, ScanRequest, read_list, run_scan
    from .report.render import closing_lines, scan_table
    from .weights.registry import DEFAULT_WEIGHTS

    listed = read_list(options["files_from"]) if options["files_from"] else []
    outcome = run_scan(ScanRequest(list(paths), listed=listed, device=device, as_json=as_json, **options), err)
    files = outcome.report.files
    if as_json:
        _emit_json(outcome.report)
    if len(files) == sum(outcome.counts.values()) and len(files) <= REPORT_MAX_FILES:
        _show(scan_table(files), as_json)
    for line in closing_lines(outcome.report, DEFAULT_WEIGHTS, outcome.counts, outcome.files_per_second):
        err.print(line, markup=False, soft_wrap=True)
    if options["out"] is not None:
        name = "report.html" if files else "results.jsonl"
        err.print(f"{name}: {options['out'] / name}", markup=False, soft_wrap=True)
    sys.exit(outcome.exit_code)


# -- prepare, synth ------------------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--domain",
    "layout",
    required=True,
    type=click.Choice(list(LAYOUTS)),
    help="Dataset layout: " + "; ".join(f"{n}: {(f.__doc__ or '').split(':')[0].strip()}" for n, f in LAYOUTS.items()),
)
@click.option("--root", required=True, type=click.Path(exists=True, path_type=Path), help="The dataset's root folder.")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), callback=_output_folder, help="The cache folder."
)
@click.option("--name", "domain", help="Domain name in the cache (default: the layout's name).")
@click.option("--frames", type=click.IntRange(min=1), default=32, show_default=True, help="Frames per video.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--compression", default="c23", show_default=True, help="FaceForensics++ quality folder.")
@click.option(
    "--group-by",
    help="folder layout: regex whose first match in a file's path below real/ or fake/ is "
    "the identity, e.g. 'id[0-9]+' or '^[^/]+' (its first folder).",
)
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), help="deepfakebench layout: the JSON."
)
@click.option(
    "--pairs",
    type=click.Path(dir_okay=False, path_type=Path),
    help="folder layout: a CSV with columns fake,real (paths below fake/ and real/) naming the real video each fake "
    "was made from; the two always land in the same split.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val/test split.")
@detector_options
@device_option
def prepare(device: str, **options: Any) -> None:
    """Face crops and an index from a dataset in its official layout (resumable)."""
    from .jobs.prepare import PrepareRequest, run_prepare
    from .report.render import key_value_table

    summary = run_prepare(PrepareRequest(device=_device(device), **options), err)
    rows = {"sources": f"{summary['prepared']} prepared of {summary['sources']}"}
    rows.update({f"skipped ({reason})": str(n) for reason, n in summary["skipped"].items()})
    rows["crops"] = str(summary["crops"])
    rows.update({f"  {key}": str(n) for key, n in summary["crops_by_split"].items()})
    rows["index"] = summary["index"]
    err.print(key_value_table(f"gmdf prepare: {summary['domain']}", rows))


@cli.command()
@click.option(
    "--root", required=True, type=click.Path(exists=True, path_type=Path), help="Real footage: videos, images, folders."
)
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_output_folder, help="Output folder.")
@click.option("--kind", "kinds", type=click.Choice([*KINDS, "both"]), default="both", show_default=True)
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
@mask_option("--mask", "Blending mask")
@detector_options
@device_option
def synth(kinds: str, device: str, **options: Any) -> None:
    """Make fakes from real faces: self-blended images (sbi) and cross-identity blends (cross).

    The output (OUT/real/<group>/<source>/..., OUT/fake/<group>/<source>/...) is a folder dataset for `gmdf prepare
    --domain folder --group-by '^[^/]+'`: a group's real frames and fakes, and the donors of its cross blends, all
    share one split.
    """
    from .jobs.synth import SynthRequest, run_synth
    from .report.render import key_value_table

    chosen = KINDS if kinds == "both" else (kinds,)
    summary = run_synth(SynthRequest(kinds=chosen, device=_device(device), **options), err)
    rows = {"sources": str(summary["sources"]), **{key: str(n) for key, n in summary["written"].items()}}
    rows.update({f"skipped {path}": why for path, why in summary["skipped"].items()})
    rows["next"] = summary["prepare"]
    err.print(key_value_table(f"gmdf synth: {options['out']}", rows))


# -- train ---------------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--domains", help="Comma-separated source domains from the cache, e.g. ff,celeb,dff.")
@click.option(
    "--data", type=click.Path(exists=True, file_okay=False, path_type=Path), help="The cache made by `gmdf prepare`."
)
@click.option(
    "--out", type=click.Path(path_type=Path), callback=_output_folder, help="Run folder (checkpoints, metrics)."
)
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), help="Continue the run in this folder.")
@config_option("Model to train")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option(
    "--lr",
    type=float,
    help="delta: Adam's rate for theta_O (eq. 12; default 3e-6 for vit-b-16 as in the paper, 3e-4 for the "
    "pretrained mnv2, 1e-3 for towers from random weights).",
)
@click.option(
    "--inner-lr",
    type=click.FloatRange(min=0),
    help="beta: the meta-train phase's gradient-descent step on theta_E (eq. 10; default 0.01).",
)
@click.option(
    "--meta-test-share",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.5,
    show_default=True,
    help="Share of each step's batch that is the meta-test domain's, the only part theta_O learns from (0: 1/N).",
)
@click.option(
    "--meta-test-weights",
    help="How often each domain is the meta-test domain, relative to the others (unnamed domains: 1), e.g. "
    "dfdc=3: a large domain among small ones is drawn more often.",
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
@mask_option("--blend-mask", "--online-blend's mask")
@click.option(
    "--face-px",
    type=click.IntRange(min=0, max=4096),
    help="Shrink every face to at most this many pixels before the model, in training and scanning (0: off).",
)
@click.option(
    "--face-jpeg",
    type=click.IntRange(min=0, max=100),
    help="Re-encode every face as JPEG at this quality before the model, in training and scanning (0: off).",
)
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Data-loader processes (same batches for any).")
@precision_option
@device_option
def train(resume: Path | None, **options: Any) -> None:
    """Train GM-DF on several source domains with meta-learning (torchrun for several processes).

    \b
    --batch-size is the global batch: with N processes (torchrun) each takes an equal share of every domain's
    crops, so N processes see exactly the crops one would.
    """
    from .jobs.train import run_train, train_request
    from .report.render import key_value_table

    summary, rows = run_train(train_request(resume, options), err)
    if rows is not None:
        err.print(key_value_table(f"gmdf train: {summary['run']}", rows))


# -- eval ----------------------------------------------------------------------------------------------------------
@cli.command("eval")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@weights_option
@click.option(
    "--data", "cache", type=click.Path(exists=True, file_okay=False, path_type=Path), help="A prepared cache."
)
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
@detector_options
@detect_every_option
@json_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=_output_folder,
    help="metrics.json, metrics.md, ROC curves (with --protocol: the runs and results).",
)
@precision_option
@device_option
def eval_command(protocol: str | None, as_json: bool, device: str, domains: str | None, **options: Any) -> None:
    """AUC / ACC / EER / AP per domain and M_EER, frame- and video-level, as in the paper.

    \b
    gmdf eval --weights W --data CACHE --domains dfdc,wdf       a prepared cache
    gmdf eval --weights W FOLDER                                FOLDER/real and FOLDER/fake, scanned
    gmdf eval --protocol multi-domain --data CACHE --out RUN    train + evaluate, resumable
    """
    from .report import render

    device = _device(device)
    if protocol:
        summary = _run_protocol(protocol, device, options)
        if as_json:
            _emit_json(summary["results"])
        _show(render.protocol_table(summary), as_json)
        return
    from .jobs.evaluate import EvalRequest, as_report, run_eval

    if options["cache"] is None and options["folder"] is None:
        raise click.UsageError("give a FOLDER with real/ and fake/, or --data CACHE --domains ...")
    known = {f.name for f in dataclasses.fields(EvalRequest)}  # the others (--epochs, --seed...) are --protocol's
    fields = {k: v for k, v in options.items() if k in known}
    levels = run_eval(EvalRequest(domains=_split(domains), device=device, **fields), err)
    if as_json:
        _emit_json(as_report(levels))
    for report in levels:
        _show(render.eval_table(report), as_json)


def _run_protocol(protocol: str, device: str, options: dict[str, Any]) -> dict[str, Any]:
    from .jobs.protocol import run_protocol
    from .train.loop import TrainRequest

    cache, out = options["cache"], options["out"]
    if cache is None or out is None:
        raise click.UsageError("--protocol needs --data CACHE and --out RUN")
    template = TrainRequest(
        domains=[],
        data=str(cache),
        out=str(out),
        config=options["config"],
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        seed=options["seed"],
        pretrained="default",
        device=device,
        precision=options["precision"],
    )
    return run_protocol(protocol, cache, out, template, err, options["split"], options["p_real"])


# -- robustness ----------------------------------------------------------------------------------------------------
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


def _corruptions(text: str) -> list[str]:
    names = list(CORRUPTIONS) if text == "all" else _split(text)
    unknown = [c for c in names if c not in CORRUPTIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown {unknown}; choose from {', '.join(CORRUPTIONS)} or all", param_hint="--corruption"
        )
    return names


@cli.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@weights_option
@click.option(
    "--corruption",
    default="all",
    show_default=True,
    help="; ".join(f"{c.name} (levels: {c.meaning})" for c in CORRUPTIONS.values()) + "; a comma list, or all.",
)
@click.option("--levels", default="1-5", show_default=True, help="Severities: 1-5, or a list like 1,3,5.")
@click.option(
    "--at",
    type=click.Choice(["frame", "crop"]),
    default="frame",
    show_default=True,
    help="Corrupt whole frames before face detection, or the face crops.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=_output_folder,
    default=Path("robustness-report"),
    show_default=True,
    help="Report folder; a sweep interrupted there resumes.",
)
@click.option("--frames", type=click.IntRange(min=1), default=32, show_default=True, help="Frames per video.")
@click.option("--domains", help="Prepared cache: comma-separated domains (default: all).")
@click.option("--split", default="test", show_default=True, help="Prepared cache: split (or all).")
@detector_options
@json_option
@precision_option
@device_option
def robustness(corruption: str, levels: str, domains: str | None, as_json: bool, device: str, **options: Any) -> None:
    """AUC and ACC under compression, blur, contrast, saturation, pixelation, noise and block corruptions at five
    severities (DeeperForensics-1.0 definitions). DATA: a folder with real/ and fake/, or a prepared cache."""
    from .checks import labelled_folder

    chosen, severities = _corruptions(corruption), _levels(levels)
    labelled_folder(options["data"])  # before the job's imports: torch, the model
    from .jobs.robustness import RobustnessRequest, run_robustness
    from .report.render import robustness_table

    request = RobustnessRequest(
        corruptions=chosen,
        levels=severities,
        domains=_split(domains) or None,
        device=_device(device),
        **options,
    )
    summary = run_robustness(request, err)
    if as_json:
        _emit_json(summary)
    _show(robustness_table(summary, request.levels), as_json)
    err.print(f"report: {request.out}/robustness.md, auc_vs_severity.png, contact_sheet.png", markup=False)


def main() -> None:
    try:
        cli.main(prog_name="gmdf")
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
