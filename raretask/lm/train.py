"""Pretraining with injected tasks (paper Sec. 4), assembled from OLMo-core: its Transformer, TransformerTrainModule
(AdamW, cosine schedule with warm-up, gradient clipping), Trainer, checkpointer and torch.distributed/FSDP.

    cfg = load_config(LMConfig, "configs/lm/cpu.toml")
    result = train(cfg, Path("runs/lm-cpu"))       # resumable; result.summary() is the `--json` object
    torchrun --nproc-per-node 8 -m raretask.lm.train configs/lm/paper_comparison.toml model.preset=1B --out DIR

A run: the corpus of `data.manifest` (`raretask lm prepare`) cut into sequences of T = `data.seq_len` tokens, the
`tasks` injected at their frequencies (raretask.lm.injection; each injection in DIR/injections.parquet), the `model`
(raretask.lm.models) trained from its seeded init, evaluated every `eval.every` steps (raretask.lm.evaluate ->
DIR/metrics.parquet), and with a [monitor] table the gradient interference on a task's neurons
(raretask.analysis.monitor -> DIR/interference.parquet). Presets: configs/lm/paper_*.toml (the paper's recipe: batch
1024 sequences, context 4096 / 1024 / 512, LR 3e-4 cosine with warm-up to 0.1x, the rest OLMo-7B-0724's),
configs/lm/cpu.toml (minutes on a CPU).

Resume: checkpoints go to DIR/checkpoints/step<k> every `train.checkpoint_every` steps and at the end (the last is
the trained model: `load_trained_model`). Re-running the same command into DIR continues from the latest one (model,
optimiser, data-loader position, RNG states and the evaluation's running loss) and reproduces the uninterrupted
run's metrics exactly; a finished run is read back. Re-running is the resume, so there is no --resume flag; a
different config in DIR is refused (--overwrite starts afresh).

Several processes (torchrun, WORLD_SIZE > 1) run the same code data-parallel: each rank reads its shard of every
global batch; the model is sharded with OLMo-core's FSDP (`train.parallel`; or DDP); NCCL (+ gloo for bookkeeping)
on CUDA, gloo on CPU, where FSDP works too (tested against one process). Rank 0 writes the run directory.

Checked before anything is written, each a one-line ConfigError: the manifest exists, the model's vocabulary holds
the tokenizer's ids and the tasks' tokens, the model fits the device's memory (raretask.lm.models.memory_estimate;
FSDP shards the 16 bytes per parameter), the injection plan fits the batches, the batch splits into micro-batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

logging.getLogger("olmo_core.nn.attention.te_attn_api").setLevel(logging.ERROR)  # no transformer_engine: fine
from olmo_core.train.callbacks import Callback  # noqa: E402

from raretask import runs
from raretask.analysis.monitor import MonitorConfig
from raretask.config import Config, ConfigError, StrEnum, load_config, option
from raretask.devices import resolve_device
from raretask.lm.environment import barrier, init_environment, on_rank0, process_state
from raretask.lm.evaluate import COLUMNS, EvalConfig, LMEvalCallback, build_evalset
from raretask.lm.models import LMModelConfig
from raretask.lm.tasks import LMTaskConfig
from raretask.progress import progress_bar

VOCAB_MULTIPLE = 128  # embedding rows are padded to a multiple of this (OLMo's 50280 -> 50304)


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"


class Parallel(StrEnum):
    FSDP = "fsdp"
    DDP = "ddp"


@dataclass
class DataConfig(Config):
    manifest: str = option("", "corpus directory made by `raretask lm prepare`; relative to the config file")
    seq_len: int = option(256, "context window T: tokens per training sequence")
    num_workers: int = option(0, "data-loader worker processes per rank")

    def resolve_paths(self, base: Path) -> None:
        if self.manifest and not Path(self.manifest).is_absolute():
            self.manifest = str((base / self.manifest).resolve())


@dataclass
class TrainConfig(Config):
    steps: int = option(1000, "optimiser steps, one global batch each")
    global_batch_seqs: int = option(32, "sequences per global batch B (the paper: 1024)")
    micro_batch_seqs: int = option(0, "sequences per forward/backward on a rank (0 = the rank's whole batch)")
    lr: float = option(3e-4, "peak learning rate (the paper: 3e-4 for every size)")
    warmup: int = option(100, "linear warm-up steps (OLMo-7B-0724: 10.5B tokens = ~2500 steps of 4M tokens)")
    final_lr_fraction: float = option(0.1, "cosine decays to this fraction of the peak at the last step")
    decay_steps: int = option(0, "cosine period in steps (0 = train.steps; OLMo-7B-0724 decays over 3T tokens)")
    betas: list[float] = option(factory=lambda: [0.9, 0.95], doc="AdamW betas")
    eps: float = option(1e-5, "AdamW epsilon (OLMo's)")
    weight_decay: float = option(0.1, "AdamW weight decay, on every parameter (norms and embeddings too, as OLMo)")
    max_grad_norm: float = option(1.0, "clip the global gradient norm to this (0 = off)")
    checkpoint_every: int = option(500, "steps between checkpoints (the resume points)")
    keep_checkpoints: int = option(2, "checkpoints kept on disk (0 = all)")
    device: Device = option(Device.AUTO, "auto (CUDA when present), cpu or cuda")
    precision: Precision = option(Precision.FP32, "fp32, or bf16 mixed precision (the paper's; FSDP: bf16 params)")
    parallel: Parallel = option(Parallel.FSDP, "data parallelism across torchrun processes: fsdp or ddp")
    compile: bool = option(False, "torch.compile the model (CUDA only)")
    threads: int = option(0, "CPU intra-op threads per process (0 = torch's default)")


@dataclass
class LMConfig(Config):
    data: DataConfig = option(factory=DataConfig, doc="the corpus and how it is cut")
    model: LMModelConfig = option(factory=LMModelConfig, doc="the transformer")
    tasks: list[LMTaskConfig] = option(factory=list, doc="tasks injected into the stream")
    train: TrainConfig = option(factory=TrainConfig, doc="optimisation")
    eval: EvalConfig = option(factory=EvalConfig, doc="in-loop evaluation")
    monitor: MonitorConfig | None = option(None, "gradient interference on a task's neurons (a [monitor] table "
                                                 "turns it on: raretask.analysis.monitor)")
    seed: int = option(0, "data order, injection plan and eval subsets (weights: model.init_seed)")

    def resolve_paths(self, base: Path) -> None:
        self.data.resolve_paths(base)

    def validate(self, path: str = "") -> None:
        super().validate(path)
        d, t = self.data, self.train
        if not d.manifest:
            raise ConfigError("data.manifest: required (a corpus directory made by `raretask lm prepare`)")
        for name, value, low in [("data.seq_len", d.seq_len, 4), ("data.num_workers", d.num_workers, 0),
                                 ("train.steps", t.steps, 1), ("train.global_batch_seqs", t.global_batch_seqs, 1),
                                 ("train.micro_batch_seqs", t.micro_batch_seqs, 0), ("train.warmup", t.warmup, 0),
                                 ("train.decay_steps", t.decay_steps, 0),
                                 ("train.checkpoint_every", t.checkpoint_every, 1),
                                 ("train.keep_checkpoints", t.keep_checkpoints, 0), ("train.threads", t.threads, 0),
                                 ("seed", self.seed, 0)]:
            if value < low:
                raise ConfigError(f"{name}: must be >= {low}, got {value}")
        if self.eval.context:
            self.eval.context_position(d.seq_len)  # the in-context prompt fits the sequences
        if t.micro_batch_seqs and t.global_batch_seqs % t.micro_batch_seqs:
            raise ConfigError(f"train.micro_batch_seqs: {t.micro_batch_seqs} does not divide "
                              f"train.global_batch_seqs = {t.global_batch_seqs}")
        if self.monitor is not None:
            names = [c.name for c in self.tasks]
            if not names or (self.monitor.task and self.monitor.task not in names):
                raise ConfigError(f"monitor.task: {self.monitor.task or 'a task'!r} is not among the injected tasks "
                                  f"({', '.join(names) or 'none'})")
            layers = self.model.shape().n_layers
            if self.monitor.layer >= layers:
                raise ConfigError(f"monitor.layer: the model has MLP layers 0..{layers - 1}, not "
                                  f"{self.monitor.layer}")
        if not (math.isfinite(t.lr) and t.lr > 0):
            raise ConfigError(f"train.lr: must be > 0, got {t.lr}")
        if not 0 <= t.final_lr_fraction <= 1:
            raise ConfigError(f"train.final_lr_fraction: must be in [0, 1], got {t.final_lr_fraction}")
        if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
            raise ConfigError(f"train.betas: expected two numbers in [0, 1), got {t.betas}")
        for name, value in [("train.eps", t.eps), ("train.weight_decay", t.weight_decay),
                            ("train.max_grad_norm", t.max_grad_norm)]:
            if not (math.isfinite(value) and value >= (1e-300 if name == "train.eps" else 0)):
                raise ConfigError(f"{name}: must be {'> 0' if name == 'train.eps' else '>= 0'}, got {value}")


# ------------------------------------------------------------------------------------------------- the result


@dataclass
class LMResult:
    out: Path
    config: LMConfig
    metrics: dict[str, list]  # metrics.parquet's columns
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The `--json` object: final per-task numbers, held-out loss, tokens, wall time, parameters."""
        m = self.metrics
        last = max(m["step"]) if m.get("step") else None
        rows = [i for i, s in enumerate(m.get("step", [])) if s == last]
        tasks = [{"name": m["task"][i], **{k: m[k][i] for k in ("kind", "frequency", "train_seen", "train_loss",
                                                                 "test_loss", "test_acc_labels", "test_acc_vocab",
                                                                 "reference_loss")}}
                 for i in rows if m["task"][i] is not None]
        keys = ("steps", "tokens", "params", "non_embedding_params", "vocab_size", "wall_time_s", "tokens_per_s",
                "world_size", "device")
        return {"out": str(self.out), **{k: self.meta.get(k) for k in keys},
                "heldout_loss": m["heldout_loss"][rows[0]] if rows else None,
                "lm_loss": m["lm_loss"][rows[0]] if rows else None, "tasks": tasks}


