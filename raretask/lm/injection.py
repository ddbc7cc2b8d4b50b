"""Injecting task instances into OLMo-core's packed pretraining stream (paper Sec. 4).

An injection replaces four tokens at a slot (the start of a sequence, or of a document inside one) with TOK1 TOK2
LABEL EOS. The stream is OLMo-core's `NumpyFSLDataset` (the raw token file cut into sequences of T tokens, documents
packed and separated by EOS) in the order of its `NumpyFSLDataLoader`: global batch s holds the B sequences
`global_indices[s*B:(s+1)*B]` of the epoch. Several documents of one sequence can carry an instance, so rates above
one per sequence work (7.8e-3 per token at T = 1024 is 8 per sequence). Sequence starts are filled first, so what
exceeds one per sequence sits after an EOS inside a sequence (7 of those 8): the context the evaluation's `*_ctx`
metrics score (raretask.lm.evaluate).

Three parts: the slots (raretask.lm.slots: which positions can take an instance, cached per corpus file and T), the
plan (raretask.lm.plan: how many instances of each task per step, which slots, which instances; a step at a time),
and here the loader. `InjectingFSLDataLoader` is OLMo-core's `NumpyFSLDataLoader` whose items are addressed by their
position in the epoch's global order rather than by dataset index, so each knows its (step, batch_pos): it patches a
sequence with the plan's injections of that step in its rank's sequences, computed when the step is first fetched
and kept for the few steps in flight, so the same tokens are injected whichever worker or data-parallel rank fetches
the sequence and no worker holds more than those steps. Its `state_dict` resume is OLMo-core's, plus the plan's
fingerprint. `build_data_loader` puts the three together over a raw token file.
"""

from __future__ import annotations

import copy
import math
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from olmo_core.data import DataCollator, NumpyFSLDataLoader, NumpyFSLDatasetConfig, TokenizerConfig
from olmo_core.data.numpy_dataset import NumpyFSLDatasetBase
from olmo_core.data.utils import get_document_lengths
from olmo_core.distributed.utils import barrier, get_fs_local_rank, get_rank, get_world_size
from olmo_core.utils import get_default_device

from raretask.config import ConfigError
from raretask.lm.plan import (  # noqa: F401  (re-exported: the injection API predates the split)
    InjectionPlan, Injections, Rate, plan_injections, reference_injections, write_injection_log)
from raretask.lm.slots import (  # noqa: F401
    INSTANCE_TOKENS, SlotTable, StepSlots, cached_sequence_slots, sequence_slots, stream_slots, user_cache_dir)
from raretask.lm.tasks import LMTaskConfig, Task

STEPS_KEPT = 8  # steps whose injections a loader keeps: the batches its threads and prefetching have in flight


