"""Start-up: wall time of the commands a newcomer types first, each the best of N fresh processes, then a
one-image scan and where its time goes.

    python benchmarks/startup.py [--rounds 3] [--detector-weights DIR] [--against REV]

Each command runs as `python -m gmdf_cli ...` from this checkout (PYTHONPATH set to it, so an editable install
elsewhere does not answer), with its exit code beside the time. The first five should not load torch: usage,
`info`, `weights list` and a usage error are answered from the command line, the zoo and package metadata.

`gmdf scan examples/astronaut.png --out DIR` is timed the same way: first once with an empty folder of compiled
graphs (``gmdf_cli.runtime``: that scan compiles them), then with them (the compiled way, no torch) and with
``GMDF_COMPILED=0`` (the torch way), beside a bare `python -c "import torch"` (the floor the torch way pays).
Each way's split comes from one more fresh process that runs the real command in-process with timers around
the scan's own steps: loading the model and face detector (with the imports they make), detection, scoring and
writing the outputs; what is left of the wall time is the interpreter, the imports before the first step and the
rest. With ``--against REV`` the one-image scan of that commit's ``gmdf_cli`` (``git archive``) is timed too (the
torch way), interleaved with this checkout's, and their ratio printed (goal: under 3 s).
RetinaFace's weights come from ``--detector-weights`` (default ../shared/weights, else $GMDF_DETECTOR_WEIGHTS).
Figures are noisy on a busy machine (best of N, not the mean, for that reason).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.png"
COMMANDS: dict[str, list[str]] = {
    "gmdf": [],
    "gmdf scan": ["scan"],
    "gmdf info": ["info"],
    "gmdf weights list": ["weights", "list"],
    "gmdf scan astronaut.png --out /proc/x": ["scan", str(ASTRONAUT), "--out", "/proc/x"],
}


def best_of(args: list[str], rounds: int, env: dict[str, str] | None = None, root: Path = ROOT) -> tuple[float, int]:
    """The fastest of ``rounds`` fresh `python ARGS` processes (seconds) run with the ``gmdf_cli`` of ``root``, and
    its exit code; a ``{out}`` in ARGS is a new empty folder each time."""
    env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    times, code = [], 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            argv = [a.replace("{out}", str(Path(tmp) / "out")) for a in args]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, *argv], capture_output=True, env=env, cwd=root)
            times.append(time.perf_counter() - start)
        code = done.returncode
    return min(times), code


STEPS = {
    "model and face detector load": ("gmdf_cli.api", "Detector", "from_pretrained"),
    "face detection": ("gmdf_cli.engine.pipeline", "Engine", "detect"),
    "scoring": ("gmdf_cli.engine.batching", None, "_score"),
    "writing": ("gmdf_cli.jobs.scan.outputs", "Outputs", ("add", "close")),
}
"""The scan's steps the split times: (module, class or None, function name(s)) of our own code."""


def phases_child(image: str, out: str) -> None:
    """Run `gmdf scan IMAGE --out OUT` in this process with a timer around each step of ``STEPS``; print the
    seconds per step and the time from this process's first line to the end, as JSON."""
    import importlib

    first = time.perf_counter()
    spent: dict[str, float] = dict.fromkeys(STEPS, 0.0)
    from gmdf_cli.cli import cli

    for step, (module_name, owner_name, names) in STEPS.items():
        module = importlib.import_module(module_name)
        owner = getattr(module, owner_name) if owner_name else module
        for name in [names] if isinstance(names, str) else names:
            original = getattr(owner, name).__func__ if name == "from_pretrained" else getattr(owner, name)

            def timed(*args: object, _original=original, _step=step, **kwargs: object) -> object:
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    spent[_step] += time.perf_counter() - start

            setattr(owner, name, classmethod(timed) if name == "from_pretrained" else timed)
    ready = time.perf_counter()
    try:
        cli.main(["scan", image, "--out", out], prog_name="gmdf", standalone_mode=False)
    finally:
        print(json.dumps({"steps": spent, "setup": ready - first, "in_process": time.perf_counter() - first}))


