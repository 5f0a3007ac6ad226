"""Throughput of GM-DF `vit-b-16` inference against plain open_clip ViT-B/16's image tower, same batch, one process.

Runs the two interleaved (A, B, B, A, A, B, ...: each goes first in half the rounds) so machine noise hits both
alike, and prints images/s and the ratio of the medians, with the median and spread of the rounds' own ratios
(this machine's noise is several per cent from one run to the next). Target (issue 43): GM-DF >= 0.95x plain CLIP.

    python benchmarks/model_overhead.py [--config vit-b-16] [--batch 8] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from gmdf_cli.model import build_clip, build_model, get_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vit-b-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = get_config(args.config)
    clip = build_clip(cfg)
    gmdf = build_model(cfg, clip=copy.deepcopy(clip))
    with torch.no_grad():  # trained-looking GM-DF parts: the cost does not depend on their values, but be honest
        for _, p in gmdf.gmdf_parameters():
            p.add_(torch.randn_like(p) * 0.02)
    gmdf.drop_text_tower()  # the scan path: cached prompt features, no text tower
    size = cfg.vision.image_size
    batch = torch.randn(args.batch, 3, size, size)

    runners = {
        "plain CLIP image tower": lambda: clip.encode_image(batch),
        "GM-DF (wildcard domain, P(fake))": lambda: gmdf.predict(batch),
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for run in runners.values():  # warm-up
            run()
        for round_ in range(args.rounds):
            order = list(runners.items())
            for name, run in order if round_ % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)

    print(f"config {cfg.name}, batch {args.batch}, {args.rounds} interleaved rounds, {args.threads} threads")
    rates = {}
    for name, ts in times.items():
        rates[name] = args.batch / statistics.median(ts)
        print(f"  {name:34s} {rates[name]:7.2f} images/s (median of {len(ts)}; min {args.batch / max(ts):.2f})")
    plain, ours = rates.values()
    per_round = sorted(a / b for a, b in zip(*times.values(), strict=True))
    print(f"  throughput ratio GM-DF / plain CLIP: {ours / plain:.3f}  (target >= 0.95)")
    print(
        f"  the rounds' own ratios: median {statistics.median(per_round):.3f}, "
        f"from {per_round[0]:.3f} to {per_round[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
