"""Training data from a prepared cache: the index, crops loaded lazily per batch (never a whole epoch in memory),
and a domain- and class-balanced sampler whose whole state is a few integers (so a resumed run draws the same
batches)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..data.cache import Crop, load_batch, read_index
from ..errors import UsageError

__all__ = ["BalancedSampler", "Crop", "group_by_video", "load_batch", "read_index", "select"]


def select(rows: list[Crop], domains: list[str], split: str, need_both_classes: bool = True) -> dict[str, list[Crop]]:
    """Rows of ``split`` per requested domain, with clear errors for unknown or one-class domains."""
    present = sorted({r.domain for r in rows})
    by_domain: dict[str, list[Crop]] = {d: [] for d in domains}
    for r in rows:
        if r.domain in by_domain and r.split == split:
            by_domain[r.domain].append(r)
    for d, items in by_domain.items():
        if d not in present:
            raise UsageError(f"domain {d!r} is not in the cache (it has: {', '.join(present)})")
        labels = {r.label for r in items}
        if not items:
            raise UsageError(f"domain {d!r} has no {split} crops in the cache")
        if need_both_classes and labels != {0, 1}:
            only = "real" if labels == {0} else "fake"
            raise UsageError(f"domain {d!r} has only {only} samples in its {split} split; it needs both")
    return by_domain


class BalancedSampler:
    """Draws, for each domain, ``per_domain`` crops half real and half fake, from per-(domain, class) pools that are
    reshuffled each time they run out. Its state (cycle and position of each pool) fits in JSON."""

    def __init__(self, by_domain: dict[str, list[Crop]], seed: int) -> None:
        self.seed = seed
        self.pools: dict[str, list[Crop]] = {}
        for domain, rows in by_domain.items():
            for label in (0, 1):
                self.pools[f"{domain}/{label}"] = [r for r in rows if r.label == label]
        self.cursor: dict[str, list[int]] = {key: [0, 0] for key in self.pools}  # [cycle, position]

    def _order(self, key: str, cycle: int) -> np.ndarray:
        salt = sum(key.encode()) * 7919
        return np.random.default_rng([self.seed, cycle, salt]).permutation(len(self.pools[key]))

    def _take(self, key: str, count: int) -> list[Crop]:
        cycle, pos = self.cursor[key]
        out = []
        order = self._order(key, cycle)
        for _ in range(count):
            if pos >= len(order):
                cycle, pos = cycle + 1, 0
                order = self._order(key, cycle)
            out.append(self.pools[key][int(order[pos])])
            pos += 1
        self.cursor[key] = [cycle, pos]
        return out

    def draw(self, domain: str, per_domain: int) -> list[Crop]:
        fake = per_domain // 2
        return self._take(f"{domain}/0", per_domain - fake) + self._take(f"{domain}/1", fake)

    def state(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.cursor.items()}

    def load_state(self, state: dict[str, list[int]]) -> None:
        for key, value in state.items():
            if key in self.cursor:
                self.cursor[key] = [int(value[0]), int(value[1])]


def group_by_video(rows: list[Crop]) -> dict[str, list[Crop]]:
    videos: dict[str, list[Crop]] = defaultdict(list)
    for r in rows:
        videos[f"{r.domain}/{r.video_id}"].append(r)
    return videos