def scan_split(env: dict[str, str]) -> tuple[float, dict[str, float], float]:
    """One fresh process's wall time of the one-image scan, its seconds per step, and the setup of the timers
    (the imports of the modules they wrap, which the scan itself would have made)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--phases", str(ASTRONAUT), str(Path(tmp) / "out")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
            check=True,
        )
        wall = time.perf_counter() - start
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, record["steps"], record["setup"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per command (the best is shown)")
    parser.add_argument("--detector-weights", default=None, help="folder of RetinaFace's weights file")
    parser.add_argument("--against", metavar="REV", help="also time the one-image scan of this git commit")
    parser.add_argument("--phases", nargs=2, metavar=("IMAGE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases:
        phases_child(*args.phases)
        return
    rounds = args.rounds
    shared = ROOT.parent / "shared" / "weights"
    weights = args.detector_weights or (str(shared) if shared.is_dir() else os.environ.get("GMDF_DETECTOR_WEIGHTS"))
    env = {"GMDF_DETECTOR_WEIGHTS": weights} if weights else {}
    print(f"best of {rounds} fresh processes, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, cmd in COMMANDS.items():
        seconds, code = best_of(["-m", "gmdf_cli", *cmd], rounds)
        print(f"{name:<42} {seconds:6.2f} s  (exit {code})")
    print(f"\none-image scan (RetinaFace weights: {weights or 'none found: MTCNN, the fallback'})")
    scan_args = ["-m", "gmdf_cli", "scan", str(ASTRONAUT), "--out", "{out}"]
    with tempfile.TemporaryDirectory() as old_root, tempfile.TemporaryDirectory() as graphs:
        env["GMDF_COMPILED_DIR"] = graphs  # cold: the first scan compiles
        torch_way = {**env, "GMDF_COMPILED": "0"}
        first, code = best_of(scan_args, 1, env)
        print(f"{'first scan (compiles, once)':<42} {first:6.2f} s  (exit {code})")
        if args.against:
            archive = subprocess.run(["git", "archive", args.against, "gmdf_cli"], cwd=ROOT, capture_output=True)
            if archive.returncode:
                sys.exit(f"git archive {args.against} failed: {archive.stderr.decode().strip()}")
            subprocess.run(["tar", "-x", "-C", old_root], input=archive.stdout, check=True)
        floor = scan = plain = old = float("inf")
        for _ in range(rounds):  # interleaved, so that a busy moment slows every side alike
            floor = min(floor, best_of(["-c", "import torch"], 1)[0])
            seconds, code = best_of(scan_args, 1, env)
            scan = min(scan, seconds)
            plain = min(plain, best_of(scan_args, 1, torch_way)[0])
            if args.against:
                old = min(old, best_of(scan_args, 1, torch_way, Path(old_root))[0])
        label = 'python -c "import torch"'
        print(f"{label:<42} {floor:6.2f} s")
        print(f"{'gmdf scan astronaut.png --out DIR':<42} {scan:6.2f} s  (exit {code}; compiled; goal under 3 s)")
        print(f"{'the same, the torch way (GMDF_COMPILED=0)':<42} {plain:6.2f} s  ({plain / floor:.2f}x import torch)")
        print(f"{'ratio compiled / torch way':<42} {scan / plain:6.2f}")
        if args.against:
            print(f"{'the same at ' + args.against:<42} {old:6.2f} s  (ratio now / then {scan / old:.2f})")
        for label, way in (("compiled", env), ("torch way", torch_way)):
            wall, steps, setup = scan_split(way)
            rest = wall - sum(steps.values())
            print(f"split of one more {label} run ({wall:.2f} s):")
            print(
                f"  {'interpreter, imports before the first step':<40} {rest:6.2f} s  (timers' imports: {setup:.2f} s)"
            )
            for step, seconds in steps.items():
                print(f"  {step:<40} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
