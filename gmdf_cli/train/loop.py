"""`gmdf train`: GM-DF's Meta-Domain-Embedding Optimizer (sec. 3.3, journal Algorithm 1), the plain-CLIP baseline,
validation, atomic checkpoints with everything needed to resume exactly, and multi-process data parallel.

One meta step: of the N source domains, one (drawn at random) is the meta-test domain and the others are meta-train.
Inner loop: theta_E (experts, domain embeddings, prompt vectors) takes one step on L_cls of the meta-train batch
(eq. 12-13): theta_E' = theta_E - alpha * grad L_cls. Outer loop: L_total = L_sis + L_cls + L_mim on the meta-test
batch evaluated with theta_E', plus the domain-alignment Frechet loss between meta-train and meta-test features
(eq. 14-15), plus the meta-train batch's own L_sis + L_cls + L_mim (MLDG's objective). First-order by default (the
inner gradient is not differentiated), second-order with ``second_order``. The meta-test domain is seen through the
wildcard domain embedding: it plays the part of an unseen domain, which is also how the wildcard learns.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.func import functional_call

from ..analysis.evaluate import score_crops
from ..analysis.metrics import detection_metrics, video_level
from ..errors import UsageError
from ..fileio import atomic_path, write_text_atomic
from ..model import (
    GMDF,
    build_model,
    classification_loss,
    domain_alignment_loss,
    domain_class_contrastive_loss,
    get_config,
    mim_loss,
    random_patch_mask,
)
from ..weights import save_checkpoint
from .augment import ONLINE_DOMAIN, degrade, online_blend
from .data import BalancedSampler, Crop, load_batch, read_index, select

DEFAULT_LR = {"vit-b-16": 3e-6, "vit-tiny": 1e-3, "cnn-small": 1e-3}
RESUME_FILE = "resume.safetensors"


@dataclass
class TrainRequest:
    domains: list[str]
    data: str
    out: str
    config: str = "vit-tiny"
    epochs: int = 40
    batch_size: int = 32
    lr: float | None = None
    inner_lr: float | None = None
    steps_per_epoch: int | None = None
    save_every: int = 0
    seed: int = 0
    baseline: bool = False
    second_order: bool = False
    pretrained: str | None = "default"
    mim_weight: float = 1.0
    align_weight: float = 0.1
    grad_clip: float = 1.0
    threads: int | None = None
    """CPU threads; recorded so that a resumed run computes exactly as the original did."""
    augment: bool = False
    """Degrade training crops at random (crop, colour, blur, rescale, JPEG): see ``train.augment``."""
    online_blend: bool = False
    """Add the ``blend`` domain: the real training crops of all domains against self-blends of them made anew
    at every step."""

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR.get(self.config, 1e-5)

    @property
    def inner_learning_rate(self) -> float:
        return self.inner_lr if self.inner_lr is not None else self.learning_rate


def _is_theta_e(name: str) -> bool:
    return ".experts." in name or name.startswith("visual.domain_embedding") or name.startswith("prompts.")


class _TrainView(nn.Module):
    """forward = GMDF.forward_train, so ``functional_call`` can run it with substituted parameters."""

    def __init__(self, model: GMDF) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, domain: torch.Tensor, mask: torch.Tensor | None) -> Any:
        return self.model.forward_train(images, domain, mask)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""images (B, 3, S, S), labels (B,), MIM patch mask (B, P)."""


