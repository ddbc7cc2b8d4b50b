"""The model ladder: Table 1 counts exact on OLMo-core's built model, the 0724 architecture, mitchell init, memory."""

import math

import pytest
import torch

from raretask.config import ConfigError
from raretask.lm import models
from raretask.lm.models import PRESETS, Arch, LMModelConfig, check_fits, count_params, list_models, memory_estimate

TABLE_1 = {"4M": 6_963_200, "20M": 28_753_920, "300M": 371_458_048, "1B": 1_279_787_008, "4B": 4_707_057_664}
V = 50304


@pytest.mark.parametrize("name", list(TABLE_1))
def test_paper_ladder_counts_are_table_1_exactly(name):
    n = count_params(LMModelConfig(preset=name, arch=Arch.OLMO_0724), V)
    s = PRESETS[name]
    assert n.params == TABLE_1[name]
    assert n.params == 2 * V * s.d_model + s.n_layers * 16 * s.d_model ** 2  # no norm weights, no biases, untied
    assert n.non_embedding_params == s.n_layers * 16 * s.d_model ** 2
    assert s.mlp_hidden == 8 * s.d_model


def test_cpu_ladder_spans_10k_to_2m_non_embedding_params():
    cpu = [name for name in PRESETS if name.startswith("cpu-")]
    assert len(cpu) == 5
    for arch in Arch:
        counts = [count_params(LMModelConfig(preset=name, arch=arch), PRESETS[name].vocab_size).non_embedding_params
                  for name in cpu]
        assert 8_000 <= counts[0] <= 11_000 and 1_700_000 <= counts[-1] <= 2_300_000, counts
        assert all(b > 3 * a for a, b in zip(counts, counts[1:])), counts  # each rung ~4x the previous


def test_olmo_0724_is_the_paper_architecture():
    model = LMModelConfig(preset="cpu-30k").build(512)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if "norm" in n or n.endswith("bias")]  # non-parametric norms, no biases
    assert model.embeddings.weight.data_ptr() != model.lm_head.w_out.weight.data_ptr()  # untied
    assert isinstance(model, models.MitchellTransformer)
    block = model.blocks["0"]
    assert block.attention.clip_qkv == 8.0
    assert block.attention.rope.theta == 10_000
    assert type(block.attention_norm).__name__ == "LayerNorm" and block.attention_norm.weight is None
    assert model.lm_head.norm is not None and model.lm_head.norm.weight is None  # final LN before the head
    assert block.feed_forward.w1.out_features == PRESETS["cpu-30k"].mlp_hidden // 2  # one SwiGLU branch


def test_olmo2_has_rms_norm_weights_and_qk_norm():
    model = LMModelConfig(preset="cpu-30k", arch="olmo2").build(512)
    block = model.blocks["0"]
    assert type(block.attention_norm).__name__ == "RMSNorm" and block.attention_norm.weight is not None
    assert block.attention.q_norm is not None and block.attention.k_norm is not None
    assert block.attention.clip_qkv is None


def test_mitchell_init_has_olmos_standard_deviations():
    d, h = 256, 4 * 256
    model = LMModelConfig(preset="cpu-30k", d_model=d, n_layers=2, n_heads=4).build(1024)
    trunc = 0.98658  # std of a normal truncated at +-3 std, in units of its std
    expected = {"embeddings.weight": d ** -0.5, "lm_head.w_out.weight": d ** -0.5}
    for layer in (0, 1):
        for w in ("attention.w_q", "attention.w_k", "attention.w_v", "feed_forward.w1", "feed_forward.w3"):
            expected[f"blocks.{layer}.{w}.weight"] = d ** -0.5
        expected[f"blocks.{layer}.attention.w_out.weight"] = (2 * d * (layer + 1)) ** -0.5
        expected[f"blocks.{layer}.feed_forward.w2.weight"] = (2 * h * (layer + 1)) ** -0.5
    params = dict(model.named_parameters())
    assert set(expected) == set(params)
    for name, std in expected.items():
        w = params[name].detach()
        assert abs(w.std().item() / (trunc * std) - 1) < 0.03, name
        assert w.abs().max().item() <= 3 * std * (1 + 1e-6), name


def test_init_is_seeded_and_survives_the_train_modules_reinit():
    a = LMModelConfig(preset="cpu-30k", init_seed=3).build(512)
    b = LMModelConfig(preset="cpu-30k", init_seed=3).build(512)
    c = LMModelConfig(preset="cpu-30k", init_seed=4).build(512)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    before = [p.detach().clone() for p in a.parameters()]
    a.init_weights(device=torch.device("cpu"))  # what OLMo-core's train module calls
    assert all(torch.equal(x, p) for x, p in zip(before, a.parameters()))


