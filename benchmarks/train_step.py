"""Time of one GM-DF meta step (inner update on theta_E + outer L_total with alignment) against one plain CLIP
fine-tuning step, on the same batch and the same model shape, interleaved in one process; prints the ratio.
Target (issue 4): meta / plain <= 1.6.

    python benchmarks/train_step.py [--config vit-b-16] [--batch 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gmdf_cli.model import build_model, get_config, random_patch_mask
from gmdf_cli.train.loop import MetaObjective, TrainRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="vit-b-16")
    parser.add_argument("--batch", type=int, default=12, help="images per step, split over 3 domains")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    domains = ["a", "b", "c"]
    cfg = get_config(args.config).with_domains(domains)
    size, patches = cfg.vision.image_size, cfg.grid**2
    images = torch.randn(args.batch, 3, size, size)
    labels = torch.arange(args.batch) % 2
    masks = random_patch_mask(args.batch, patches, cfg.mim_ratio, torch.Generator().manual_seed(0))
    per = args.batch // len(domains)
    parts = [
        (images[i * per : (i + 1) * per], labels[i * per : (i + 1) * per], masks[i * per : (i + 1) * per])
        for i in range(len(domains))
    ]

    def setup(baseline: bool) -> tuple[MetaObjective, torch.optim.Optimizer]:
        model = build_model(cfg)
        for name, p in model.named_parameters():
            if name.startswith("text."):
                p.requires_grad_(False)
            elif baseline:
                p.requires_grad_(name in model._image_backbone or name.startswith("prompts."))
        model.train(True)
        request = TrainRequest(domains=domains, data="-", out="-", config=args.config, baseline=baseline)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        return MetaObjective(model, request), optimizer

    gmdf_obj, gmdf_opt = setup(False)
    plain_obj, plain_opt = setup(True)

    def meta_step() -> None:
        loss, _ = gmdf_obj.meta([(parts[0], 1), (parts[1], 2)], parts[2])
        gmdf_opt.zero_grad()
        loss.backward()
        gmdf_opt.step()

    def plain_step() -> None:
        loss, _ = plain_obj.baseline(images, labels)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    runs = {"GM-DF meta step": meta_step, "plain fine-tuning step": plain_step}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(
        f"config {cfg.name}, batch {args.batch} (3 domains), {torch.get_num_threads()} threads, "
        f"median of {args.rounds} interleaved rounds"
    )
    for name, ts in times.items():
        print(f"  {name:24s} {statistics.median(ts):7.2f} s")
    ratio = statistics.median(times["GM-DF meta step"]) / statistics.median(times["plain fine-tuning step"])
    print(f"  ratio meta / plain: {ratio:.2f}  (target <= 1.6)")


if __name__ == "__main__":
    main()
