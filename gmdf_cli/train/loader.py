"""The training data loader: what each step sees is planned in the main process, in order, from the seeded generator
and the balanced sampler (so the batches are exactly those of a plain loop, for any number of workers); the crops
are read, augmented and turned into tensors by ``torch.utils.data`` worker processes, with pinned memory and
prefetching. Each planned step carries the planner's state after it was drawn, so a checkpoint taken after step s
resumes at step s + 1 however far the workers have read ahead.

A step's plan is global (the whole batch of every process); each process keeps its own shard: crop ``rank``,
``rank + world``, ... of every domain's part, so ``--batch-size`` is the global batch and the ranks together see
exactly the crops one process would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.faces import InputFormat
from ..model import random_patch_mask
from .augment import ONLINE_DOMAIN, degrade, online_blend
from .data import BalancedSampler, Crop, load_batch


@dataclass(frozen=True)
class CropTransform:
    """transform(i, crop) for ``load_batch``: crop i of the shard is crop ``i * world + rank`` of the whole batch and
    draws from its own generator, so the images do not depend on how many processes share the batch. A top-level
    class (not a closure) so worker processes can receive it."""

    seed: int
    blend: tuple[bool, ...]
    rank: int
    world: int
    augment: bool
    mask: str = "hull"

    def __call__(self, i: int, image: np.ndarray) -> np.ndarray:
        index = i * self.world + self.rank
        rng = np.random.default_rng([self.seed, index])
        if self.blend[index]:
            image = online_blend(image, rng, self.mask)
        return degrade(image, rng) if self.augment else image


@dataclass(frozen=True)
class PartPlan:
    """One domain's part of a step, already cut to this process's shard."""

    crops: tuple[Crop, ...]
    flip: torch.Tensor  # (b,) bool
    mask: torch.Tensor  # (b, P) bool
    domain: int  # domain index 1..N, or 0 for the meta-test part
    transform: CropTransform | None = None


@dataclass(frozen=True)
class StepPlan:
    step: int
    train: tuple[PartPlan, ...]
    test: PartPlan | None
    state: dict[str, Any]
    """The planner's state after this step was drawn (generator and sampler), for an exact resume."""


@dataclass
class Part:
    """A loaded part: images (b', 3, S, S), labels (b',), MIM mask (b', P); corrupt crops left out and named."""

    images: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    domain: int
    bad: list[str] = field(default_factory=list)

    def to(self, device: torch.device) -> Part:
        nb = device.type == "cuda"
        return Part(
            self.images.to(device, non_blocking=nb),
            self.labels.to(device, non_blocking=nb),
            self.mask.to(device, non_blocking=nb),
            self.domain,
            self.bad,
        )

    def pin_memory(self) -> Part:
        return Part(self.images.pin_memory(), self.labels.pin_memory(), self.mask.pin_memory(), self.domain, self.bad)


@dataclass
class LoadedStep:
    step: int
    train: list[Part]
    test: Part | None
    state: dict[str, Any]

    def to(self, device: torch.device) -> LoadedStep:
        return LoadedStep(
            self.step, [p.to(device) for p in self.train], self.test.to(device) if self.test else None, self.state
        )

    def pin_memory(self) -> LoadedStep:
        return LoadedStep(
            self.step, [p.pin_memory() for p in self.train], self.test.pin_memory() if self.test else None, self.state
        )

    @property
    def bad(self) -> list[str]:
        return [b for p in [*self.train, *([self.test] if self.test else [])] for b in p.bad]


