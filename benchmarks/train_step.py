"""Time of one GM-DF meta step (inner update on theta_E + outer L_total with alignment) against one plain CLIP
fine-tuning step, on the same batch and the same model shape, in one process; prints the ratio.
Target (issues 4 and 20): meta / plain <= 1.6. The same measurement as part 3 of ``benchmarks/gpu.py``.

    python benchmarks/train_step.py [--config vit-b-16] [--batch 12] [--rounds 3] [--device auto] [--precision fp32]
"""

from __future__ import annotations

import argparse

import torch
from gpu import train_steps  # benchmarks/ is this script's folder, first on sys.path

from gmdf_cli.device import describe, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vit-b-16")
    parser.add_argument(
        "--batch",
        type=int,
        default=12,
        help="images per step: half the meta-test domain's, the rest 2 meta-train domains'",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    args = parser.parse_args()
    device = resolve_device(args.device)
    row = train_steps(args.config, device, args.batch, args.rounds, args.precision)
    print(
        f"config {args.config}, batch {args.batch} (3 domains), {describe(device)}, {args.precision}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds"
    )
    print(f"  {'GM-DF meta step':24s} {row['meta']['seconds']:7.2f} s")
    print(f"  {'plain fine-tuning step':24s} {row['plain']['seconds']:7.2f} s")
    print(f"  ratio meta / plain: {row['ratio']:.2f}  (target <= 1.6)")


if __name__ == "__main__":
    main()