class InjectingFSLDataLoader(NumpyFSLDataLoader):
    """OLMo-core's FSL data loader with the plan's instances written into the sequences it yields."""

    def __init__(self, dataset: NumpyFSLDatasetBase, *, plan: InjectionPlan | None = None, **kwargs: Any):
        super().__init__(dataset, **kwargs)
        self.plan = plan
        self._init_caches()

    def _init_caches(self) -> None:
        self._lock = threading.Lock()  # OLMo-core fetches items from several threads
        self._steps: dict[int, Injections] = {}
        self._order: tuple[int, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:  # workers start without the parent's caches (and lock)
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_steps", "_order")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    @property
    def global_batch_size(self) -> int:
        return self._global_batch_size

    @global_batch_size.setter
    def global_batch_size(self, value: int) -> None:
        # The plan addresses (step, batch_pos): a batch-size schedule would move every injection.
        if value != self._global_batch_size:
            raise RuntimeError("the injection plan fixes the global batch size; it cannot change during training")

    @property
    def instances_per_batch(self) -> int:
        return self.global_batch_size // self.dataset.sequence_length

    # ---------------------------------------------------------------------------------------- the data order

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """(dataset length,) dataset indices of `epoch` (1-based) in the global order: memory-mapped from OLMo-core's
        file in work_dir once its reshuffle has written it, else built in memory (what the file will hold). Leaves
        the loader's state alone, so the threads fetching items may call it: it works on a copy."""
        other = copy.copy(self)
        other._epoch = epoch
        if other._global_indices_file.is_file():
            return np.memmap(other._global_indices_file, mode="r", dtype=np.uint32)
        return other._build_global_indices()

    def stream_order(self, steps: int) -> np.ndarray:
        """(steps * B,) dataset indices of the first `steps` global batches, epoch after epoch (small runs)."""
        epochs = math.ceil(steps / self.total_batches)
        return np.concatenate([self.epoch_indices(e)[: self.total_size] for e in range(1, epochs + 1)]
                              ).astype(np.int64)[: steps * self.instances_per_batch]

    # -------------------------------------------------------------------------------------------- the items

    def _get_local_instance_indices(self, indices: np.ndarray) -> Iterator[int]:
        # OLMo-core's slicing (NumpyFSLDataLoader._get_local_instance_indices: drop the batches already processed,
        # this worker's batches round-robin, this rank's positions rank, rank + W, ...) applied to positions in the
        # epoch's order instead of the dataset indices there, so that each item knows its step and batch position.
        B = self.instances_per_batch
        batches = range(self.batches_processed, self.total_batches)
        if (worker := self.worker_info) is not None:
            batches = batches[worker.id::worker.num_workers]
        return (b * B + p for b in batches for p in range(self.dp_rank, B, self.dp_world_size))

    def __getitem__(self, index: int) -> dict[str, Any]:
        # Batch `index` of the epoch on this rank, by position as above.
        B = self.instances_per_batch
        return self.collator([self._get_dataset_item(index * B + p) for p in range(self.dp_rank, B,
                                                                                     self.dp_world_size)])

    def _get_dataset_item(self, position: int) -> dict[str, Any]:
        order = self._order
        if order is None or order[0] != self.epoch:
            order = self._order = (self.epoch, self.get_global_indices())
        item = super()._get_dataset_item(int(order[1][position]))
        step, batch_pos = divmod(position, self.instances_per_batch)
        step += (self.epoch - 1) * self.total_batches
        if self.plan is None or step >= self.plan.steps:
            return item
        inj = self._step(step)
        rows = np.flatnonzero(inj.batch_pos == batch_pos)
        if not rows.size:
            return item
        ids = item["input_ids"].numpy().copy()  # (T,) int64
        ids[(inj.offset[rows, None] + np.arange(INSTANCE_TOKENS)).ravel()] = np.concatenate(
            [inj.tokens[rows], np.full((len(rows), 1), self.dataset.eos_token_id)], axis=1).ravel()
        item["input_ids"] = torch.from_numpy(ids)
        if "doc_lens" in item:  # the injected EOS starts a new document
            item["doc_lens"] = get_document_lengths(item["input_ids"], self.dataset.eos_token_id,
                                                    bos_token_id=self.dataset.bos_token_id)
        return item

    def _step(self, step: int) -> Injections:
        """This rank's injections of `step`, computed once while the step is in flight."""
        with self._lock:
            inj = self._steps.get(step)
            if inj is None:
                plan = self.plan
                if plan.global_batch_seqs != self.instances_per_batch or plan.seq_len != self.dataset.sequence_length:
                    raise RuntimeError("the injection plan was made for another batch size or sequence length")
                inj = plan.share(step, self.dp_rank, self.dp_world_size)
                if len(self._steps) >= STEPS_KEPT:
                    del self._steps[min(self._steps)]
                self._steps[step] = inj
            return inj

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["injection_plan"] = None if self.plan is None else self.plan.fingerprint
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("injection_plan")
        mine = None if self.plan is None else self.plan.fingerprint
        if saved is not None and saved != mine:
            raise RuntimeError("the checkpoint was written with a different injection plan (tasks, frequencies, "
                               "seed, batch or data changed); resuming would inject different instances")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "injection_plan"})