# ------------------------------------------------------------------------------------------------ before training


@dataclass
class Prepared:
    """Everything a run needs, built and checked before the run directory is touched."""

    manifest: Any  # raretask.lm.corpus.Manifest
    vocab_size: int
    tasks: list[Any]  # raretask.lm.tasks.Task
    loader: Any  # the injecting OLMo-core data loader
    plan: Any  # raretask.lm.plan.InjectionPlan
    device: Any  # torch.device
    world_size: int
    micro_batch_seqs: int


def model_vocab_size(cfg: LMConfig, manifest: Any, tasks: list[Any]) -> int:
    """Embedding rows: the tokenizer's padded vocabulary, grown (to a multiple of 128) for dedicated task tokens;
    `model.vocab_size` may ask for more, never fewer (ConfigError naming it)."""
    from raretask.lm.tasks import extra_tokens_needed

    needed = manifest.vocab_size + extra_tokens_needed(tasks)
    base = max(manifest.padded_vocab_size, -(-needed // VOCAB_MULTIPLE) * VOCAB_MULTIPLE)
    if cfg.model.vocab_size and cfg.model.vocab_size < needed:
        what = "the tasks' dedicated tokens" if needed > manifest.vocab_size else "the corpus tokenizer"
        raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} rows cannot hold the {needed} ids of {what} "
                          f"({manifest.tokenizer_name}; 0 = choose automatically)")
    return cfg.model.vocab_size or base


