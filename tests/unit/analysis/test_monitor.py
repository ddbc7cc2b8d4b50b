"""The interference monitor on tiny OLMo-core models: the split gradients against the full batch gradient and a
per-token backward loop, the callback inside a plain OLMo-core Trainer (bit-identical to a run without it), and the
layer ablation finding a planted layer."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raretask.analysis.monitor import (IGNORE, InterferenceMonitor, MonitorConfig, MonitoredTask, TaskSpan,
                                       ablation_effects, batch_labels, instance_starts, mlp_weights,
                                       most_effective_layer, neuron_vector, prompt_loss, split_gradients,
                                       task_gradient, task_mask, top_neurons)
from raretask.config import ConfigError

from .planted import VOCAB, olmo, task

T, B = 12, 4


@pytest.fixture(scope="module")
def setup(one_thread):
    t = task()
    mt = MonitoredTask.from_task(t, seed=0, reference_instances=300, loss_instances=200)
    model = olmo(n_layers=2, d_model=32, seed=1).train()
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, VOCAB, (B, T), generator=g)
    inst = t.instances
    ids[0, 0:3] = torch.as_tensor(inst[17])   # at a sequence start
    ids[2, 5:8] = torch.as_tensor(inst[4242])  # inside a sequence
    ids[2, 8] = 0                               # its EOS
    return t, mt, model, ids


def test_the_batch_scan_finds_the_planted_instances_and_their_span(setup):
    _, mt, _, ids = setup
    starts = instance_starts(ids, mt)
    assert starts.nonzero().tolist() == [[0, 0], [2, 5]]
    labels = batch_labels(ids)
    inst = task_mask(starts, labels, TaskSpan.INSTANCE)
    assert inst.nonzero().tolist() == [[0, 0], [0, 1], [0, 2], [2, 4], [2, 5], [2, 6], [2, 7]]
    assert task_mask(starts, labels, TaskSpan.LABEL).nonzero().tolist() == [[0, 1], [2, 6]]
    assert labels[2, 6] == ids[2, 7]  # position 6 predicts LABEL


def full_gradient(model, ids):
    """The batch gradient as OLMo-core's train module makes it (its own loss, .backward()), independent of the
    monitor's code."""
    w = mlp_weights(model, 0)
    labels = batch_labels(ids)
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=labels, ignore_index=IGNORE, loss_reduction="sum",
                loss_div_factor=(labels != IGNORE).sum(), return_logits=False)
    out.loss.backward()
    g = tuple(x.grad.detach().clone() for x in w)
    model.zero_grad(set_to_none=True)
    return g


def test_the_task_and_non_task_gradients_add_up_to_the_full_batch_gradient(setup):
    _, mt, model, ids = setup
    w = mlp_weights(model, 0)
    labels = batch_labels(ids)
    mask = task_mask(instance_starts(ids, mt), labels, TaskSpan.INSTANCE)
    n = int((labels != IGNORE).sum())
    g_t, g_nt = split_gradients(model, w, ids, labels, mask, n, micro_batch=3)  # two micro-batches
    full = full_gradient(model, ids)
    for a, b, c in zip(g_t, g_nt, full):
        torch.testing.assert_close(a + b, c, rtol=1e-5, atol=1e-7)
        assert a.abs().sum() > 0 and b.abs().sum() > 0
    # the short-row g_t of split = reuse is the same gradient as the whole-batch one
    for a, b in zip(task_gradient(model, w, ids, labels, mask, n), g_t):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert all(w_.grad is None for w_ in w)  # nothing touched .grad


def test_the_split_equals_a_per_token_backward_loop(setup):
    _, mt, model, ids = setup
    w = mlp_weights(model, 0)
    labels = batch_labels(ids)
    mask = task_mask(instance_starts(ids, mt), labels, TaskSpan.INSTANCE)
    n = int((labels != IGNORE).sum())
    g_t, g_nt = split_gradients(model, w, ids, labels, mask, n)
    loop_t = [torch.zeros_like(x) for x in w]
    loop_nt = [torch.zeros_like(x) for x in w]
    for b in range(B):
        for p in range(T):
            if labels[b, p] == IGNORE:
                continue
            logits = model(ids[b:b + 1])[0, p]
            g = torch.autograd.grad(F.cross_entropy(logits[None], labels[b, p:p + 1]) / n, list(w))
            target = loop_t if mask[b, p] else loop_nt
            for acc, x in zip(target, g):
                acc += x
    for a, b in zip(g_t + g_nt, loop_t + loop_nt):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)


def test_neurons_and_reference_are_the_task_loss_gradient_restricted(setup):
    _, mt, model, _ = setup
    w = mlp_weights(model, 1)
    loss, g = prompt_loss(model, mt, mt.reference_ids, 128, torch.device("cpu"), w)
    neurons = top_neurons(g, 5)
    norms = (g[0].square().sum(1) + g[2].square().sum(1) + g[1].square().sum(0)).sqrt()
    assert set(neurons.tolist()) == set(norms.argsort(descending=True)[:5].tolist())
    v = neuron_vector(g, neurons)
    assert v.shape == (3 * 5 * 32,) and loss > 0
    # the loss is the mean label cross-entropy, computed in one piece
    prompts, y = mt.prompts(mt.reference_ids)
    with torch.no_grad():
        assert loss == pytest.approx(float(F.cross_entropy(model(prompts)[:, -1], y)), rel=1e-5)
    with pytest.raises(ConfigError, match="^layer: the model has MLP layers 0..1, not 2"):
        mlp_weights(model, 2)