def test_forward_gives_finite_logits_over_the_padded_vocabulary():
    model = LMModelConfig(preset="cpu-150k").build(640)
    ids = torch.randint(0, 600, (2, 32), generator=torch.Generator().manual_seed(0))
    logits = model(ids)
    assert logits.shape == (2, 32, 640) and torch.isfinite(logits).all()


def test_overrides_and_vocab_resolution():
    cfg = LMModelConfig(preset="cpu-150k", d_model=64, vocab_size=1024)
    assert cfg.shape().mlp_hidden == 8 * 64 and cfg.shape().n_layers == PRESETS["cpu-150k"].n_layers
    assert cfg.transformer_config(512).vocab_size == 1024
    assert LMModelConfig(preset="cpu-150k").transformer_config(512).vocab_size == 512
    with pytest.raises(ConfigError, match="model.vocab_size: 256 is smaller"):
        LMModelConfig(preset="cpu-150k", vocab_size=256).transformer_config(512)


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "7B"}, "model.preset: unknown preset '7B' (known: 4M, 20M, 300M, 1B, 4B, cpu-10k, cpu-30k"),
    ({"preset": "cpu-30k", "n_heads": 5}, "model.n_heads: d_model 24 is not divisible by 5 heads"),
    ({"preset": "cpu-30k", "n_heads": 8}, "model.n_heads: head dimension 3 must be even"),
    ({"preset": "cpu-30k", "d_model": -1}, "model.d_model: must be >= 0"),
])
def test_validate_rejects_bad_shapes_in_one_line(kwargs, message):
    with pytest.raises(ConfigError) as e:
        LMModelConfig(**kwargs).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_memory_estimate_is_the_documented_formula():
    cfg, tokens = LMModelConfig(preset="20M"), 8 * 4096
    s = PRESETS["20M"]
    expected = 16 * TABLE_1["20M"] + tokens * 30 * s.n_layers * s.d_model * 4 + tokens * 3 * V * 4 + 512 * 2 ** 20
    assert memory_estimate(cfg, V, tokens) == expected
    half = memory_estimate(cfg, V, tokens, activation_bytes=2)
    assert expected - half == tokens * 30 * s.n_layers * s.d_model * 2


def test_paper_recipes_are_the_largest_power_of_two_that_fits_80_gb():
    for name in ("4M", "20M", "300M", "1B"):
        s, cfg = PRESETS[name], LMModelConfig(preset=name)
        assert memory_estimate(cfg, V, s.micro_batch_size * s.sequence_length) <= 80e9, name
        assert memory_estimate(cfg, V, 2 * s.micro_batch_size * s.sequence_length) > 80e9, name
    four_b = memory_estimate(LMModelConfig(preset="4B"), V, 4096)
    assert 80e9 < four_b < 141e9  # one sequence: an H200, not an H100


def test_check_fits_refuses_in_one_line(monkeypatch):
    cfg = LMModelConfig(preset="cpu-30k")
    assert check_fits(cfg, 4096, 256, "cpu") == memory_estimate(cfg, 4096, 256)  # ~0.5 GB: fits this machine
    monkeypatch.setattr(models, "available_memory", lambda device: 10 ** 9)
    with pytest.raises(ConfigError) as e:
        check_fits(LMModelConfig(preset="1B"), V, 4096, "cpu")
    msg = str(e.value)
    assert msg.startswith("model.preset: 1B (olmo_0724) needs ~") and "1.0 GB free" in msg and "\n" not in msg


def test_available_memory_reads_the_machine():
    free = models.available_memory("cpu")
    assert 0 < free < 2 ** 50
    with pytest.raises(ConfigError, match="device: meta is not cpu or cuda"):
        models.available_memory("meta")


def test_list_models_rows():
    rows = list_models()
    assert [r["name"] for r in rows] == list(PRESETS)
    for r in rows:
        assert {"name", "params", "non_embedding_params", "d_model", "n_layers", "n_heads", "mlp_hidden",
                "vocab_size", "memory_gb"} <= set(r)
        if r["name"] in TABLE_1:
            assert r["params"] == TABLE_1[r["name"]]
        assert math.isclose(r["memory_gb"] * 1e9, memory_estimate(
            LMModelConfig(preset=r["name"]), r["vocab_size"], r["micro_batch_size"] * r["sequence_length"]))
