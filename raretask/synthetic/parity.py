"""Multitask sparse parity, the task family of the nonlinear-neuron lab (raretask.synthetic.neurons).

Michaud et al.'s "quantization model" tasks on n input bits x in {-1, +1}^n,
drawn uniformly. Task k's label is the parity of its own bit subset S_k, y_k = prod_{j in S_k} x_j; its complexity is
k_k = |S_k| (`tasks.bits`). A parity of k bits is all-or-nothing (every subset of fewer bits is uncorrelated with it)
and needs about k ReLU neurons (|sum_{S_k} x_j| has k + 1 levels), so K tasks need about sum_k k_k neurons: a small
width cannot fit them all, a wider one can. Placement:
  core    every S_k holds the first `tasks.shared` bits (a sub-skill common to all tasks) plus k_k - shared private
          bits. With shared = k_k - 1 a neuron serving one task also receives a first-order gradient from every other
          task (E[chi_{S_f} x_j sigma'(w.x + b)] != 0 once w uses S_f minus j), so tasks compete for neurons the way
          the paper's linear tasks compete for directions of W.
  random  S_k uniform among the n bits (seeded). Tasks that share fewer than k - 1 bits are Fourier-orthogonal: a
          neuron tuned to one gets no gradient from the others, and a learned task stays learned.
Frequencies pi_k are Zipf-like (pi_k ~ (k+1)^-zipf in task order) or given. The optimiser matters: SGD pulls a shared
neuron towards task k in proportion to pi_k (the preset's choice), while Adam's per-parameter normalisation gives a
rare task's own parameters full-size steps whatever its frequency, and a learned rare task then tends to stay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from raretask.config import Config, ConfigError, StrEnum, option


class Placement(StrEnum):
    CORE = "core"
    RANDOM = "random"


@dataclass
class ParityConfig(Config):
    count: int = option(6, "number of tasks K")
    bits: list[int] = option(factory=lambda: [2], doc="k_k = |S_k| per task (one value: every task); complexity")
    placement: Placement = option(Placement.CORE, "core: shared first bits + private ones; random: seeded subsets")
    shared: int = option(1, "bits every task's subset holds (placement = core)")
    inputs: int = option(0, "n input bits (0: exactly the bits the tasks use; more: distractor bits)")
    zipf: float = option(1.0, "pi_k proportional to (k+1)^-zipf in task order")
    frequencies: list[float] | None = option(None, "explicit pi_k instead of zipf")
    seed: int = option(0, "draws the subsets (placement = random)")

    def sizes(self) -> list[int]:
        return self.bits * self.count if len(self.bits) == 1 else list(self.bits)

    def validate(self, path: str = "tasks") -> None:
        if self.count < 1:
            raise ConfigError(f"{path}.count: must be >= 1, got {self.count}")
        if len(self.bits) not in (1, self.count):
            raise ConfigError(f"{path}.bits: expected 1 or {self.count} values, got {len(self.bits)}")
        if self.shared < 0:
            raise ConfigError(f"{path}.shared: must be >= 0, got {self.shared}")
        core = self.placement is Placement.CORE
        low = self.shared + 1 if core else 1
        for i, k in enumerate(self.sizes()):
            if k < low:
                why = f" ({path}.shared = {self.shared} plus one private bit)" if core else ""
                raise ConfigError(f"{path}.bits[{i}]: must be >= {low}{why}, got {k}")
        if self.inputs < 0 or (self.inputs and self.inputs < self.needed()):
            raise ConfigError(f"{path}.inputs: the tasks need at least {self.needed()} bits, got {self.inputs}")
        if not core:  # the subsets are drawn distinct: there must be enough of each size
            for k in set(self.sizes()):
                if self.sizes().count(k) > math.comb(self.num_inputs(), k):
                    raise ConfigError(f"{path}.inputs: {self.num_inputs()} bits hold fewer than "
                                      f"{self.sizes().count(k)} distinct {k}-bit subsets")
        if self.zipf < 0:
            raise ConfigError(f"{path}.zipf: must be >= 0, got {self.zipf}")
        if self.frequencies is not None:
            check_frequencies(self.frequencies, self.count, f"{path}.frequencies")

    def needed(self) -> int:
        """The fewest input bits the subsets fit in."""
        sizes = self.sizes()
        return self.shared + sum(k - self.shared for k in sizes) if self.placement is Placement.CORE else max(sizes)

    def num_inputs(self) -> int:
        """n: `inputs`, or by default the bits the core layout uses (random: as many as disjoint subsets would)."""
        return self.inputs or (self.needed() if self.placement is Placement.CORE else sum(self.sizes()))

    def build(self) -> ParityTasks:
        sizes, n = self.sizes(), self.num_inputs()
        if self.placement is Placement.CORE:
            subsets, nxt = [], self.shared
            for k in sizes:
                subsets.append(list(range(self.shared)) + list(range(nxt, nxt + k - self.shared)))
                nxt += k - self.shared
        else:
            g, subsets = torch.Generator().manual_seed(self.seed), []
            for k in sizes:
                while True:  # distinct subsets (two tasks with one subset would be one task)
                    s = sorted(torch.randperm(n, generator=g)[:k].tolist())
                    if s not in subsets:
                        break
                subsets.append(s)
        pi = np.asarray(self.frequencies if self.frequencies is not None else
                        np.arange(1, self.count + 1, dtype=np.float64) ** -self.zipf, dtype=np.float64)
        width = max(1, len(str(self.count - 1)))
        return ParityTasks(subsets, pi / pi.sum(), n, [f"t{k:0{width}d}" for k in range(self.count)])


def check_frequencies(values: list[float], count: int, path: str) -> None:
    if len(values) != count:
        raise ConfigError(f"{path}: expected {count} values (one per task), got {len(values)}")
    if min(values) <= 0:
        raise ConfigError(f"{path}: every frequency must be > 0, got {min(values)}")
    if abs(sum(values) - 1) > 1e-6:
        raise ConfigError(f"{path}: frequencies sum to {sum(values):.6g}, not 1")


@dataclass
class ParityTasks:
    """The built family: bit subsets S_k, frequencies pi_k, input bits n and task names."""

    subsets: list[list[int]]
    frequencies: np.ndarray
    inputs: int
    names: list[str]

    @property
    def sizes(self) -> list[int]:
        return [len(s) for s in self.subsets]

    def index(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, k_max) bit indices and mask of the real entries."""
        k_max = max(self.sizes)
        idx = torch.zeros(len(self.subsets), k_max, dtype=torch.long)
        mask = torch.zeros(len(self.subsets), k_max, dtype=torch.bool)
        for k, s in enumerate(self.subsets):
            idx[k, :len(s)], mask[k, :len(s)] = torch.tensor(s), True
        return idx.to(device), mask.to(device)


