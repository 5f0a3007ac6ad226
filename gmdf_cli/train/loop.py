"""`gmdf train`: GM-DF's Meta-Domain-Embedding Optimizer (sec. 3.3, journal Algorithm 1), the plain-CLIP baseline,
validation, atomic checkpoints with everything needed to resume exactly, and multi-process data parallel.

One meta step (journal Algorithm 1): of the N source domains, one (drawn at random) is the meta-test domain and the
others are meta-train. The parameters are split in two: theta_E (experts, domain embeddings, prompt vectors) and
theta_O (everything else that trains).
- Meta-train phase: for each meta-train domain in turn, L_cls on its batch, and theta_E <- theta_E - beta * grad
  (eq. 10, plain gradient descent, ``--inner-lr``). These updates are kept: theta_E learns here and only here.
- Meta-test phase: L_total = L_sis + L_cls + L_mim (eq. 11) on the meta-test batch with the updated theta_E, plus
  the Frechet domain-alignment loss between the meta-train and meta-test features, and theta_O takes an Adam step
  with rate delta (eq. 12, ``--lr``): theta_O learns here and only here.
First-order by default; with ``second_order`` the meta-test loss is differentiated through the inner updates (their
gradients depend on theta_O). The meta-test domain is seen through the wildcard domain embedding: it plays the part
of an unseen domain. The wildcard's own vectors belong to theta_E but appear only in the meta-test phase, so they
keep their initial values and theta_O learns to classify through them (see docs/architecture.md).

Where it runs: ``--device`` (model, batches, masks and losses there), ``--precision`` (autocast; fp16 with a loss
scaler), ``--workers`` data-loader processes (``loader.py``: the same batches for any number), and several processes
under ``torchrun`` with torch DDP (``distributed.py``; ``--batch-size`` is the global batch).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..analysis.metrics import detection_metrics, video_level
from ..data.faces import InputFormat
from ..device import autocast, configure, describe, resolve_device
from ..engine.batching import score_cached
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
)
from ..model.config import DEFAULT_LR
from ..terminal import plain
from ..weights import save_checkpoint
from . import checkpoint
from .augment import ONLINE_DOMAIN
from .checkpoint import RESUME_FILE, ResumeState
from .data import BalancedSampler, Crop, load_batch, read_index, select
from .distributed import Distributed, all_rows, mean_over_ranks
from .loader import LoadedStep, StepPlanner, step_loader

DEFAULT_INNER_LR = 0.01
"""beta of eq. 10: the meta-train phase's plain gradient-descent step on theta_E (the papers give no value)."""


@dataclass
class TrainRequest:
    domains: list[str]
    data: str
    out: str
    config: str = "vit-b-16"
    """The paper's setting (from open_clip's pretrained CLIP); vit-tiny is a random toy for tests."""
    epochs: int = 40
    batch_size: int = 32
    lr: float | None = None
    inner_lr: float | None = None
    meta_test_share: float = 0.5
    """Share of the global batch that is the meta-test domain's (the rest split evenly over the N-1 meta-train
    domains). The papers fix which domains play which part, not the batch sizes; theta_O learns from the meta-test
    part alone, so a 1/N share starves it (see docs/architecture.md). 0: every domain the same share (runs recorded
    before this option)."""
    meta_test_weights: dict[str, float] | None = None
    """How often each domain is drawn as the meta-test domain, relative to the others (a domain not named: 1).
    A large domain among small ones (thousands of DFDC pairs beside a few Celeb-DF videos) is drawn more often, so
    theta_O, which learns from the meta-test part alone, sees it more. None: every domain equally often."""
    steps_per_epoch: int | None = None
    save_every: int = 0
    seed: int = 0
    baseline: bool = False
    second_order: bool = False
    pretrained: str | None = "default"
    mim_weight: float = 1.0
    align_weight: float = 1.0
    """The paper sums its losses with weight 1."""
    grad_clip: float = 1.0
    threads: int | None = None
    """CPU threads; recorded so that a resumed run computes exactly as the original did."""
    device: str = "auto"
    precision: str = "fp32"
    """fp32, or bf16/fp16 autocast (fp16 with a loss scaler); the Frechet loss and MIM tokens stay fp32."""
    workers: int = 0
    """Data-loader worker processes reading crops (0: the training process itself)."""
    augment: bool = False
    """Degrade training crops at random (crop, colour, blur, rescale, JPEG): see ``train.augment``."""
    online_blend: bool = False
    """Add the ``blend`` domain: the real training crops of all domains against self-blends of them made anew
    at every step."""
    blend_mask: str = "hull"
    """The online blends' mask: ``hull`` of the crop's 68 landmarks (SBI's), or ``ellipse`` over its face box."""
    face_px: int | None = None
    face_jpeg: int | None = None
    """Override the config's ``vision.face_px`` / ``vision.face_jpeg`` (``canonical_face``): the model then takes
    every face, in training and scanning, shrunk to that size / re-encoded at that JPEG quality. None: the config's."""

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.config]

    @property
    def inner_learning_rate(self) -> float:
        return self.inner_lr if self.inner_lr is not None else DEFAULT_INNER_LR


