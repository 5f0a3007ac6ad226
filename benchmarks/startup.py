"""Start-up: wall time of the commands a newcomer types first, each the best of N fresh processes.

    python benchmarks/startup.py [--rounds 3]

Each command runs as `python -m gmdf_cli ...` from this checkout (PYTHONPATH set to it, so an editable install
elsewhere does not answer), with its exit code beside the time. None of them should load torch: usage, `info`,
`weights list` and a usage error are answered from the command line, the zoo and package metadata. Figures are
noisy on a busy machine (best of N, not the mean, for that reason).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def best_of(args: list[str], rounds: int) -> tuple[float, int]:
    """The fastest of ``rounds`` fresh `python -m gmdf_cli ARGS` processes (seconds) and its exit code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times, code = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "gmdf_cli", *args], capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
        code = done.returncode
    return min(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per command (the best is shown)")
    rounds = parser.parse_args().rounds
    print(f"best of {rounds} fresh processes, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for name, args in COMMANDS.items():
        seconds, code = best_of(args, rounds)
        print(f"{name:<42} {seconds:6.2f} s  (exit {code})")


if __name__ == "__main__":
    main()