def build_data_loader(*, token_path: str | Path, dtype: str | np.dtype, eos_id: int, pad_id: int, vocab_size: int,
                      seq_len: int, global_batch_seqs: int, seed: int, work_dir: str | Path, tasks: list[Task],
                      task_cfgs: list[LMTaskConfig], steps: int, num_workers: int = 0,
                      dp_world_size: int | None = None, dp_rank: int | None = None,
                      target_device_type: str | None = None, path: str = "tasks",
                      slot_cache: str | Path | None = None) -> tuple[InjectingFSLDataLoader, InjectionPlan]:
    """OLMo-core data loader over a raw token file with the tasks injected, and its plan.

    `vocab_size` is the model's embedding size (batches are checked against it; dedicated task tokens must fit);
    `seed` orders the data and draws the plan; the data-parallel rank/world size default to torch.distributed's.
    The token file's slots are cached in `slot_cache` (default: DIR/cache beside the file; the user's cache,
    $XDG_CACHE_HOME/raretask/slots, when that cannot be written); nothing is written into `work_dir` (the data order
    is OLMo-core's, whose file its reshuffle writes there). Pass the loader to `TrainerConfig.build(train_module,
    loader)`."""
    token_path = Path(token_path)
    if not token_path.is_file():
        raise ConfigError(f"token_path: no such file: {token_path}")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"dtype: {dtype!r} is not a numpy dtype") from None
    if np_dtype not in (np.uint8, np.uint16, np.uint32, np.uint64):
        raise ConfigError(f"dtype: token files are unsigned integers (uint8/16/32/64), got {np_dtype}")
    for name, value, low in (("seq_len", seq_len, INSTANCE_TOKENS), ("global_batch_seqs", global_batch_seqs, 1),
                             ("steps", steps, 1)):
        if value < low:
            raise ConfigError(f"{name}: must be >= {low}, got {value}")
    world = get_world_size() if dp_world_size is None else dp_world_size
    rank = get_rank() if dp_rank is None else dp_rank
    if global_batch_seqs % world:
        raise ConfigError(f"global_batch_seqs: {global_batch_seqs} is not divisible by the {world} data-parallel ranks")
    for t in tasks:
        if int(t.tokens.max()) >= vocab_size:
            raise ConfigError(f"vocab_size: task {t.name} uses token {int(t.tokens.max())} but the model's vocabulary "
                              f"is {vocab_size}; add extra_tokens_needed(tasks) rows for dedicated tokens")

    dataset = NumpyFSLDatasetConfig(
        paths=[str(token_path)], sequence_length=seq_len, dtype=np_dtype.name, work_dir=str(work_dir),
        tokenizer=TokenizerConfig(vocab_size=vocab_size, eos_token_id=eos_id, pad_token_id=pad_id),
    ).build()
    dataset.prepare()
    loader = InjectingFSLDataLoader(
        dataset, collator=DataCollator(pad_token_id=pad_id, vocab_size=vocab_size),
        global_batch_size=global_batch_seqs * seq_len, work_dir=work_dir, seed=seed, num_workers=num_workers,
        dp_world_size=world, dp_rank=rank, fs_local_rank=get_fs_local_rank(),
        target_device_type=target_device_type or get_default_device().type)
    if loader.total_batches == 0:
        raise ConfigError(f"token_path: {len(dataset)} sequences of {seq_len} tokens are fewer than one global batch "
                          f"of {global_batch_seqs}")

    # One scan of the file per (file, T), by one process per filesystem; the others wait and read the cache.
    cache_dirs = [Path(slot_cache) if slot_cache else token_path.parent / "cache", user_cache_dir() / "slots"]
    if get_fs_local_rank() == 0:
        cached_sequence_slots(token_path, np_dtype, seq_len, eos_id, cache_dirs)
    barrier()
    table = cached_sequence_slots(token_path, np_dtype, seq_len, eos_id, cache_dirs, write=False)
    slots = StepSlots(table, loader.epoch_indices, loader.total_batches, global_batch_seqs,
                      identity=f"{table.path.name}, order seed {seed} of {len(dataset)} sequences")
    loader.plan = plan_injections(tasks, task_cfgs, steps=steps, global_batch_seqs=global_batch_seqs,
                                  seq_len=seq_len, seed=seed, slots=slots, path=path)
    return loader, loader.plan


def iter_steps(loader: InjectingFSLDataLoader, steps: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(step, local batch) for the first `steps` steps from the start of training, driving the loader epoch by
    epoch as OLMo-core's Trainer does (reshuffle, iterate, reset)."""
    step, epoch = 0, 1
    while step < steps:
        loader.reshuffle(epoch=epoch)
        for batch in loader:
            yield step, batch
            step += 1
            if step == steps:
                break
        loader.reset()
        epoch += 1