class MetaObjective:
    """The losses of one training step on tensors already in memory (so benchmarks can time exactly this)."""

    def __init__(self, model: GMDF, request: TrainRequest) -> None:
        self.model = model
        self.req = request
        self.theta_e = [(n, p) for n, p in model.named_parameters() if p.requires_grad and _is_theta_e(n)]
        self.view = _TrainView(model)

    def _losses(
        self, out: Any, images: torch.Tensor, domain: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {
            "sis": domain_class_contrastive_loss(out.prompt_logits, domain, labels),
            "cls": classification_loss(out.class_logits, labels),
            "mim": mim_loss(out.token_logits, self.model.tokenizer(images), mask),
        }

    def meta(self, train_parts: list[tuple[Batch, int]], test: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        """``train_parts``: (batch, domain index 1..N) per meta-train domain; ``test``: the meta-test batch."""
        x_tr = torch.cat([b[0] for b, _ in train_parts])
        y_tr = torch.cat([b[1] for b, _ in train_parts])
        m_tr = torch.cat([b[2] for b, _ in train_parts])
        d_tr = torch.cat([torch.full((len(b[1]),), idx, dtype=torch.long) for b, idx in train_parts])
        out_tr = self.model.forward_train(x_tr, d_tr, m_tr)
        tr = self._losses(out_tr, x_tr, d_tr, y_tr, m_tr)
        total = tr["cls"] + tr["sis"] + self.req.mim_weight * tr["mim"]
        logs = {f"train_{k}": v.item() for k, v in tr.items()}
        if test is not None:
            params = [p for _, p in self.theta_e]
            grads = torch.autograd.grad(
                tr["cls"], params, create_graph=self.req.second_order, retain_graph=True, allow_unused=True
            )
            fast = {
                f"model.{name}": p - self.req.inner_learning_rate * (g if self.req.second_order else g.detach())
                for (name, p), g in zip(self.theta_e, grads, strict=True)
                if g is not None
            }
            x_te, y_te, m_te = test
            d_te = torch.zeros(len(y_te), dtype=torch.long)  # the meta-test domain plays an unseen one
            out_te = functional_call(self.view, fast, (x_te, d_te, m_te), strict=False)
            te = self._losses(out_te, x_te, d_te, y_te, m_te)
            align = domain_alignment_loss(out_tr.features, out_te.features)
            total = total + te["sis"] + te["cls"] + self.req.mim_weight * te["mim"] + self.req.align_weight * align
            logs.update({f"test_{k}": v.item() for k, v in te.items()}, align=align.item())
        logs["loss"] = total.item()
        return total, logs

    def baseline(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Plain CLIP fine-tuning: real/fake under the wildcard prompts, nothing else."""
        out = self.model.forward_train(images, torch.zeros(len(labels), dtype=torch.long))
        loss = classification_loss(out.class_logits, labels)
        return loss, {"loss": loss.item(), "train_cls": loss.item()}


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, items: list[Crop]) -> list[Crop]:
        return items[self.rank :: self.world] if self.world > 1 else items

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        if self.world <= 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    def broadcast(self, model: nn.Module) -> None:
        if self.world > 1:
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, src=0)


class Trainer:
    def __init__(self, request: TrainRequest, console: Console) -> None:
        if request.threads is None:
            request = dataclasses.replace(request, threads=torch.get_num_threads())
        torch.set_num_threads(request.threads or 1)
        self.req = request
        self.console = console
        self.dist = Distributed.from_env()
        self.run = Path(request.out)
        rows = read_index(Path(request.data))
        if len(set(request.domains)) != len(request.domains):
            raise UsageError(f"domains listed twice: {request.domains}")
        self.train_sets = select(rows, request.domains, "train")
        self.domains = list(request.domains)
        if request.online_blend:
            if ONLINE_DOMAIN in self.domains:
                raise UsageError(f"the cache has a domain named {ONLINE_DOMAIN!r}, the name of the online-blend domain")
            reals = [r for d in self.domains for r in self.train_sets[d] if r.label == 0]
            self.train_sets[ONLINE_DOMAIN] = [dataclasses.replace(r, domain=ONLINE_DOMAIN) for r in reals] + [
                dataclasses.replace(r, domain=ONLINE_DOMAIN, label=1) for r in reals
            ]
            self.domains.append(ONLINE_DOMAIN)
        self.val_rows = [r for r in rows if r.domain in request.domains and r.split == "val"]
        self.cfg = get_config(request.config).with_domains(self.domains)
        self.size = self.cfg.vision.image_size
        self.gen = torch.Generator().manual_seed(request.seed)
        self.sampler = BalancedSampler(self.train_sets, request.seed)
        total = sum(len(v) for v in self.train_sets.values())
        self.steps_per_epoch = request.steps_per_epoch or max(1, math.ceil(total / request.batch_size))
        self.total_steps = self.steps_per_epoch * request.epochs
        self.per_domain = max(2, request.batch_size // len(self.domains))
        self.step = 0
        self.best = -1.0
        self.bad_crops: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.model = self._build_model()
        self.trainable = self._set_trainable()
        self.optimizer = torch.optim.Adam(self.trainable, lr=request.learning_rate)
        warmup = max(1, self.total_steps // 20)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / self.total_steps))),
        )
        self.objective = MetaObjective(self.model, request)

    # -- set-up ----------------------------------------------------------------------------------------------------
    def _build_model(self) -> GMDF:
        pretrained = self.req.pretrained
        if pretrained == "default":
            pretrained = self.cfg.clip_pretrained
        try:
            torch.manual_seed(self.req.seed)
            model = build_model(self.cfg, pretrained=pretrained or None)
        except (RuntimeError, OSError, ValueError) as exc:
            raise UsageError(
                f"cannot load the CLIP weights {pretrained!r} for {self.cfg.name} ({str(exc).splitlines()[0]}); "
                "pass --pretrained FILE (an open_clip checkpoint) or --pretrained none"
            ) from None
        self.dist.broadcast(model)
        return model

    def _set_trainable(self) -> list[nn.Parameter]:
        for name, p in self.model.named_parameters():
            if name.startswith("text."):
                p.requires_grad_(False)  # the text tower stays CLIP's; prompt vectors learn through it
            elif self.req.baseline:  # plain CLIP fine-tuning: image tower + the wildcard prompts' vectors
                p.requires_grad_(
                    name in self.model._image_backbone
                    or name.startswith("prompts.cls_ctx")
                    or name == "prompts.dom_ctx"
                )
        return [p for p in self.model.parameters() if p.requires_grad]

    def _fit_tokenizer(self) -> None:
        """Derive the MIM codebook offline from the first training crops (deterministic)."""
        sample = [r for rows in self.train_sets.values() for r in rows][:256]
        images, _, bad = load_batch(sample, self.size)
        self._report_bad(bad)
        self.model.tokenizer.fit(images)

    def _report_bad(self, bad: list[Path]) -> None:
        for path in bad:
            if str(path) not in self.bad_crops:
                self.bad_crops.add(str(path))
                self.console.print(f"[yellow]skipped corrupt crop[/] {path}", soft_wrap=True)

    # -- one step --------------------------------------------------------------------------------------------------
    def _batch(self, crops: list[Crop]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, labels and MIM masks for this rank. Flips and masks are drawn for the whole batch before it is
        sharded, so every rank consumes the shared generator alike and the ranks stay in step."""
        flip = torch.rand(len(crops), generator=self.gen) < 0.5
        mask = random_patch_mask(len(crops), self.cfg.grid**2, self.cfg.mim_ratio, self.gen)
        transform = None
        if self.req.augment or self.req.online_blend:
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.gen))
            blend = [c.domain == ONLINE_DOMAIN and c.label == 1 for c in crops]
            transform = self._transform(seed, blend)
        if self.dist.world > 1:
            crops, flip, mask = (
                self.dist.shard(crops),
                flip[self.dist.rank :: self.dist.world],
                mask[self.dist.rank :: self.dist.world],
            )
        images, labels, bad = load_batch(crops, self.size, flip, transform)
        if bad:
            mask = mask[torch.tensor([c.path not in bad for c in crops])]
            self._report_bad(bad)
        return images, labels, mask

    def _transform(self, seed: int, blend: list[bool]) -> Any:
        """transform(i, crop) for load_batch; crop i of the whole (unsharded) batch draws from its own generator, so
        the images do not depend on how many processes share the batch."""
        rank, world = self.dist.rank, self.dist.world

        def apply(i: int, image: np.ndarray) -> np.ndarray:
            index = i * world + rank
            rng = np.random.default_rng([seed, index])
            if blend[index]:
                image = online_blend(image, rng)
            return degrade(image, rng) if self.req.augment else image

        return apply

    def meta_step(self) -> dict[str, float]:
        domains = self.domains
        pick = int(torch.randint(len(domains), (1,), generator=self.gen)) if len(domains) > 1 else -1
        draws = {d: self.sampler.draw(d, self.per_domain) for d in domains}
        train_parts = [(self._batch(draws[d]), i + 1) for i, d in enumerate(domains) if i != pick]
        test_part = self._batch(draws[domains[pick]]) if pick >= 0 else None
        total, logs = self.objective.meta(train_parts, test_part)
        self._apply(total)
        return logs

    def baseline_step(self) -> dict[str, float]:
        crops = [c for d in self.domains for c in self.sampler.draw(d, self.per_domain)]
        images, labels, _ = self._batch(crops)
        loss, logs = self.objective.baseline(images, labels)
        self._apply(loss)
        return logs

    def _apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(self.trainable)
        if self.req.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.req.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

    # -- validation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """AUC per domain on the val split, frame- and video-level, scored as at deployment (wildcard domain)."""
        self.model.train(False)
        kept, scores = score_crops(self.model, self.val_rows)
        self.model.train(True)
        result: dict[str, Any] = {}
        for domain in self.req.domains:
            rows = [(r, s) for r, s in zip(kept, scores, strict=True) if r.domain == domain]
            if not rows:
                continue
            labels = [r.label for r, _ in rows]
            frame = detection_metrics(labels, [s for _, s in rows])
            _, v_labels, v_scores = video_level([r.video_id for r, _ in rows], labels, [s for _, s in rows])
            video = detection_metrics(v_labels, v_scores)
            result[domain] = {"frame_auc": frame["auc"], "video_auc": video["auc"], "frame_acc": frame["acc"]}
        return result

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def _training_meta(self) -> str:
        return json.dumps(
            {
                "request": dataclasses.asdict(self.req),
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "best_val_auc": self.best,
            }
        )

    def save_resume(self) -> None:
        if not self.dist.main:
            return
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for idx, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = value.detach().clone().contiguous()
        tensors["rng.generator"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "step": str(self.step),
            "best": repr(self.best),
            "sampler": json.dumps(self.sampler.state()),
            "scheduler": json.dumps(self.scheduler.state_dict()),
            "param_groups": json.dumps(opt["param_groups"]),
            "python_random": json.dumps(random.getstate(), default=list),
            "history": json.dumps(self.history),
            "request": json.dumps(dataclasses.asdict(self.req)),
        }
        with atomic_path(self.run / RESUME_FILE) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def load_resume(self) -> None:
        path = self.run / RESUME_FILE
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
            keys = list(fh.keys())
            model_state = {k[len("model.") :]: fh.get_tensor(k) for k in keys if k.startswith("model.")}
            optim: dict[int, dict[str, torch.Tensor]] = {}
            for k in keys:
                if k.startswith("optim."):
                    _, idx, name = k.split(".", 2)
                    optim.setdefault(int(idx), {})[name] = fh.get_tensor(k)
            self.gen.set_state(fh.get_tensor("rng.generator"))
            torch.set_rng_state(fh.get_tensor("rng.torch"))
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict({"state": optim, "param_groups": json.loads(meta["param_groups"])})
        self.scheduler.load_state_dict(json.loads(meta["scheduler"]))
        self.sampler.load_state(json.loads(meta["sampler"]))
        state = json.loads(meta["python_random"])
        random.setstate((state[0], tuple(state[1]), state[2]))
        self.step = int(meta["step"])
        self.best = float(meta["best"])
        self.history = json.loads(meta["history"])

    def _save_model(self, name: str) -> None:
        if self.dist.main:
            save_checkpoint(self.model, self.run / name, metadata={"training": self._training_meta()})

    def _log_epoch(self, epoch: int, logs: dict[str, float], val: dict[str, Any], seconds: float) -> None:
        row: dict[str, Any] = {"epoch": epoch, "step": self.step, "seconds": round(seconds, 2), **logs}
        for domain, m in val.items():
            row[f"val_{domain}_frame_auc"] = m["frame_auc"]
            row[f"val_{domain}_video_auc"] = m["video_auc"]
        self.history.append(row)
        if self.dist.main:
            fields = sorted({k for r in self.history for k in r}, key=lambda k: (k not in ("epoch", "step"), k))
            with atomic_path(self.run / "metrics.csv") as tmp, tmp.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows(self.history)

    # -- the run ---------------------------------------------------------------------------------------------------
    def fit(self, progress: Any = None) -> dict[str, Any]:
        self.run.mkdir(parents=True, exist_ok=True)
        if (self.run / RESUME_FILE).is_file():
            self.load_resume()
            self.console.print(f"resuming {self.run} at step {self.step} of {self.total_steps}")
        else:
            self._fit_tokenizer()
            if self.dist.main:
                write_text_atomic(self.run / "run.json", json.dumps(dataclasses.asdict(self.req), indent=2))
        if len(self.domains) == 1 and not self.req.baseline:
            self.console.print("[yellow]one source domain: no meta-test split, the outer loop has nothing to do[/]")
        self.model.train(True)
        task = progress.add_task("training", total=self.total_steps, completed=self.step) if progress else None
        sums: dict[str, float] = {}
        count = 0
        started = time.perf_counter()
        while self.step < self.total_steps:
            logs = self.baseline_step() if self.req.baseline else self.meta_step()
            self.step += 1
            count += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress.update(task, advance=1, description=f"training loss {logs['loss']:.3f}")
            if self.step % self.steps_per_epoch == 0:
                epoch = self.step // self.steps_per_epoch
                val = self.validate() if self.val_rows else {}
                aucs = [m["video_auc"] for m in val.values() if not math.isnan(m["video_auc"])]
                score = float(np.mean(aucs)) if aucs else -1.0
                self._log_epoch(epoch, {k: v / count for k, v in sums.items()}, val, time.perf_counter() - started)
                self._save_model("last.safetensors")
                if score > self.best or not (self.run / "best.safetensors").exists():
                    self.best = max(score, self.best)
                    self._save_model("best.safetensors")
                self.save_resume()
                sums, count = {}, 0
            elif self.req.save_every and self.step % self.req.save_every == 0:
                self.save_resume()
        digest = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        agree = True
        if self.dist.world > 1:
            gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(self.dist.world)]
            dist.all_gather(gathered, torch.tensor([digest], dtype=torch.float64))
            agree = len({float(g) for g in gathered}) == 1
        summary = {
            "run": str(self.run),
            "steps": self.step,
            "best_val_auc": self.best,
            "last": self.history[-1] if self.history else {},
            "world_size": self.dist.world,
            "ranks_agree": agree,
            "weights_digest": digest,
            "corrupt_crops_skipped": len(self.bad_crops),
        }
        write_text_atomic(self.run / f"summary-rank{self.dist.rank}.json", json.dumps(summary, indent=2))
        return summary


def load_request(run: Path) -> TrainRequest:
    path = run / "run.json"
    if not path.is_file():
        raise UsageError(f"nothing to resume in {run}: no run.json")
    return TrainRequest(**json.loads(path.read_text()))