def is_theta_e(name: str) -> bool:
    """theta_E of Algorithm 1: the experts, the domain embeddings and the prompt vectors (tau's phi included)."""
    return ".experts." in name or name.startswith("visual.domain_embedding") or name.startswith("prompts.")


def set_trainable(model: GMDF, baseline: bool) -> list[nn.Parameter]:
    """Mark what trains and return what the optimizer steps. The text tower stays CLIP's (prompt vectors learn
    through it). Meta-learning: the optimizer holds theta_O only; theta_E is updated by the meta-train phase's own
    gradient steps, so it carries no autograd flag of its own (and DDP leaves it alone). Baseline: plain CLIP
    fine-tuning of the image tower and the wildcard prompts' vectors."""
    for name, p in model.named_parameters():
        if name.startswith("text."):
            p.requires_grad_(False)
        elif baseline:
            p.requires_grad_(
                name in model._image_backbone or name.startswith("prompts.cls_ctx") or name == "prompts.dom_ctx"
            )
        else:
            p.requires_grad_(not is_theta_e(name))
    return [p for p in model.parameters() if p.requires_grad]


def step_shares(batch: int, domains: int, meta_test_share: float, baseline: bool = False) -> tuple[int, int]:
    """How one step deals ``batch`` crops: (crops per meta-train domain, crops of the meta-test domain). The meta-test
    domain gets ``meta_test_share`` of the batch, the N-1 meta-train domains the rest in equal parts; share 0, a
    baseline run or a single domain: every domain the same share (the baseline uses the first number)."""
    if baseline or domains < 2 or not meta_test_share:
        return max(2, batch // domains), max(2, batch // domains)
    test = max(2, round(batch * meta_test_share))
    return max(2, (batch - test) // (domains - 1)), test


def meta_test_odds(domains: list[str], weights: dict[str, float] | None) -> list[float] | None:
    """Each domain's chance of being the meta-test domain, from ``--meta-test-weights`` (None: all alike)."""
    if not weights:
        return None
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise UsageError(f"--meta-test-weights names {', '.join(unknown)}, not among the domains {', '.join(domains)}")
    if not all(math.isfinite(w) and w > 0 for w in weights.values()):
        raise UsageError("--meta-test-weights must be positive numbers")
    raw = [float(weights.get(d, 1.0)) for d in domains]
    return [w / sum(raw) for w in raw]


class _TrainView(nn.Module):
    """forward = GMDF.forward_train, so ``functional_call`` can run it with substituted parameters."""

    def __init__(self, model: GMDF) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, domain: torch.Tensor, mask: torch.Tensor | None) -> Any:
        return self.model.forward_train(images, domain, mask)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""images (B, 3, S, S), labels (B,), MIM patch mask (B, P), all on the model's device."""


class MetaObjective(nn.Module):
    """The losses of one training step on tensors already on the device (so benchmarks can time exactly this).
    An ``nn.Module`` so that DistributedDataParallel wraps the whole step: ``objective("meta", parts, test)`` or
    ``objective("baseline", images, labels)`` returns (loss, logs). With several processes the inner gradient and
    the Frechet statistics are taken over the global batch, so N processes compute what one would."""

    def __init__(self, model: GMDF, request: TrainRequest, device: torch.device | None = None) -> None:
        super().__init__()
        self.model = model
        self.req = request
        self.device = device or torch.device("cpu")
        self.theta_e = [(n, p) for n, p in model.named_parameters() if is_theta_e(n)]
        self.view = _TrainView(model)
        self.inner_scale = 1.0
        """fp16: the loss scale, applied to the inner loss too so its gradients do not underflow."""
        self.inner_overflowed = False
        """fp16: an inner gradient of the last meta step overflowed and its update was skipped (the trainer then
        lowers the loss scale, as the scaler does when theta_O's gradients overflow)."""

    def forward(self, kind: str, *args: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.baseline(*args) if kind == "baseline" else self.meta(*args)

    def _autocast(self) -> Any:
        """Mixed precision as asked; second order also needs attention whose backward can be differentiated again
        (the fused flash / memory-efficient kernels' cannot), so it runs PyTorch's math attention."""
        stack = contextlib.ExitStack()
        stack.enter_context(autocast(self.device, self.req.precision))
        if self.req.second_order:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        return stack

    def _losses(
        self, out: Any, images: torch.Tensor, domain: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {
            "sis": domain_class_contrastive_loss(out.prompt_logits.float(), domain, labels),
            "cls": classification_loss(out.class_logits.float(), labels),
            "mim": mim_loss(out.token_logits, self.model.tokenizer(images), mask),
        }

    def meta(self, train_parts: list[tuple[Batch, int]], test: Batch | None) -> tuple[torch.Tensor, dict[str, float]]:
        """One meta step's loss for theta_O. ``train_parts``: (batch, domain index 1..N) per meta-train domain;
        ``test``: the meta-test batch. The meta-train phase's theta_E updates are written into the model here."""
        fast, features, logs = self.inner(train_parts)
        if test is None:  # nothing to train theta_O on
            total = torch.zeros((), device=self.device, requires_grad=True)
        else:
            total, test_logs = self.outer(fast, torch.cat(features), test)
            logs.update(test_logs)
        with torch.no_grad():  # the inner updates are kept
            for name, p in self.theta_e:
                p.copy_(fast[f"model.{name}"])
        logs["loss"] = total.item()
        return total, logs

    def inner(
        self, train_parts: list[tuple[Batch, int]]
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], dict[str, float]]:
        """The meta-train phase (eq. 10): for each meta-train domain, L_cls on its whole faces and a gradient step
        of rate beta on theta_E. Returns the updated theta_E (differentiable w.r.t. theta_O when second order),
        each domain's features (detached), and the mean L_cls."""
        second = self.req.second_order
        beta = self.req.inner_learning_rate
        fast = {f"model.{n}": p.detach().clone().requires_grad_() for n, p in self.theta_e}
        features: list[torch.Tensor] = []
        losses: list[float] = []
        for (x, y, _), idx in train_parts:
            d = torch.full((len(y),), idx, dtype=torch.long, device=x.device)
            with self._autocast():
                out = functional_call(self.view, fast, (x, d, None), strict=False)
            loss = classification_loss(out.class_logits.float(), y)
            names = list(fast)
            grads = torch.autograd.grad(
                loss * self.inner_scale, [fast[k] for k in names], create_graph=second, allow_unused=True
            )
            used = [(k, g) for k, g in zip(names, grads, strict=True) if g is not None]
            flat = torch.cat([g.reshape(-1) for _, g in used]) / self.inner_scale
            flat = mean_over_ranks(flat if second else flat.detach(), second)  # one collective for all of theta_E
            features.append(out.features.detach())
            losses.append(loss.item())
            if self.inner_scale != 1.0 and not bool(torch.isfinite(flat).all()):
                self.inner_overflowed = True  # the same on every rank: the gradient is their mean
                continue
            for (k, _), step in zip(used, flat.split([fast[k].numel() for k, _ in used]), strict=True):
                updated = fast[k] - beta * step.view_as(fast[k])
                fast[k] = updated if second else updated.detach().requires_grad_()
        return fast, features, {"train_cls": sum(losses) / max(1, len(losses))}

    def outer(
        self, fast: dict[str, torch.Tensor], train_features: torch.Tensor, test: Batch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The meta-test phase's loss (eq. 11) with the updated theta_E: L_sis + L_cls + L_mim on the meta-test
        batch (wildcard domain) plus the Frechet alignment of its features to the meta-train features."""
        theta_e = fast if self.req.second_order else {k: v.detach() for k, v in fast.items()}
        x, y, m = test
        d = torch.zeros(len(y), dtype=torch.long, device=x.device)  # the meta-test domain plays an unseen one
        with self._autocast():
            out = functional_call(self.view, theta_e, (x, d, m), strict=False)
        te = self._losses(out, x, d, y, m)
        align = domain_alignment_loss(all_rows(train_features), all_rows(out.features))
        total = te["sis"] + te["cls"] + self.req.mim_weight * te["mim"] + self.req.align_weight * align
        return total, {**{f"test_{k}": v.item() for k, v in te.items()}, "align": align.item()}

    def baseline(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Plain CLIP fine-tuning: real/fake under the wildcard prompts, nothing else."""
        with self._autocast():
            out = self.model.forward_train(images, torch.zeros(len(labels), dtype=torch.long, device=images.device))
        loss = classification_loss(out.class_logits.float(), labels)
        return loss, {"loss": loss.item(), "train_cls": loss.item()}


class Trainer:
    def __init__(self, request: TrainRequest, console: Console) -> None:
        if request.threads is None:
            request = dataclasses.replace(request, threads=torch.get_num_threads())
        torch.set_num_threads(request.threads or 1)
        self.req = request
        self.console = console
        self.device = resolve_device(request.device)
        configure(self.device, request.precision)  # also a clear error for an unknown precision
        self.dist = Distributed.from_env(self.device)
        if self.dist.world > 1 and self.device.type == "cuda":  # one process per GPU
            self.device = torch.device("cuda", self.dist.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
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
        if len(self.domains) < 2 and not request.baseline:
            raise UsageError(
                "meta-learning needs two or more source domains (one is the meta-test domain of each step); "
                "add --online-blend or another domain, or train with --baseline"
            )
        self.odds = meta_test_odds(self.domains, request.meta_test_weights)
        self.val_rows = [r for r in rows if r.domain in request.domains and r.split == "val"]
        self.cfg = get_config(request.config).with_domains(self.domains)
        vision = self.cfg.vision
        if request.face_px is not None:
            vision = dataclasses.replace(vision, face_px=request.face_px)
        if request.face_jpeg is not None:
            vision = dataclasses.replace(vision, face_jpeg=request.face_jpeg)
        self.cfg = self.cfg.replace(vision=vision)
        self.input_format = InputFormat.of(self.cfg.vision)
        self.gen = torch.Generator().manual_seed(request.seed)
        self.sampler = BalancedSampler(self.train_sets, request.seed)
        total = sum(len(v) for v in self.train_sets.values())
        self.steps_per_epoch = request.steps_per_epoch or max(1, math.ceil(total / request.batch_size))
        self.total_steps = self.steps_per_epoch * request.epochs
        self.per_domain, self.per_test = self._shares()
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
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=request.precision == "fp16")
        self.objective = MetaObjective(self.model, request, self.device)
        self.engine = self.dist.wrap(self.objective, self.device, find_unused=request.baseline)
        self.planner = StepPlanner(
            self.sampler,
            self.gen,
            self.domains,
            (self.per_domain, self.per_test),
            self.odds,
            self.cfg.grid**2,
            self.cfg.mim_ratio,
            baseline=request.baseline,
            augment=request.augment,
            online_blend=request.online_blend,
            rank=self.dist.rank,
            world=self.dist.world,
            blend_mask=request.blend_mask,
        )
        self.plan_state = self.planner.state()

    def _shares(self) -> tuple[int, int]:
        """``step_shares`` of the global batch (``--batch-size`` is global: all processes together). Each process takes
        an equal share of every part, so each number is rounded up to a multiple of the process count: no process
        ever gets an empty or unequal part."""
        req = self.req
        shares = step_shares(req.batch_size, len(self.domains), req.meta_test_share, req.baseline)
        world = self.dist.world
        rounded = tuple(-(-s // world) * world for s in shares)
        if rounded != shares and self.dist.main:
            self.console.print(
                f"[yellow]note:[/] {shares[0]} crops per domain and {shares[1]} meta-test crops cannot be shared "
                f"equally by {world} processes; using {rounded[0]} and {rounded[1]}"
            )
        return rounded[0], rounded[1]

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
                f"cannot load the pretrained weights {pretrained!r} for {self.cfg.name} ({str(exc).splitlines()[0]}); "
                "pass --pretrained FILE (an open_clip checkpoint, or for mnv2 a converted MobileNetV2) or "
                "--pretrained none"
            ) from None
        return model.to(self.device)

    def _set_trainable(self) -> list[nn.Parameter]:
        return set_trainable(self.model, self.req.baseline)

    def tokenizer_sample(self, count: int = 256) -> list[Crop]:
        """``count`` training crops shared equally by every training domain (the last ones may give more when a
        domain has fewer), each domain's spread evenly over its list: deterministic, and no domain left out."""
        domains = [d for d in self.domains if self.train_sets[d]]
        sample: list[Crop] = []
        for i, domain in enumerate(domains):
            rows = self.train_sets[domain]
            want = min(len(rows), (count - len(sample)) // (len(domains) - i))
            sample.extend(rows[int(k * len(rows) / want)] for k in range(want))
        return sample

    def _fit_tokenizer(self) -> None:
        """Derive the MIM codebook offline from training crops of every domain (deterministic)."""
        sample = self.tokenizer_sample()
        images, _, bad = load_batch(sample, self.input_format)
        self._report_bad([str(b) for b in bad])
        self.model.tokenizer.fit(images.to(self.device))

    def _report_bad(self, bad: list[str]) -> None:
        for path in bad:
            if path not in self.bad_crops:
                self.bad_crops.add(path)
                self.console.print(f"[yellow]skipped corrupt crop[/] {plain(str(path))}", soft_wrap=True)

    # -- one step --------------------------------------------------------------------------------------------------
    def loader(self, workers: int | None = None) -> Any:
        """The steps still to run, from the planner's current state, read by ``--workers`` processes."""
        count = self.req.workers if workers is None else workers
        pin = self.device.type == "cuda"
        return step_loader(self.planner, self.input_format, self.step, self.total_steps, count, pin)

    def run_step(self, loaded: LoadedStep) -> dict[str, float]:
        self._report_bad(loaded.bad)
        batch = loaded.to(self.device)
        self.objective.inner_scale = float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0
        self.objective.inner_overflowed = False
        if self.req.baseline:
            part = batch.train[0]
            total, logs = self.engine("baseline", part.images, part.labels)
        else:
            train_parts = [((p.images, p.labels, p.mask), p.domain) for p in batch.train]
            test = (batch.test.images, batch.test.labels, batch.test.mask) if batch.test is not None else None
            total, logs = self.engine("meta", train_parts, test)
        self._apply(total)
        self.plan_state = loaded.state
        return logs

    def _apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.req.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.req.grad_clip)
        self.scaler.step(self.optimizer)
        if self.objective.inner_overflowed:  # theta_E's update was skipped: lower the scale as for theta_O's
            self.scaler.update(self.scaler.get_scale() * self.scaler.get_backoff_factor())
        else:
            self.scaler.update()
        self.scheduler.step()

    # -- validation ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """AUC per domain on the val split, frame- and video-level, scored as at deployment (wildcard domain)."""
        self.model.train(False)
        kept, scores = score_cached(self.model, self.val_rows)
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
        state = ResumeState(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            planner=self.plan_state,  # as after the last step run, not as read ahead
            torch_rng=torch.get_rng_state(),
            python_random=random.getstate(),
            grad_scaler=self.scaler.state_dict(),
            step=self.step,
            best=self.best,
            per_domain=self.per_domain,
            per_test=self.per_test,
            world_size=self.dist.world,
            history=self.history,
            request=dataclasses.asdict(self.req),
        )
        checkpoint.save_resume(self.run / RESUME_FILE, state)

    def load_resume(self) -> None:
        path = self.run / RESUME_FILE
        state = checkpoint.load_resume(path)
        saved = (
            self.per_domain if state.per_domain is None else state.per_domain,
            self.per_test if state.per_test is None else state.per_test,
        )
        if saved != (self.per_domain, self.per_test):
            raise UsageError(
                f"{path} was trained with {saved[0]} crops per meta-train domain and {saved[1]} meta-test crops per "
                f"step ({state.world_size} process(es)); here it would be {self.per_domain} and {self.per_test}: "
                "resume with a process count that divides both"
            )
        torch.set_rng_state(state.torch_rng)
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        self.planner.load_state(state.planner)
        self.plan_state = self.planner.state()
        if state.grad_scaler is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.grad_scaler)
        random.setstate(state.python_random)
        self.step = state.step
        self.best = state.best
        self.history = state.history

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
            self.console.print(f"resuming {plain(str(self.run))} at step {self.step} of {self.total_steps}")
        else:
            self._fit_tokenizer()
            if self.dist.main:
                write_text_atomic(self.run / "run.json", json.dumps(dataclasses.asdict(self.req), indent=2))
        self.model.train(True)
        task = progress.add_task("training", total=self.total_steps, completed=self.step) if progress else None
        sums: dict[str, float] = {}
        count = 0
        started = time.perf_counter()
        for loaded in self.loader():
            logs = self.run_step(loaded)
            self.step += 1
            count += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress.update(task, advance=1, description=f"training loss {logs['loss']:.3f}")
            if self.step % self.steps_per_epoch == 0:
                epoch = self.step // self.steps_per_epoch
                val = self.validate() if self.val_rows and self.dist.main else {}  # once, on rank 0
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
        agree = self.dist.agree(digest)
        summary = {
            "run": str(self.run),
            "steps": self.step,
            "best_val_auc": self.best,
            "last": self.history[-1] if self.history else {},
            "world_size": self.dist.world,
            "device": describe(self.device),
            "precision": self.req.precision,
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
    stored = json.loads(path.read_text())
    stored.setdefault("blend_mask", "ellipse")  # runs recorded before the landmark hull blended with the ellipse
    stored.setdefault("meta_test_share", 0.0)  # runs recorded before it: every domain had the same share
    return TrainRequest(**stored)