def test_layer_ablation_finds_the_planted_layer(one_thread):
    t = task()
    mt = MonitoredTask.from_task(t, loss_instances=200)
    model = olmo(n_layers=3, d_model=32, seed=2).eval()
    with torch.no_grad():
        for k in ("0", "2"):  # only block 1's MLP writes into the residual stream
            model.blocks[k].feed_forward.w2.weight.zero_()
        model.blocks["1"].feed_forward.w2.weight.mul_(20)
    rows = ablation_effects(model, model, mt, mt.eval_ids, 128, torch.device("cpu"))
    assert [r["layer"] for r in rows] == [None, 0, 1, 2]
    assert rows[1]["delta_loss"] == 0 and rows[3]["delta_loss"] == 0 and rows[2]["delta_loss"] != 0
    assert most_effective_layer(rows) == 1


# ----------------------------------------------------------------------------------- inside a plain Trainer

SEQ, BATCH, STEPS = 16, 4, 6


def build_trainer(root: Path, data: Path, callbacks: dict):
    """A tiny OLMo-core Trainer built directly (no raretask training code): FSL dataset over a raw token file."""
    from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDatasetConfig, TokenizerConfig
    from olmo_core.optim import AdamWConfig
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    tok = TokenizerConfig(vocab_size=VOCAB, eos_token_id=0, pad_token_id=1)
    ds = NumpyFSLDatasetConfig(paths=[str(data)], sequence_length=SEQ, tokenizer=tok,
                               work_dir=str(root / "work")).build()
    dl = NumpyDataLoaderConfig(global_batch_size=BATCH * SEQ, seed=0, num_workers=0,
                               work_dir=str(root / "work")).build(ds)
    model = olmo(n_layers=2, d_model=32, seed=3).train()
    tm = TransformerTrainModuleConfig(rank_microbatch_size=2 * SEQ, max_sequence_length=SEQ,
                                      optim=AdamWConfig(lr=1e-2), max_grad_norm=1.0).build(model)
    return TrainerConfig(save_folder=str(root / "ckpt"), save_overwrite=True, metrics_collect_interval=1,
                         max_duration=Duration.steps(STEPS),
                         callbacks={"checkpointer": CheckpointerCallback(save_interval=1000, pre_train_checkpoint=False),
                                    **callbacks},
                         ).build(tm, dl)


def train_losses(root: Path, data: Path, callbacks: dict):
    from olmo_core.train import prepare_training_environment
    from olmo_core.train.callbacks import Callback

    from raretask.lm.environment import process_state

    losses = []

    class Record(Callback):
        def post_train_batch(self):
            losses.append(float(self.trainer.get_metric("train/CE loss")))

    with process_state():
        prepare_training_environment(seed=0, backend=None)
        trainer = build_trainer(root, data, {"record": Record(), **callbacks})
        trainer.fit()
    return losses, {k: v.detach().clone() for k, v in trainer.train_module.model.state_dict().items()}


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, one_thread):
    """The token file (an instance at the start of every third sequence) and the run without a monitor."""
    root = tmp_path_factory.mktemp("plain")
    t = task()
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, VOCAB, 60 * SEQ).astype(np.uint8)
    for s in range(0, 60, 3):
        tokens[s * SEQ:s * SEQ + 4] = [*t.instances[int(rng.integers(10000))], 0]
    data = root / "tokens.npy"
    tokens.tofile(data)
    return data, *train_losses(root / "plain", data, {})


@pytest.mark.parametrize("split", ["reuse", "separate"])
def test_the_monitor_runs_in_a_plain_trainer_without_changing_training(tmp_path, plain_run, split):
    t = task()
    data, plain, w_plain = plain_run
    mt = MonitoredTask.from_task(t, reference_instances=500, loss_instances=100)
    monitor = InterferenceMonitor(config=MonitorConfig(neurons=4, split=split, loss_every=2, layer=-1), task=mt,
                                  path=tmp_path / "interference.parquet")
    watched, w_watched = train_losses(tmp_path / "watched", data, {"interference": monitor})
    assert watched == plain and len(plain) == STEPS  # the same losses, bit for bit
    assert all(torch.equal(w_plain[k], w_watched[k]) for k in w_plain)
    import pandas as pd

    table = pd.read_parquet(tmp_path / "interference.parquet")
    assert list(table["step"]) == list(range(STEPS))
    assert table["cos_g"].between(-1, 1).all() and table["norm_r"].gt(0).all()
    assert table["task_loss"].notna().tolist() == [s % 2 == 0 for s in range(STEPS)]
    has = table["instances"] > 0
    assert has.any() and table.loc[has, "cos_t"].notna().all() and table.loc[~has, "cos_t"].isna().all()
    assert (table.loc[has, "steps_since_injection"] == 0).all()
    # g = g_t + g_nt: the norms obey the triangle inequality, and cos_g is the norm-weighted mix of the parts
    mix = (table["norm_t"] * table["cos_t"].fillna(0) + table["norm_nt"] * table["cos_nt"]) / table["norm_g"]
    np.testing.assert_allclose(mix, table["cos_g"], rtol=1e-6, atol=1e-9)
    assert monitor.layer == most_effective_layer(monitor.ablation) and len(monitor.ablation) == 3