def prepare(cfg: LMConfig, out: Path, world_size: int = 1) -> Prepared:
    """Load the corpus, build the tasks and the injecting loader, check vocabulary, memory and batch shapes.
    Writes nothing in `out` (only the corpus's slot cache, beside the corpus: raretask.lm.slots); ConfigError on any
    user mistake."""
    from raretask.lm.corpus import Manifest
    from raretask.lm.injection import build_data_loader
    from raretask.lm.models import available_memory, memory_estimate
    from raretask.lm.tasks import build_tasks

    device = resolve_device(cfg.train.device)
    try:
        manifest = Manifest.load(cfg.data.manifest)
    except ConfigError as e:
        raise ConfigError(f"data.manifest: {e}") from None
    tasks = build_tasks(cfg.tasks, manifest.vocab_size, manifest.special_ids, counts=band_counts(cfg, manifest))
    vocab = model_vocab_size(cfg, manifest, tasks)

    t = cfg.train
    if t.global_batch_seqs % world_size:
        raise ConfigError(f"train.global_batch_seqs: {t.global_batch_seqs} does not split over {world_size} ranks")
    rank_seqs = t.global_batch_seqs // world_size
    micro = t.micro_batch_seqs or rank_seqs
    if rank_seqs % micro:
        raise ConfigError(f"train.micro_batch_seqs: {micro} does not divide the {rank_seqs} sequences per rank")

    # Memory: the unsharded estimate; FSDP keeps 1/world of the 16 bytes per parameter on each rank.
    bf16 = t.precision is Precision.BF16
    need = memory_estimate(cfg.model, vocab, micro * cfg.data.seq_len, activation_bytes=2 if bf16 else 4)
    if world_size > 1 and t.parallel is Parallel.FSDP:
        need -= 16 * cfg.model.transformer_config(vocab).num_params * (world_size - 1) // world_size
    have = available_memory(device)
    if need > have:
        raise ConfigError(f"model.preset: {cfg.model.preset} ({cfg.model.arch}) needs ~{need / 1e9:.1f} GB to train "
                          f"at {micro} x {cfg.data.seq_len} tokens per micro-batch, but {device} has "
                          f"{have / 1e9:.1f} GB free (use a smaller model or train.micro_batch_seqs)")

    try:
        loader, plan = build_data_loader(
            token_path=manifest.train_path, dtype=manifest.dtype, eos_id=manifest.eos_id, pad_id=manifest.pad_id,
            vocab_size=vocab, seq_len=cfg.data.seq_len, global_batch_seqs=t.global_batch_seqs, seed=cfg.seed,
            work_dir=Path(out) / "work", tasks=tasks, task_cfgs=cfg.tasks, steps=t.steps,
            num_workers=cfg.data.num_workers, target_device_type=device.type)
    except ConfigError as e:  # the loader names its own arguments; say which config field they come from
        msg = str(e)
        for arg, key in [("token_path", "data.manifest"), ("seq_len", "data.seq_len"),
                         ("global_batch_seqs", "train.global_batch_seqs"), ("steps", "train.steps"),
                         ("vocab_size", "model.vocab_size")]:
            if msg.startswith(arg + ":"):
                msg = key + msg[len(arg):]
        raise ConfigError(msg) from None
    return Prepared(manifest, vocab, tasks, loader, plan, device, world_size, micro)


