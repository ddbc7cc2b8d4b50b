"""LM training config, vocabulary sizing, and the in-loop evaluation's metrics (exact, on a tiny OLMo-core model)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from raretask.config import ConfigError, load_config
from raretask.lm.evaluate import (EvalConfig, EvalSet, LMEvalCallback, PromptKind, ReferenceProbe, _scores,
                                  build_evalset, evaluate, heldout_loss, reference_loss, task_probe)
from raretask.lm.models import LMModelConfig
from raretask.lm.tasks import LMTaskConfig, build_tasks
from raretask.lm.train import LMConfig, model_vocab_size

ROOT = Path(__file__).resolve().parents[3]
V = 320  # vocabulary of the tiny model below


def lm_config(*overrides: str) -> LMConfig:
    return load_config(LMConfig, None, ["data.manifest=/some/corpus", *overrides])


@pytest.mark.parametrize("override, field", [
    ("data.manifest=''", "data.manifest"),
    ("train.steps=0", "train.steps"),
    ("train.micro_batch_seqs=5", "train.micro_batch_seqs"),  # does not divide 32
    ("train.lr=0", "train.lr"),
    ("train.final_lr_fraction=1.5", "train.final_lr_fraction"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.eps=0", "train.eps"),
    ("train.max_grad_norm=-1", "train.max_grad_norm"),
    ("train.device=tpu", "train.device"),
    ("eval.every=0", "eval.every"),
    ("eval.heldout_seq_len=1", "eval.heldout_seq_len"),
    ("eval.context_pos=252", "eval.context_pos"),  # EOS at 252 leaves no room for an instance in 256 tokens
    ("data.seq_len=2", "data.seq_len"),
    ("model.preset=1T", "model.preset"),
])
def test_config_errors_name_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', '[.]')}:"):
        lm_config(override)


def test_presets_follow_the_paper_recipe():
    expected_context = {"paper_comparison": 4096, "paper_modular_addition": 1024, "paper_retention": 512}
    for name, seq_len in expected_context.items():
        cfg = load_config(LMConfig, ROOT / "configs" / "lm" / f"{name}.toml")
        t = cfg.train
        assert cfg.data.seq_len == seq_len and t.global_batch_seqs == 1024, name
        assert (t.lr, t.final_lr_fraction, t.betas, t.weight_decay, t.max_grad_norm) == (3e-4, 0.1, [0.9, 0.95],
                                                                                         0.1, 1.0), name
        assert str(t.precision) == "bf16" and str(cfg.model.arch) == "olmo_0724" and cfg.model.preset in (
            "4M", "20M", "300M", "1B", "4B"), name
        assert len(cfg.tasks) == 1
    assert cfg.tasks[0].schedule.value == "burst" and cfg.tasks[0].every == 100  # retention: 100 every 100 batches
    cpu = load_config(LMConfig, ROOT / "configs" / "lm" / "cpu.toml")
    assert cpu.model.preset.startswith("cpu-") and {t.kind for t in cpu.tasks} == {"comparison", "modular_addition"}
    assert Path(cpu.data.manifest).is_absolute()  # resolved against the config file's folder


def test_model_vocabulary_holds_the_tokenizer_and_dedicated_task_tokens():
    manifest = SimpleNamespace(vocab_size=50280, padded_vocab_size=50304, tokenizer_name="neox")
    plain = build_tasks([LMTaskConfig(name="a", frequency=1e-5)], 50280, {0, 1, 50279})
    assert model_vocab_size(lm_config(), manifest, plain) == 50304
    dedicated = build_tasks([LMTaskConfig(name="a", frequency=1e-5, dedicated_tokens=True)], 50280, {0, 1})
    # 102 fresh ids from 50280 need 50382 rows: the next multiple of 128
    assert model_vocab_size(lm_config(), manifest, dedicated) == 50432
    assert model_vocab_size(lm_config("model.vocab_size=65536"), manifest, plain) == 65536
    with pytest.raises(ConfigError, match=r"^model\.vocab_size: 50300 rows cannot hold the 50382 ids"):
        model_vocab_size(lm_config("model.vocab_size=50300"), manifest, dedicated)


# ------------------------------------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LMModelConfig(preset="cpu-30k").build(V).eval()


def forward_of(model):
    def forward(ids, labels=None, **kw):
        return model(ids, labels=labels, **kw)

    return forward


@pytest.fixture(scope="module")
def tasks():
    cfgs = [LMTaskConfig(name="cmp", frequency=1e-3, kind="comparison", seed=1),
            LMTaskConfig(name="add", frequency=1e-3, kind="modular_addition", seed=2)]
    return build_tasks(cfgs, V, {0, 1})


def test_scores_of_hand_made_logits():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0],    # label 2: best label-set token is 2, vocabulary argmax is 1
                           [0.0, 0.0, 1.0, 3.0]])   # label 3: right under both argmaxes
    labels, label_set = torch.tensor([2, 3]), torch.tensor([2, 3])
    loss, hits_labels, hits_vocab = _scores(logits, labels, label_set).tolist()
    assert (hits_labels, hits_vocab) == (2, 1)
    assert loss == pytest.approx(F.cross_entropy(logits, labels, reduction="sum").item())
    assert _scores(logits, torch.tensor([3, 2]), label_set)[1:].tolist() == [0, 0]


ALL_SEEN = np.zeros(10_000, dtype=np.int64)  # every instance first injected at step 0: all seen from step 1 on


def test_task_probe_scores_fixed_subsets_with_the_chosen_prompt(tasks):
    t = tasks[0]
    cfg = EvalConfig(train_instances=50, test_instances=0)
    a = task_probe(t, "comparison", 1e-3, cfg, eos_id=0, seed=5, first_steps=ALL_SEEN)
    b = task_probe(t, "comparison", 1e-3, cfg, 0, 5, ALL_SEEN)
    assert np.array_equal(a.train_ids(1), b.train_ids(1)) and np.array_equal(a.train_ids(1), a.train_ids(9))
    assert len(a.train_ids(1)) == 50 and len(a.test_ids) == len(t.test_ids) == 5000  # 0 = all
    prompts, labels = a.prompts(a.train_ids(1))
    inst = t.instances
    rows = [int(np.flatnonzero((inst[:, 0] == p[0].item()) & (inst[:, 1] == p[1].item()))[0]) for p in prompts]
    assert rows == a.train_ids(1).tolist() and set(rows) <= set(t.train_ids.tolist())
    assert list(labels) == list(inst[rows, 2])
    eos = task_probe(t, "comparison", 1e-3, EvalConfig(train_instances=50, prompt=PromptKind.EOS), 0, 5, ALL_SEEN)
    eos_prompts, _ = eos.prompts(eos.train_ids(1))
    assert eos_prompts.shape == (50, 3) and (eos_prompts[:, 0] == 0).all()
    assert torch.equal(eos_prompts[:, 1:], prompts)
    assert set(a.label_set.tolist()) == set(t.label_tokens.tolist()) and len(a.label_set) == 2


def test_task_metrics_are_the_label_token_after_the_prompt(model, tasks):
    probe = task_probe(tasks[1], "modular_addition", 1e-3, EvalConfig(train_instances=40, test_instances=30), 0, 0,
                       ALL_SEEN)
    es = EvalSet(probes=[probe], heldout=None)
    per_task, _ = evaluate(model, forward_of(model), es, batch=16, device=torch.device("cpu"), step=1)
    train_prompts, train_labels = probe.prompts(probe.train_ids(1))
    with torch.no_grad():
        logits = model(train_prompts)[:, -1]  # (n, V): the next token after TOK1 TOK2
    assert per_task["add"]["train_loss"] == pytest.approx(F.cross_entropy(logits, train_labels).item(), rel=1e-5)
    test_prompts, test_labels = probe.prompts(probe.test_ids)
    with torch.no_grad():
        test_logits = model(test_prompts)[:, -1]
    best = probe.label_set[test_logits[:, probe.label_set].argmax(-1)]
    assert per_task["add"]["test_acc_labels"] == pytest.approx((best == test_labels).float().mean().item())


def test_heldout_loss_is_the_mean_next_token_loss(model):
    windows = torch.randint(2, V, (5, 12), generator=torch.Generator().manual_seed(0))
    got = heldout_loss(forward_of(model), windows, batch=2, device=torch.device("cpu"))
    with torch.no_grad():
        logits = model(windows)  # (5, 12, V)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, V), windows[:, 1:].reshape(-1)).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_reference_loss_does_not_see_the_padding(model):
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(2, V, (n,), generator=g).tolist() for n in (5, 9, 7)]
    ref = ReferenceProbe("cmp", seqs, [1, 2, 1])
    batched = reference_loss(forward_of(model), ref, batch=3, device=torch.device("cpu"))
    total = 0.0
    with torch.no_grad():
        for s, k in zip(seqs, ref.targets):
            logits = model(torch.tensor([s]))[0]  # (L, V), unpadded
            total += F.cross_entropy(logits[-k - 1:-1], torch.tensor(s[-k:]), reduction="sum").item()
    assert batched == pytest.approx(total / 4, rel=1e-5)


def test_evaluate_restores_the_model_mode(model, tasks):
    es = build_evalset(tasks, [1e-3, 1e-3], EvalConfig(train_instances=8, test_instances=8, heldout_tokens=64),
                       plan=SimpleNamespace(first_steps=lambda name: ALL_SEEN),
                       heldout=np.arange(2, 200, dtype=np.uint16), seq_len=16, eos_id=0, seed=0)
    assert es.heldout.shape == (4, 16)
    model.train()
    _, step = evaluate(model, forward_of(model), es, batch=8, device=torch.device("cpu"), step=1)
    assert model.training and np.isfinite(step["heldout_loss"])
    model.eval()


def test_callback_keeps_only_the_rows_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.parquet"
    pq.write_table(__import__("pyarrow").table({"step": [0, 10, 20, 30], "task": ["a"] * 4,
                                                "train_loss": [4.0, 3.0, 2.0, 1.0]}), path)
    cb = LMEvalCallback(evalset=EvalSet(probes=[], heldout=None), every=10, path=path)
    cb.trainer = SimpleNamespace(global_step=20)  # resumed from the step-20 checkpoint
    cb.pre_train()
    assert cb.start_step == 20
    assert pq.read_table(path).to_pydict() == {"step": [0, 10, 20], "task": ["a"] * 3, "train_loss": [4.0, 3.0, 2.0]}


def test_train_module_initialises_the_meta_model_like_models_build():
    """train() builds on the meta device and lets OLMo-core's train module materialise and initialise it: the weights
    must be the model's own seeded initialisation (here OLMo's mitchell init of the 0724 architecture)."""
    from olmo_core.optim import AdamWConfig
    from olmo_core.train.train_module import TransformerTrainModuleConfig

    cfg = LMModelConfig(preset="cpu-30k", init_seed=7)
    meta = cfg.transformer_config(V).build(init_device="meta")
    module = TransformerTrainModuleConfig(rank_microbatch_size=64, max_sequence_length=16,
                                          optim=AdamWConfig()).build(meta, device=torch.device("cpu"))
    ref = cfg.build(V)
    got = module.model.state_dict()
    for name, w in ref.state_dict().items():
        assert torch.equal(got[name], w), name