def parity(x: torch.Tensor, task: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """y = prod_{j in S_task} x_j for x (..., n) and task ids (...)."""
    v = torch.gather(x, -1, idx[task])
    return torch.where(mask[task], v, torch.ones_like(v)).prod(-1)


class ParityStream:
    """Fresh batches, one generator per stream, each stream with its own task frequencies (S, K)."""

    def __init__(self, tasks: ParityTasks, seeds: list[int], probs: np.ndarray, device: torch.device):
        self.n, self.device = tasks.inputs, device
        self.idx, self.mask = tasks.index(device)
        self.generators = [torch.Generator(device=device).manual_seed(seed * 7919 + 104729) for seed in seeds]
        self.set_frequencies(probs)

    def set_frequencies(self, probs: np.ndarray) -> None:
        self.probs = torch.as_tensor(probs, dtype=torch.float64, device=self.device)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (S, B, n) in {-1, 1}, task ids (S, B), labels (S, B)."""
        task = torch.stack([torch.multinomial(p, batch, replacement=True, generator=g)
                            for p, g in zip(self.probs, self.generators)])
        x = torch.stack([torch.randint(0, 2, (batch, self.n), generator=g, device=self.device)
                         for g in self.generators]).float() * 2 - 1
        return x, task, parity(x, task, self.idx, self.mask)