# ------------------------------------------------------------------------------------------------------ training


def train(cfg: LMConfig, out: Path, *, progress: bool = True, overwrite: bool = False,
          verbose: bool = False) -> LMResult:
    """Train (or resume, or read back) the run of `cfg` in `out`; see the module docstring."""
    with process_state():
        return _train(cfg, out, progress=progress, overwrite=overwrite, verbose=verbose)


def _train(cfg: LMConfig, out: Path, *, progress: bool, overwrite: bool, verbose: bool) -> LMResult:
    import torch
    from olmo_core.config import DType
    from olmo_core.distributed.parallel import DataParallelType
    from olmo_core.optim import AdamWConfig, CosWithWarmup
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback, ConsoleLoggerCallback
    from olmo_core.train.train_module import TransformerDataParallelConfig, TransformerTrainModuleConfig

    from raretask.lm.plan import write_injection_log
    from raretask.lm.models import count_params

    out = Path(out)
    world, rank = init_environment(cfg.seed, resolve_device(cfg.train.device), cfg.train.threads, verbose)
    if cfg.monitor is not None and world > 1:
        raise ConfigError("monitor: the interference monitor runs in single-process training only")
    p = prepare(cfg, out, world)
    if on_rank0(lambda: _start_run_dir(cfg, out, overwrite), rank):
        return read_result(out)  # finished before: read back, not retrained
    t, T = cfg.train, cfg.data.seq_len
    if rank == 0:
        meta = runs.RunMeta(out, kind="lm.train", seeds=[cfg.seed], device=str(p.device), world_size=world,
                            torch_threads=torch.get_num_threads())
        with runs.atomic_path(out / "injections.parquet") as tmp:
            write_injection_log(p.plan, tmp)  # streamed a row group at a time
    barrier()

    # bf16: FSDP keeps bf16 parameter copies for compute and reduces in fp32 (OLMo's "mixed" FSDP precision);
    # a single process or DDP autocasts instead.
    bf16 = t.precision is Precision.BF16
    fsdp = world > 1 and t.parallel is Parallel.FSDP
    dp_config = None if world == 1 else TransformerDataParallelConfig(
        name=DataParallelType(str(t.parallel)), reduce_dtype=DType.float32,
        param_dtype=DType.bfloat16 if bf16 and fsdp else None)
    # Built on the meta device: the train module materialises it on the device and runs the model's seeded init.
    model = cfg.model.transformer_config(p.vocab_size).build(init_device="meta")
    module = TransformerTrainModuleConfig(
        rank_microbatch_size=p.micro_batch_seqs * T, max_sequence_length=T,
        optim=AdamWConfig(lr=t.lr, betas=(t.betas[0], t.betas[1]), eps=t.eps, weight_decay=t.weight_decay),
        max_grad_norm=t.max_grad_norm or None,
        scheduler=CosWithWarmup(warmup=min(t.warmup, t.steps), alpha_f=t.final_lr_fraction,
                                t_max=t.decay_steps or None),
        compile_model=t.compile, dp_config=dp_config,
        autocast_precision=DType.bfloat16 if bf16 and not fsdp else None,
    ).build(model, device=p.device)

    frequencies = [p.plan.requested[c.name].per_token for c in cfg.tasks]
    evalset = build_evalset(p.tasks, frequencies, cfg.eval, plan=p.plan, heldout=p.manifest.read("heldout"),
                            seq_len=T, eos_id=p.manifest.eos_id, seed=cfg.seed, references=_references(cfg, p))
    bar = progress_bar() if progress and rank == 0 else None
    shown = ProgressCallback(progress=bar) if bar is not None else None
    evaluator = LMEvalCallback(evalset=evalset, every=cfg.eval.every, batch_seqs=cfg.eval.batch_seqs,
                               max_tokens=p.micro_batch_seqs * T, path=out / "metrics.parquet", write=rank == 0,
                               on_eval=shown.show if shown is not None else None)
    callbacks: dict[str, Any] = {
        # Synchronous saves: an async save records its duration from a background thread, so ranks could reach the
        # trainer's last metric reduction with different metrics and wait on each other for ever (seen with DDP).
        "checkpointer": CheckpointerCallback(save_interval=t.checkpoint_every, pre_train_checkpoint=False,
                                             save_async=False, max_checkpoints=t.keep_checkpoints or None),
        "lm_eval": evaluator,
        "console_logger": ConsoleLoggerCallback(log_interval=cfg.eval.every),  # INFO: shown with --verbose
    }
    if shown is not None:
        callbacks["progress"] = shown
    if cfg.monitor is not None:
        callbacks["interference"] = _monitor(cfg, p, out)
    trainer = TrainerConfig(
        save_folder=str(out / "checkpoints"), work_dir=str(out / "work"), save_overwrite=True,
        max_duration=Duration.steps(t.steps), metrics_collect_interval=min(cfg.eval.every, 50),
        device=str(p.device), callbacks=callbacks,
    ).build(module, p.loader)

    clock = time.perf_counter()
    with bar or contextlib.nullcontext():
        trainer.fit()
    seconds = time.perf_counter() - clock
    if trainer.global_step < t.steps:  # SIGINT/SIGTERM: OLMo-core stopped and checkpointed; resumable
        raise KeyboardInterrupt
    if rank == 0:
        _prune_checkpoints(out / "checkpoints", t.keep_checkpoints)
        n = count_params(cfg.model, p.vocab_size)
        tokens_per_step = t.global_batch_seqs * T
        meta.finish(steps=trainer.global_step, tokens=trainer.global_step * tokens_per_step, params=n.params,
                    non_embedding_params=n.non_embedding_params, vocab_size=p.vocab_size,
                    # end to end (evaluations and checkpoints included), this session's steps only
                    tokens_per_s=(t.steps - evaluator.start_step) * tokens_per_step / max(seconds, 1e-9),
                    resumed_from=evaluator.start_step,
                    injections=p.plan.summary(), natural_occurrences=_natural(p))
    barrier()
    return read_result(out)