class StepPlanner:
    """Draws every step's crops, flips, MIM masks and augmentation seeds from one generator, in the same order as the
    single-process loop always has: the meta-test domain (uniformly, or by ``odds``), the per-domain draws, then each
    part's flips, masks and seed (meta-train parts in domain order, the meta-test part last)."""

    def __init__(
        self,
        sampler: BalancedSampler,
        generator: torch.Generator,
        domains: list[str],
        shares: tuple[int, int],
        odds: list[float] | None,
        patches: int,
        mim_ratio: float,
        *,
        baseline: bool,
        augment: bool,
        online_blend: bool,
        rank: int = 0,
        world: int = 1,
        blend_mask: str = "hull",
    ) -> None:
        self.sampler = sampler
        self.gen = generator
        self.domains = domains
        self.per_domain, self.per_test = shares
        self.odds = torch.tensor(odds, dtype=torch.float64) if odds else None
        self.patches = patches
        self.mim_ratio = mim_ratio
        self.baseline = baseline
        self.augment = augment
        self.online_blend = online_blend
        self.blend_mask = blend_mask
        self.rank = rank
        self.world = world

    def state(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state(), "sampler": self.sampler.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["generator"])
        self.sampler.load_state(state["sampler"])

    def _part(self, crops: list[Crop], domain: int) -> PartPlan:
        flip = torch.rand(len(crops), generator=self.gen) < 0.5
        mask = random_patch_mask(len(crops), self.patches, self.mim_ratio, self.gen)
        transform = None
        if self.augment or self.online_blend:
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.gen))
            blend = tuple(c.domain == ONLINE_DOMAIN and c.label == 1 for c in crops)
            transform = CropTransform(seed, blend, self.rank, self.world, self.augment, self.blend_mask)
        r, w = self.rank, self.world
        return PartPlan(tuple(crops[r::w]), flip[r::w], mask[r::w], domain, transform)

    def plan(self, step: int) -> StepPlan:
        if self.baseline:
            crops = [c for d in self.domains for c in self.sampler.draw(d, self.per_domain)]
            return StepPlan(step, (self._part(crops, 0),), None, self.state())
        domains = self.domains
        if len(domains) < 2:
            pick = -1
        elif self.odds is not None:
            pick = int(torch.multinomial(self.odds, 1, generator=self.gen))
        else:
            pick = int(torch.randint(len(domains), (1,), generator=self.gen))
        sizes = [self.per_test if i == pick else self.per_domain for i in range(len(domains))]
        draws = {d: self.sampler.draw(d, n) for d, n in zip(domains, sizes, strict=True)}
        train = tuple(self._part(draws[d], i + 1) for i, d in enumerate(domains) if i != pick)
        test = self._part(draws[domains[pick]], 0) if pick >= 0 else None
        return StepPlan(step, train, test, self.state())


class _PlannedSteps(Sampler[StepPlan]):
    """The "indices" the DataLoader hands its workers are the step plans themselves, drawn here in the main
    process."""

    def __init__(self, planner: StepPlanner, first: int, last: int) -> None:
        self.planner, self.first, self.last = planner, first, last

    def __iter__(self) -> Iterator[StepPlan]:
        for step in range(self.first, self.last):
            yield self.planner.plan(step)

    def __len__(self) -> int:
        return self.last - self.first


def load_part(part: PartPlan, fmt: InputFormat) -> Part:
    crops = list(part.crops)
    images, labels, bad = load_batch(crops, fmt, part.flip, part.transform)
    mask = part.mask
    if bad:
        mask = mask[torch.tensor([c.path not in bad for c in crops])]
    return Part(images, labels, mask, part.domain, [str(b) for b in bad])


class _StepReader(Dataset[LoadedStep]):
    def __init__(self, fmt: InputFormat) -> None:
        self.fmt = fmt

    def __getitem__(self, plan: StepPlan) -> LoadedStep:
        train = [load_part(p, self.fmt) for p in plan.train]
        test = load_part(plan.test, self.fmt) if plan.test is not None else None
        return LoadedStep(plan.step, train, test, plan.state)

    def __len__(self) -> int:  # a map-style dataset keyed by plans; the sampler knows the length
        raise TypeError("planned steps have no length of their own")


def _identity(step: Any) -> Any:
    return step


def step_loader(
    planner: StepPlanner, fmt: InputFormat, first: int, last: int, workers: int = 0, pin_memory: bool = False
) -> DataLoader[LoadedStep]:
    """Steps ``first`` .. ``last - 1``, loaded by ``workers`` processes (0: in this process), in order."""
    return DataLoader(
        _StepReader(fmt),
        batch_size=None,
        sampler=_PlannedSteps(planner, first, last),
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
