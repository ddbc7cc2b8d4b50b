"""Data-parallel injection: 2 CPU processes (gloo) see the same global stream as 1 process, and the loader
trains and resumes under OLMo-core's Trainer."""

from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from olmo_core.testing import run_distributed_test

from raretask.lm.injection import build_data_loader, iter_steps
from raretask.lm.tasks import build_tasks
from tests.unit.lm.test_injection import B, EOS, PAD, SEQ, STEPS, V, make_corpus, task_cfgs

WORLD = 2


def _build(tmp: Path, work: str, **kw):
    cfgs = task_cfgs()
    tasks = build_tasks(cfgs, V, {EOS, PAD})
    return build_data_loader(token_path=tmp / "tokens.bin", dtype="uint16", eos_id=EOS, pad_id=PAD, vocab_size=V,
                             seq_len=SEQ, global_batch_seqs=B, seed=7, work_dir=tmp / work, tasks=tasks,
                             task_cfgs=cfgs, steps=STEPS, **kw)


def _rank_stream(tmp: Path) -> None:
    loader, plan = _build(tmp, "work-dp")  # rank and world size from the process group
    assert loader.dp_world_size == WORLD and loader.rank_batch_size == B * SEQ // WORLD
    local = np.stack([b["input_ids"].numpy() for _, b in iter_steps(loader, STEPS)])  # (steps, B / 2, SEQ)
    np.save(tmp / f"rank{dist.get_rank()}.npy", local)
    (tmp / f"plan{dist.get_rank()}.txt").write_text(plan.fingerprint)


def test_two_gloo_ranks_see_the_one_process_stream(tmp_path):
    make_corpus(tmp_path / "tokens.bin", build_tasks(task_cfgs(), V, {EOS, PAD}))
    loader, plan = _build(tmp_path, "work-1")
    single = np.stack([b["input_ids"].numpy() for _, b in iter_steps(loader, STEPS)])  # (steps, B, SEQ)

    run_distributed_test(_rank_stream, world_size=WORLD, backend="gloo", func_args=(tmp_path,))
    ranks = [np.load(tmp_path / f"rank{r}.npy") for r in range(WORLD)]
    # OLMo-core gives rank r the global batch positions r, r + W, r + 2W, ...
    merged = np.empty_like(single)
    for r in range(WORLD):
        merged[:, r::WORLD] = ranks[r]
    assert np.array_equal(merged, single)
    assert {(tmp_path / f"plan{r}.txt").read_text() for r in range(WORLD)} == {plan.fingerprint}
    inj = plan.materialise()
    win = merged[inj.step[:, None], inj.batch_pos[:, None], inj.offset[:, None] + np.arange(3)]
    assert np.array_equal(win.reshape(-1, 3), inj.tokens)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # torch's single-process checkpoint note
def test_trainer_trains_and_resumes_on_the_injected_stream(tmp_path):
    from olmo_core.nn.transformer import TransformerConfig
    from olmo_core.optim import AdamWConfig
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import Callback, CheckpointerCallback
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    make_corpus(tmp_path / "tokens.bin", build_tasks(task_cfgs(), V, {EOS, PAD}))
    seen: list[np.ndarray] = []

    class Record(Callback):
        def pre_step(self, batch):
            seen.append(batch["input_ids"].numpy().copy())

    def fit(steps: int) -> None:
        loader, _ = _build(tmp_path, "work-trainer")
        model = TransformerConfig.olmo2_1M(vocab_size=V).build(init_device="cpu")
        module = TransformerTrainModuleConfig(rank_microbatch_size=B * SEQ, max_sequence_length=SEQ,
                                              optim=AdamWConfig(lr=1e-3), compile_model=False).build(model)
        trainer = (TrainerConfig(save_folder=str(tmp_path / "ckpt"), save_overwrite=True,
                                 max_duration=Duration.steps(steps), metrics_collect_interval=1000)
                   .with_callback("checkpointer", CheckpointerCallback(save_interval=3, ephemeral_save_interval=None))
                   .with_callback("record", Record())
                   .build(module, loader))
        trainer.fit()

    fit(3)   # stops after step 3, checkpoint written
    fit(6)   # resumes from it: steps 4..6
    loader, _ = _build(tmp_path, "work-plain")
    expected = np.stack([b["input_ids"].numpy() for _, b in iter_steps(loader, 6)])
    assert np.array_equal(np.stack(seen), expected)