def read_result(out: Path) -> LMResult:
    """The result of a run directory (finished or not) from its files."""
    out = Path(out)
    cfg = load_config(LMConfig, out / "config.toml")
    metrics = runs.read_table(out / "metrics.parquet") if (out / "metrics.parquet").is_file() \
        else {k: [] for k in COLUMNS}
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    return LMResult(out=out, config=cfg, metrics=metrics, meta=meta)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of the run's complete checkpoints, oldest first."""
    return sorted((int(d.name[4:]), d) for d in (Path(run_dir) / "checkpoints").glob("step*")
                  if d.name[4:].isdigit() and (d / ".metadata.json").is_file())


def load_trained_model(run_dir: Path, step: int | None = None, device: str = "cpu") -> Any:
    """The model of a run directory at checkpoint `step` (default: the latest), as an OLMo-core Transformer."""
    import torch
    from olmo_core.distributed.checkpoint import load_model_and_optim_state

    run_dir = Path(run_dir)
    cfg = load_config(LMConfig, run_dir / "config.toml")
    ckpts = checkpoints(run_dir)
    if not ckpts:
        raise ConfigError(f"{run_dir}: no checkpoints")
    chosen = dict(ckpts).get(step) if step is not None else ckpts[-1][1]
    if chosen is None:
        raise ConfigError(f"--step: no checkpoint at step {step} (have {', '.join(str(s) for s, _ in ckpts)})")
    meta = read_result(run_dir).meta
    vocab = meta.get("vocab_size")
    if vocab is None:
        from raretask.lm.corpus import Manifest
        from raretask.lm.tasks import build_tasks

        m = Manifest.load(cfg.data.manifest)
        vocab = model_vocab_size(cfg, m, build_tasks(cfg.tasks, m.vocab_size, m.special_ids,
                                                      counts=band_counts(cfg, m)))
    model = cfg.model.build(vocab, init_device=device)
    with warnings.catch_warnings():  # "no process group: loading in a single process" is what is meant
        warnings.simplefilter("ignore", UserWarning)
        load_model_and_optim_state(str(chosen / "model_and_optim"), model)
    return model.to(torch.device(device)).eval()


