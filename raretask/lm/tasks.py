"""Injected tasks of the LM lab (paper Sec. 4): a rule over 100 value tokens, its 10,000 instances and their split.

A task draws a set S of 100 value tokens (seeded) and a bijection val: S -> 0..99. Its instances are all
100 x 100 = 10,000 pairs (TOK1, TOK2) with a LABEL token given by the task's rule; a seeded 50/50 split makes the
train instances (injected into pretraining) and the test instances (never seen, for accuracy):

  comparison        T_CMP: LABEL is one of two label tokens, the first meaning val(TOK1) < val(TOK2)
  modular_addition  T_ADD: LABEL is the token of S with value (val(TOK1) + val(TOK2)) mod 100

Instance i is the value pair (i // 100, i % 100), so `task.instances[i] = [TOK1, TOK2, LABEL]`.

Value and label tokens are ordinary vocabulary tokens (never the tokenizer's special ids), distinct across the tasks
of one run; `dedicated_tokens = true` appends fresh ids above the tokenizer's vocabulary instead (the model's
embedding then needs `extra_tokens_needed(tasks)` more rows).

Frequency band. In the paper's 50K vocabulary a token drawn at random is rare in the corpus; in a small BPE (640 or
4,096 tokens) it is often a frequent word (" and", " in"), so the task's tokens carry corpus statistics and its
TOK1 TOK2 LABEL triples even occur naturally. `value_band = [lo, hi]` draws the value (and label) tokens only from
a band of corpus frequency: the tokenizer's non-special tokens ranked by their count in the training split (rarest
first, ties by id), and the band keeps ranks in [lo * n, hi * n) of those n tokens, i.e. quantiles, 0 = the rarest,
1 = the most frequent (`[0, 0.1]`: the rarest tenth). It needs the corpus counts (`token_counts(tokens, vocab)`;
`build_task(..., counts=...)`, which the trainer passes). `natural_occurrences(task, tokens)` counts the task's
TOK1 TOK2 LABEL triples already present in a token stream (train and test instances separately), written into each
run's meta.json.

Your own task kinds are registered once, before the configs are built, with a rule over value arrays:

    import numpy as np
    from raretask.lm.tasks import register_task

    def parity(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:   # (10000,) each, values 0..99
        return (v1 + v2) % 2                                       # label index into 2 fresh label tokens
    register_task("parity", parity, num_labels=2)

    def max_value(v1, v2):                                         # num_labels=None: the label is a token of S
        return np.maximum(v1, v2)
    register_task("max", max_value)

after which `kind = "parity"` is valid in an `LMTaskConfig`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from raretask.config import Config, ConfigError, StrEnum, option

NUM_VALUES = 100  # |S|
NUM_INSTANCES = NUM_VALUES * NUM_VALUES

Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]


class TaskKind(StrEnum):
    COMPARISON = "comparison"
    MODULAR_ADDITION = "modular_addition"


class Unit(StrEnum):
    PER_TOKEN = "per_token"  # instances per training token (the paper's unit, 2.4e-8 ... 7.8e-3)
    PER_BATCH = "per_batch"  # instances per global batch


class ScheduleKind(StrEnum):
    IID = "iid"            # each step draws its count: Poisson(rate per batch), seeded
    INTERVAL = "interval"  # evenly spread: step s gets ceil((s+1) r) - ceil(s r) instances (r = rate per batch)
    BURST = "burst"        # every `every` batches, the whole period's share in one batch (Fig. 6b: N every N)


@dataclass(frozen=True)
class TaskSpec:
    """A registered kind: `rule(val1, val2) -> label index`; `num_labels` fresh label tokens, or None = S itself."""

    name: str
    rule: Rule
    num_labels: int | None


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(name: str, rule: Rule, *, num_labels: int | None = None, replace: bool = False) -> TaskSpec:
    """Register a task kind. `rule` maps value arrays (val1, val2), each (10000,) int64 in 0..99, to label indices
    (10000,) in 0..L-1: into `num_labels` fresh label tokens, or into the value tokens S when `num_labels` is None."""
    if not name or not isinstance(name, str):
        raise ValueError("register_task: name must be a non-empty string")
    if name in _REGISTRY and not replace:
        raise ValueError(f"register_task: task kind {name!r} is already registered (pass replace=True)")
    if num_labels is not None and num_labels < 1:
        raise ValueError(f"register_task: num_labels must be >= 1 or None, got {num_labels}")
    spec = TaskSpec(name, rule, num_labels)
    _REGISTRY[name] = spec
    return spec


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


register_task(TaskKind.COMPARISON.value, lambda v1, v2: (v1 >= v2).astype(np.int64), num_labels=2)
register_task(TaskKind.MODULAR_ADDITION.value, lambda v1, v2: (v1 + v2) % NUM_VALUES)


@dataclass
class LMTaskConfig(Config):
    name: str = option(doc="task name (unique within the run)")
    frequency: float = option(doc="injection rate, in `unit`")
    kind: str = option(TaskKind.COMPARISON.value, "comparison | modular_addition | a kind added by register_task")
    unit: Unit = option(Unit.PER_TOKEN, "per_token: instances per training token; per_batch: per global batch")
    schedule: ScheduleKind = option(ScheduleKind.IID, "iid (Poisson per step) | interval (evenly spread) | burst")
    every: int = option(0, "burst period G in batches: the G batches' share goes into one batch (burst only)")
    seed: int = option(0, "draws the value/label tokens, val and the train/test split")
    dedicated_tokens: bool = option(False, "use fresh token ids above the tokenizer's vocabulary")
    value_tokens: list[int] | None = option(None, "explicit 100 value tokens, value v = position v (optional)")
    label_tokens: list[int] | None = option(None, "explicit label tokens for a kind with its own labels (optional)")
    value_band: list[float] | None = option(None, "[lo, hi]: draw value/label tokens from these quantiles of corpus "
                                                   "frequency (0 = rarest, 1 = most frequent); None = any token")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.kind, str) and self.kind.lower() in {k.value for k in TaskKind}:
            self.kind = self.kind.lower()  # built-in kinds read case-insensitively, like every string choice

    def validate(self, path: str = "") -> None:
        super().validate(path)
        p = f"{path}." if path else ""
        if not self.name:
            raise ConfigError(f"{p}name: must be a non-empty string")
        if self.kind not in _REGISTRY:
            raise ConfigError(f"{p}kind: unknown task kind {self.kind!r} (known: {', '.join(registered_kinds())})")
        if not (np.isfinite(self.frequency) and self.frequency > 0):
            raise ConfigError(f"{p}frequency: must be > 0, got {self.frequency}")
        if self.unit is Unit.PER_TOKEN and self.frequency > 0.25:
            raise ConfigError(f"{p}frequency: {self.frequency} per token is above 1/4 (an instance takes 4 tokens)")
        if self.schedule is ScheduleKind.BURST and self.every < 1:
            raise ConfigError(f"{p}every: schedule = burst needs a period >= 1 batch, got {self.every}")
        if self.schedule is not ScheduleKind.BURST and self.every != 0:
            raise ConfigError(f"{p}every: only used with schedule = burst (got schedule = {self.schedule})")
        if self.dedicated_tokens and (self.value_tokens is not None or self.label_tokens is not None):
            raise ConfigError(f"{p}dedicated_tokens: cannot be combined with explicit value_tokens/label_tokens")
        if self.value_band is not None:
            b = self.value_band
            if len(b) != 2 or not all(isinstance(x, (int, float)) and np.isfinite(x) for x in b) \
                    or not 0 <= b[0] < b[1] <= 1:
                raise ConfigError(f"{p}value_band: expected [lo, hi] quantiles with 0 <= lo < hi <= 1, got {b}")
            if self.dedicated_tokens or self.value_tokens is not None:
                raise ConfigError(f"{p}value_band: cannot be combined with dedicated_tokens or explicit value_tokens")
        spec = _REGISTRY[self.kind]
        if self.value_tokens is not None and len(self.value_tokens) != NUM_VALUES:
            raise ConfigError(f"{p}value_tokens: expected {NUM_VALUES} tokens, got {len(self.value_tokens)}")
        if self.label_tokens is not None:
            if spec.num_labels is None:
                raise ConfigError(f"{p}label_tokens: kind {self.kind!r} labels with its value tokens; leave it out")
            if len(self.label_tokens) != spec.num_labels:
                raise ConfigError(f"{p}label_tokens: kind {self.kind!r} needs {spec.num_labels} label tokens, "
                                  f"got {len(self.label_tokens)}")

    def rate_per_batch(self, tokens_per_batch: int) -> float:
        """Expected instances per global batch (`tokens_per_batch` = global batch sequences x sequence length)."""
        return self.frequency * tokens_per_batch if self.unit is Unit.PER_TOKEN else self.frequency


@dataclass
class Task:
    """A built task. Instance i has values (i // 100, i % 100)."""

    name: str
    kind: str
    value_tokens: np.ndarray  # (100,) value_tokens[v] = the token of S with val = v
    label_tokens: np.ndarray  # (L,) label index -> token (for kinds labelled by S: equal to value_tokens)
    labels: np.ndarray        # (10000,) label index of each instance
    train_ids: np.ndarray     # (5000,) sorted instance indices
    test_ids: np.ndarray      # (5000,) sorted instance indices
    vocab_size: int           # the tokenizer vocabulary the tokens were drawn from (dedicated ids start here)
    dedicated: bool

    @functools.cached_property
    def values(self) -> np.ndarray:
        """(10000, 2) int64: [val(TOK1), val(TOK2)] of each instance."""
        i = np.arange(NUM_INSTANCES, dtype=np.int64)
        return np.stack([i // NUM_VALUES, i % NUM_VALUES], axis=1)

    @functools.cached_property
    def instances(self) -> np.ndarray:
        """(10000, 3) int64: [TOK1, TOK2, LABEL] of each instance."""
        v = self.values
        return np.stack([self.value_tokens[v[:, 0]], self.value_tokens[v[:, 1]], self.label_tokens[self.labels]],
                        axis=1)

    @property
    def tokens(self) -> np.ndarray:
        """Every token the task uses (value and label tokens), sorted."""
        return np.union1d(self.value_tokens, self.label_tokens)

    def label_of(self, instance: int | np.ndarray) -> int | np.ndarray:
        """The LABEL token of instance index(es)."""
        out = self.label_tokens[self.labels[instance]]
        return int(out) if np.ndim(out) == 0 else out

    def value_of(self, token: int | np.ndarray) -> int | np.ndarray:
        """val(token) for tokens of S (ValueError for any other token)."""
        token = np.asarray(token)
        order = np.argsort(self.value_tokens)
        pos = np.searchsorted(self.value_tokens[order], token).clip(0, NUM_VALUES - 1)
        if np.any(self.value_tokens[order][pos] != token):
            raise ValueError(f"{self.name}: token(s) not in the task's value set")
        out = order[pos]
        return int(out) if out.ndim == 0 else out

    def instance_of(self, tok1: int | np.ndarray, tok2: int | np.ndarray) -> int | np.ndarray:
        """Instance index of (TOK1, TOK2)."""
        return self.value_of(tok1) * NUM_VALUES + self.value_of(tok2)

    def is_train(self, instance: int | np.ndarray) -> np.ndarray:
        return np.isin(instance, self.train_ids)


def build_task(cfg: LMTaskConfig, vocab_size: int, special_ids: Iterable[int], taken: set[int] | None = None,
               *, path: str = "task", counts: np.ndarray | None = None) -> Task:
    """Draw the task's tokens, val and split from `cfg.seed`; `taken` (tokens of earlier tasks) is avoided and
    updated. `counts` (per-token corpus counts, `token_counts`) is needed by `value_band`. Raises ConfigError
    naming `path.<field>` when the vocabulary cannot supply the tokens."""
    cfg.validate(path)
    taken = set() if taken is None else taken
    special = frozenset(int(t) for t in special_ids)
    if cfg.value_band is not None:
        if counts is None:
            raise ConfigError(f"{path}.value_band: needs the corpus token counts (none were given to build the task)")
        allowed = band_tokens(counts, vocab_size, special, cfg.value_band)
    else:
        allowed = None
    spec = _REGISTRY[cfg.kind]
    n_labels = spec.num_labels or 0
    rng = np.random.default_rng([cfg.seed, 0x7A5C])

    if cfg.dedicated_tokens:
        # Fresh ids right above the vocabulary and above every dedicated id handed out so far.
        start = max([vocab_size, *(t + 1 for t in taken if t >= vocab_size)])
        fresh = np.arange(start, start + NUM_VALUES + n_labels, dtype=np.int64)
        value_tokens = rng.permutation(fresh[:NUM_VALUES])  # val is a random bijection onto the fresh ids
        label_tokens = rng.permutation(fresh[NUM_VALUES:])
    else:
        value_tokens = _given_or_drawn(cfg.value_tokens, NUM_VALUES, vocab_size, special, taken, rng,
                                       f"{path}.value_tokens", f"{path}.kind", allowed)
        label_tokens = _given_or_drawn(cfg.label_tokens, n_labels, vocab_size, special,
                                       taken | set(value_tokens.tolist()), rng, f"{path}.label_tokens",
                                       f"{path}.kind", allowed)
    if spec.num_labels is None:
        label_tokens = value_tokens
    taken.update(value_tokens.tolist(), label_tokens.tolist())

    i = np.arange(NUM_INSTANCES, dtype=np.int64)
    labels = np.asarray(spec.rule(i // NUM_VALUES, i % NUM_VALUES))
    n_label_set = len(label_tokens)
    if labels.shape != (NUM_INSTANCES,) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= n_label_set:
        raise ValueError(f"task kind {cfg.kind!r}: its rule must return ({NUM_INSTANCES},) integers in "
                         f"0..{n_label_set - 1}, got {labels.dtype} {labels.shape}")

    split = np.random.default_rng([cfg.seed, 0x5B17]).permutation(NUM_INSTANCES)
    return Task(name=cfg.name, kind=cfg.kind, value_tokens=value_tokens, label_tokens=label_tokens,
                labels=labels.astype(np.int64), train_ids=np.sort(split[:NUM_INSTANCES // 2]),
                test_ids=np.sort(split[NUM_INSTANCES // 2:]), vocab_size=vocab_size, dedicated=cfg.dedicated_tokens)


def build_tasks(cfgs: list[LMTaskConfig], vocab_size: int, special_ids: Iterable[int], *,
                path: str = "tasks", counts: np.ndarray | None = None) -> list[Task]:
    """Build every task with tokens distinct across tasks (ConfigError names `path[i].<field>`)."""
    names = [c.name for c in cfgs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{path}[{i}].name: task name {name!r} is used twice")
    taken: set[int] = set()
    return [build_task(c, vocab_size, special_ids, taken, path=f"{path}[{i}]", counts=counts)
            for i, c in enumerate(cfgs)]


def token_counts(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int64: how often each id occurs in `tokens` (ids >= vocab_size are ignored)."""
    c = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)
    return c[:vocab_size].astype(np.int64)


def band_tokens(counts: np.ndarray, vocab_size: int, special_ids: Iterable[int], band: list[float]) -> np.ndarray:
    """The non-special ids of 0..vocab_size-1 whose corpus-frequency rank (rarest first, ties by id) lies in the
    quantiles [lo, hi) of those ids (hi = 1 includes the most frequent), sorted."""
    special = np.fromiter((int(t) for t in special_ids), dtype=np.int64)
    ids = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), special)
    c = np.asarray(counts, dtype=np.int64)[ids] if len(counts) >= vocab_size else \
        np.pad(np.asarray(counts, dtype=np.int64), (0, vocab_size - len(counts)))[ids]
    ranked = ids[np.lexsort((ids, c))]
    n = len(ranked)
    lo, hi = int(np.floor(band[0] * n)), int(np.ceil(band[1] * n)) if band[1] < 1 else n
    return np.sort(ranked[lo:hi])


def natural_occurrences(task: Task, tokens: np.ndarray) -> dict[str, int]:
    """How often the task's TOK1 TOK2 LABEL triples already occur in `tokens` (a corpus split): `train` / `test`
    (occurrences of train / test instances), `pairs` (any TOK1 TOK2 bigram of two value tokens, whatever follows)
    and `value_tokens` / `label_tokens` (occurrences of any value / label token)."""
    a = np.asarray(tokens, dtype=np.int64)
    out = {"train": 0, "test": 0, "pairs": 0, "value_tokens": 0, "label_tokens": 0}
    if len(a) == 0:
        return out
    top = int(max(a.max(), task.tokens.max())) + 1
    val = np.full(top, -1, dtype=np.int64)
    val[task.value_tokens] = np.arange(NUM_VALUES)
    is_label = np.zeros(top, dtype=bool)
    is_label[task.label_tokens] = True
    v = val[a]
    out["value_tokens"] = int((v >= 0).sum())
    out["label_tokens"] = int(is_label[a].sum())
    if len(a) < 3:
        return out
    pos = np.flatnonzero((v[:-2] >= 0) & (v[1:-1] >= 0))
    out["pairs"] = int(np.count_nonzero((v[:-1] >= 0) & (v[1:] >= 0)))
    inst = v[pos] * NUM_VALUES + v[pos + 1]
    hit = inst[task.label_tokens[task.labels[inst]] == a[pos + 2]]
    train = np.isin(hit, task.train_ids)
    out["train"], out["test"] = int(train.sum()), int((~train).sum())
    return out


def extra_tokens_needed(tasks: list[Task]) -> int:
    """How many embedding rows beyond the tokenizer's vocabulary the tasks' dedicated tokens need."""
    return max([0, *(int(t.tokens.max()) + 1 - t.vocab_size for t in tasks if t.dedicated)])


def _given_or_drawn(given: list[int] | None, count: int, vocab_size: int, special: frozenset[int],
                    taken: set[int], rng: np.random.Generator, given_path: str, kind_path: str,
                    allowed: np.ndarray | None = None) -> np.ndarray:
    """Explicit tokens checked against the vocabulary, the special ids and other tasks; or `count` drawn ones
    (from `allowed` only, when given: a frequency band)."""
    if given is not None:
        tokens = np.asarray(given, dtype=np.int64)
        for t in tokens.tolist():
            if not 0 <= t < vocab_size:
                raise ConfigError(f"{given_path}: token {t} is outside the vocabulary 0..{vocab_size - 1}")
            if t in special:
                raise ConfigError(f"{given_path}: token {t} is a special token of the tokenizer (e.g. EOS/PAD)")
            if t in taken:
                raise ConfigError(f"{given_path}: token {t} is already used (by this or another task)")
        if len(np.unique(tokens)) != len(tokens):
            raise ConfigError(f"{given_path}: tokens must be distinct")
        return tokens
    pool = np.setdiff1d(np.arange(vocab_size, dtype=np.int64) if allowed is None else allowed,
                        np.fromiter(special | taken, dtype=np.int64, count=len(special | taken)))
    if allowed is not None and len(pool) < count:
        band_path = kind_path.rsplit(".", 1)[0] + ".value_band"
        raise ConfigError(f"{band_path}: the band holds {len(allowed)} tokens, {len(pool)} of them free; {count} "
                          f"more are needed (widen the band)")
    if len(pool) < count:
        raise ConfigError(f"{kind_path}: the vocabulary ({vocab_size} ids, {len(special)} special, {len(taken)} used "
                          f"by tasks) cannot supply {count} more tokens; use dedicated_tokens = true")
    return rng.choice(pool, size=count, replace=False)