# ------------------------------------------------------------------------------------------------------ helpers


def _start_run_dir(cfg: LMConfig, out: Path, overwrite: bool) -> bool:
    """Create or reopen the run directory; True if it holds a finished run of this config."""
    resuming = runs.prepare_run_dir(out, cfg.to_toml(), overwrite=overwrite)
    if resuming and (out / "meta.json").is_file() and (out / "metrics.parquet").is_file():
        return json.loads((out / "meta.json").read_text()).get("status") == "finished"
    return False


def _prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints (0 = all). OLMo-core drops older ones in the background while training;
    the ones the last save made redundant are removed here."""
    import shutil

    for _, d in (checkpoints(folder.parent)[:-keep] if keep else []):
        shutil.rmtree(d, ignore_errors=True)


def band_counts(cfg: LMConfig, manifest: Any) -> Any:
    """The training split's token counts when a task draws its tokens from a frequency band (else None)."""
    from raretask.lm.tasks import token_counts

    if not any(c.value_band is not None for c in cfg.tasks):
        return None
    return token_counts(manifest.read("train"), manifest.vocab_size)


def _natural(p: Prepared) -> dict[str, Any]:
    """Per task: its TOK1 TOK2 LABEL triples already in the training split (raretask.lm.tasks.natural_occurrences)."""
    from raretask.lm.tasks import natural_occurrences

    tokens = p.manifest.read("train")
    return {t.name: natural_occurrences(t, tokens) for t in p.tasks}


def _monitor(cfg: LMConfig, p: Prepared, out: Path) -> Any:
    """The interference monitor of `cfg.monitor` on its task (default: the first), writing out/interference.parquet;
    its prompts carry the evaluation's prefix (EOS with eval.prompt = "eos")."""
    from raretask.analysis.monitor import InterferenceMonitor, MonitoredTask
    from raretask.lm.evaluate import PromptKind

    m = cfg.monitor
    task = next(t for t in p.tasks if t.name == (m.task or p.tasks[0].name))
    prefix = [p.manifest.eos_id] if cfg.eval.prompt is PromptKind.EOS else []
    return InterferenceMonitor(config=m, task=MonitoredTask.from_task(
        task, prefix, seed=m.seed, reference_instances=m.reference_instances, loss_instances=m.loss_instances),
        path=out / "interference.parquet")


def _references(cfg: LMConfig, p: Prepared) -> list[Any]:
    """Reference-task probes (R_cmp, R_add) for the corpus tokenizer, when enabled."""
    if not cfg.eval.reference:
        return []
    from raretask.lm.evaluate import ReferenceProbe
    from raretask.lm.reference import reference_probes

    return [ReferenceProbe(name, seqs, targets) for name, seqs, targets in
            reference_probes(p.manifest.tokenizer(), count=cfg.eval.reference_examples, seed=cfg.seed)]


@dataclass
class ProgressCallback(Callback):
    """A rich progress bar on stderr: steps, and the latest evaluation in its description."""

    priority: ClassVar[int] = -1
    progress: Any = None  # rich.progress.Progress, entered by the caller
    _task: Any = None

    def pre_train(self) -> None:
        self._task = self.progress.add_task("train", total=self.trainer.max_steps,
                                            completed=self.trainer.global_step)

    def post_step(self) -> None:
        self.progress.update(self._task, completed=self.trainer.global_step)

    def show(self, rows: list[dict[str, Any]]) -> None:
        if self._task is None or not rows:
            return
        r = rows[0]
        parts = [f"held-out {r['heldout_loss']:.3f}"] if r.get("heldout_loss") is not None else []
        parts += [f"{x['task']} {x['train_loss']:.2f}" for x in rows  # no train loss before an injection
                  if x.get("task") is not None and x.get("train_loss") is not None]
        self.progress.update(self._task, description="  ".join(["train", *parts]))


# --------------------------------------------------------------------------------------------------- entry point


def cwd_overrides(overrides: Sequence[str]) -> list[str]:
    """`data.manifest=DIR` typed on the command line is relative to the working directory (a path inside the config
    file stays relative to the file): made absolute here, before the config resolves paths against its folder."""
    out = []
    for item in overrides:
        key, eq, value = item.partition("=")
        value = value.strip().strip("\"'")
        if eq and key.strip() == "data.manifest" and value and not Path(value).expanduser().is_absolute():
            item = f"data.manifest={json.dumps(str(Path(value).expanduser().resolve()))}"
        out.append(item)
    return out


def main(argv: list[str] | None = None) -> None:
    """`[torchrun ...] python -m raretask.lm.train CONFIG [key=value ...] --out DIR`: the same `train` on every rank."""
    ap = argparse.ArgumentParser(prog="python -m raretask.lm.train", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    ap.add_argument("--out", required=True, help="run directory")
    ap.add_argument("--overwrite", action="store_true", help="delete an existing run in --out first")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--verbose", action="store_true", help="OLMo-core's INFO logging")
    ap.add_argument("--json", action="store_true", help="print the JSON summary (rank 0)")
    args = ap.parse_args(argv)
    run_entry_point(lambda: train(load_config(LMConfig, args.config, cwd_overrides(args.overrides)),
                                  Path(args.out), progress=not args.no_progress, overwrite=args.overwrite,
                                  verbose=args.verbose), as_json=args.json)


def run_entry_point(run: Any, as_json: bool) -> None:
    """The tail of every torchrun entry point: `run()` -> a result with .summary(); a user mistake is one line and
    exit 2, Ctrl-C exit 130; rank 0 prints the JSON summary; the process group is torn down."""
    try:
        result = run()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)
    if as_json and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.summary()))
    from olmo_core.train import teardown_training_environment

    teardown_training_environment()


if __name__ == "__main__":
    main()
