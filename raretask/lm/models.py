"""The model ladder of the LM lab (paper Table 1), built with OLMo-core, and what training one costs in memory.

    cfg = LMModelConfig(preset="20M", arch="olmo_0724")
    model = cfg.build(vocab_size=50304)                # an olmo_core.nn.transformer.Transformer, initialised
    count_params(cfg, 50304)                           # ParamCount(params=28753920, non_embedding_params=7077888)
    check_fits(cfg, 50304, micro_batch_tokens=8 * 4096, device="cuda")   # one-line ConfigError if it cannot

Architectures (`Arch`):

- `olmo_0724`: the paper's, OLMo-7B-0724 (`configs/official/OLMo-7B-0724.yaml` of allenai/OLMo): LayerNorm without
  affine weights or bias (eps 1e-5), pre-norm "sequential" blocks x + Attn(LN(x)), h + MLP(LN(h)), SwiGLU, RoPE
  (theta 10^4), no biases, untied input/output embeddings, q, k, v clipped to [-8, 8] (clip_qkv), final LayerNorm
  before the LM head, and OLMo's "mitchell" init (below). OLMo-core has no mitchell init, so the 0724 models are a
  `MitchellTransformer`: OLMo-core's Transformer whose `init_weights` (called by OLMo-core's train module too)
  re-draws every matrix with OLMo's std. Parameters: 2 V d (embeddings, LM head) + L (4 d^2 + 3 d 4d)
  = 2 V d + 16 L d^2.
- `olmo2`: OLMo-2 style (OLMo-core's `olmo2_*` factories): RMSNorm with weights (eps 1e-6), QK-norm, norm after
  each sub-layer ("reordered_norm": x + LN(Attn(x))), RoPE theta 5 10^5, no biases, untied, normal(0.02) init.

Mitchell init (OLMo `InitFnType.mitchell`), every draw a normal truncated at 3 std: embeddings, q/k/v, the MLP input
projections w1, w3 and the LM head std 1/sqrt(d); the attention output of block l (0-based) 1/sqrt(2 d (l+1)); the
MLP output w2 1/sqrt(2 h (l+1)) with h = mlp_hidden / 2 its input width.

`mlp_hidden` is the paper's "MLP dim" (OLMo's `mlp_hidden_size`, the width of the fused SwiGLU input projection,
8 d in Table 1); each SwiGLU branch, OLMo-core's `FeedForwardConfig.hidden_size`, is half of it.

Non-embedding parameters here exclude both vocabulary matrices (the input embedding and the untied LM head), i.e.
they are the transformer blocks and norms; OLMo-core's `num_non_embedding_params` keeps the LM head.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from raretask.config import Config, ConfigError, StrEnum, option

if TYPE_CHECKING:
    import torch
    from olmo_core.nn.transformer import Transformer, TransformerConfig


class Arch(StrEnum):
    OLMO_0724 = "olmo_0724"
    OLMO2 = "olmo2"


@dataclass
class ModelShape:
    """One rung of the ladder. The last three fields are the preset's recipe, used for its listed memory."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int  # the paper's MLP dim: both SwiGLU branches together (8 d)
    vocab_size: int = 50304  # padded vocabulary the preset is listed with
    sequence_length: int = 4096  # context window of the recipe
    micro_batch_size: int = 1  # sequences per micro-batch of the recipe

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def _paper(name: str, d: int, layers: int, heads: int, micro_batch: int) -> ModelShape:
    return ModelShape(name, d, layers, heads, 8 * d, vocab_size=50304, sequence_length=4096,
                      micro_batch_size=micro_batch)


def _cpu(name: str, d: int, heads: int) -> ModelShape:
    return ModelShape(name, d, 4, heads, 8 * d, vocab_size=4096, sequence_length=256, micro_batch_size=32)


# Paper ladder (Table 1, DataDecide naming) at context 4096. The recipe micro-batch is the largest power of two of
# sequences whose fp32 training estimate (`memory_estimate`) fits an 80 GB GPU; the 4B needs ~111 GB even at one
# sequence (an H200, or sharded optimizer states). CPU ladder: the same architecture at fixed depth 4 with widths
# doubling (about 4x the non-embedding parameters per rung; cpu-10k, 9.2K, is the rung below cpu-30k), context 256, a 4096-token BPE vocabulary.
PRESETS: dict[str, ModelShape] = {s.name: s for s in [
    _paper("4M", 64, 8, 8, 16),
    _paper("20M", 192, 16, 8, 16),
    _paper("300M", 1024, 16, 16, 4),
    _paper("1B", 2048, 16, 16, 2),
    _paper("4B", 4096, 16, 32, 1),
    _cpu("cpu-10k", 12, 2),
    _cpu("cpu-30k", 24, 4),
    _cpu("cpu-150k", 48, 4),
    _cpu("cpu-600k", 96, 8),
    _cpu("cpu-2m", 176, 8),
]}


@dataclass
class LMModelConfig(Config):
    preset: str = option("cpu-150k", "ladder rung: 4M, 20M, 300M, 1B, 4B or cpu-10k, cpu-30k, cpu-150k, cpu-600k, cpu-2m")
    arch: Arch = option(Arch.OLMO_0724, "olmo_0724 (the paper's OLMo-7B-0724 architecture) or olmo2")
    vocab_size: int = option(0, "embedding rows; 0 = the tokenizer's padded vocabulary", ge=0)
    d_model: int = option(0, "override the preset's width d (0 = the preset's)", ge=0)
    n_layers: int = option(0, "override the preset's depth (0 = the preset's)", ge=0)
    n_heads: int = option(0, "override the preset's attention heads (0 = the preset's)", ge=0)
    mlp_hidden: int = option(0, "override the MLP dim, both SwiGLU branches (0 = 8 d)", ge=0)
    init_seed: int = option(0, "seed of the weight initialisation", ge=0)

    def validate(self, path: str = "model") -> None:
        super().validate(path)
        if self.preset not in PRESETS:
            raise ConfigError(f"{path}.preset: unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        s = self.shape()
        if s.d_model % s.n_heads:
            raise ConfigError(f"{path}.n_heads: d_model {s.d_model} is not divisible by {s.n_heads} heads")
        if s.head_dim % 2:
            raise ConfigError(f"{path}.n_heads: head dimension {s.head_dim} must be even (RoPE rotates pairs)")
        if s.mlp_hidden % 2:
            raise ConfigError(f"{path}.mlp_hidden: must be even (two SwiGLU branches), got {s.mlp_hidden}")

    def shape(self) -> ModelShape:
        """The preset's shape with this config's overrides applied."""
        base = PRESETS[self.preset]
        d = self.d_model or base.d_model
        mlp = self.mlp_hidden or (base.mlp_hidden if not self.d_model else 8 * d)
        return replace(base, d_model=d, n_layers=self.n_layers or base.n_layers,
                       n_heads=self.n_heads or base.n_heads, mlp_hidden=mlp)

    def resolve_vocab(self, vocab_size: int) -> int:
        """Embedding rows: `vocab_size` (the tokenizer's padded vocabulary) unless this config sets a larger one."""
        if self.vocab_size == 0:
            return vocab_size
        if self.vocab_size < vocab_size:
            raise ConfigError(f"model.vocab_size: {self.vocab_size} is smaller than the tokenizer's padded "
                              f"vocabulary {vocab_size}")
        return self.vocab_size

    def transformer_config(self, vocab_size: int) -> TransformerConfig:
        """OLMo-core's config of this model with `vocab_size` embedding rows (see `resolve_vocab`)."""
        from olmo_core.nn.attention import AttentionConfig
        from olmo_core.nn.feed_forward import FeedForwardConfig
        from olmo_core.nn.layer_norm import LayerNormConfig, LayerNormType
        from olmo_core.nn.lm_head import LMHeadConfig
        from olmo_core.nn.rope import RoPEConfig
        from olmo_core.nn.transformer import TransformerBlockConfig, TransformerBlockType, TransformerConfig

        s, vocab = self.shape(), self.resolve_vocab(vocab_size)
        ff = FeedForwardConfig(hidden_size=s.mlp_hidden // 2, bias=False)
        if self.arch is Arch.OLMO2:
            return TransformerConfig.llama_like(
                d_model=s.d_model, vocab_size=vocab, n_layers=s.n_layers, n_heads=s.n_heads, feed_forward=ff,
                block_name=TransformerBlockType.reordered_norm, qk_norm=True, rope_theta=500_000,
                layer_norm_eps=1e-6, init_seed=self.init_seed)
        norm = LayerNormConfig(name=LayerNormType.default, eps=1e-5, elementwise_affine=False, bias=False)
        block = TransformerBlockConfig(
            name=TransformerBlockType.default,  # pre-norm, OLMo's "sequential" block
            sequence_mixer=AttentionConfig(n_heads=s.n_heads, bias=False, clip_qkv=8.0,
                                           rope=RoPEConfig(theta=10_000)),
            feed_forward=ff, layer_norm=norm)
        return _mitchell_config_class()(d_model=s.d_model, vocab_size=vocab, n_layers=s.n_layers, block=block,
                                        lm_head=LMHeadConfig(layer_norm=norm, bias=False),
                                        init_seed=self.init_seed)

    def build(self, vocab_size: int, init_device: str = "cpu") -> Transformer:
        """The OLMo-core Transformer, initialised (seeded by `init_seed`) unless built on the meta device."""
        import torch

        model = self.transformer_config(vocab_size).build(init_device=init_device)
        if init_device != "meta":
            model.init_weights(device=torch.device(init_device))
        return model


# ------------------------------------------------------------------------------------------------ mitchell init


@lru_cache(maxsize=None)
def _mitchell_config_class() -> type:
    """Defined lazily so importing this module does not import OLMo-core (slow)."""
    from olmo_core.nn.transformer import Transformer, TransformerConfig
    from olmo_core.nn.transformer.init import InitMethod, init_linear

    class MitchellTransformer(Transformer):
        """OLMo-core's Transformer with OLMo's "mitchell" initialisation (see the module docstring)."""

        def init_weights(self, *args: Any, **kwargs: Any) -> torch.Generator:
            import torch

            generator = super().init_weights(*args, **kwargs)  # materialises, resets norms, warms RoPE caches
            assert self.embeddings is not None and self.lm_head is not None
            d = self.d_model
            g = torch.Generator(self.embeddings.weight.device).manual_seed(self.init_seed)
            with torch.no_grad():
                InitMethod.normal.init_embeddings(self.embeddings, d_model=d, std=d ** -0.5, generator=g)
                for block in self.blocks.values():
                    depth = 2 * (block.block_idx + 1)
                    att, ff = block.attention, block.feed_forward
                    for w in (att.w_q, att.w_k, att.w_v, ff.w1, ff.w3):
                        init_linear(w, std=d ** -0.5, generator=g)
                    init_linear(att.w_out, std=(depth * d) ** -0.5, generator=g)
                    init_linear(ff.w2, std=(depth * ff.w2.in_features) ** -0.5, generator=g)
                init_linear(self.lm_head.w_out, std=d ** -0.5, generator=g)
            return generator

    @dataclass
    class MitchellTransformerConfig(TransformerConfig):
        """TransformerConfig whose `build` returns a `MitchellTransformer`."""

        _model_class = MitchellTransformer

        def build(self, *, init_device: str = "cpu") -> Transformer:
            model = super().build(init_device=init_device)
            # Same modules and state, only `init_weights` differs: re-class instead of re-listing the constructor.
            model.__class__ = MitchellTransformer
            return model

    # Importable as raretask.lm.models.<name> (module __getattr__), so pickling and OLMo-core's `_CLASS_` work.
    for cls in (MitchellTransformer, MitchellTransformerConfig):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return MitchellTransformerConfig


def __getattr__(name: str) -> Any:
    if name == "MitchellTransformerConfig":
        return _mitchell_config_class()
    if name == "MitchellTransformer":
        return _mitchell_config_class()._model_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------- counts, memory


@dataclass
class ParamCount:
    params: int
    non_embedding_params: int  # without the input embedding and the (untied) LM-head matrix


def count_params(cfg: LMModelConfig, vocab_size: int) -> ParamCount:
    """Parameters of the OLMo-core model, counted on the meta device (no memory, even for the 4B)."""
    model = cfg.build(vocab_size, init_device="meta")
    total = sum(p.numel() for p in model.parameters())
    vocab_matrices = model.embeddings.weight.numel()
    if not model.tie_word_embeddings:
        vocab_matrices += model.lm_head.w_out.weight.numel()
    return ParamCount(params=total, non_embedding_params=total - vocab_matrices)


# Floats an fp32 training step keeps alive per token and layer for the backward pass: LN input and output (2d),
# q, k, v and their clipped and rotated copies (~8d), the attention output (d), the second LN (2d), and the SwiGLU
# w1, w3, silu and product outputs (4 x 4d = 16d) -- about 30 d. Per token at the head: logits, log-softmax and
# their gradient, 3 V floats in fp32. Attention scores are not stored (SDPA's fused kernels on CPU and CUDA).
ACTIVATION_FLOATS_PER_LAYER = 30
HEAD_FLOATS_PER_VOCAB = 3
OVERHEAD_BYTES = 512 * 2 ** 20  # framework, allocator slack, CUDA context


def memory_estimate(cfg: LMModelConfig, vocab_size: int, micro_batch_tokens: int, *,
                    activation_bytes: int = 4) -> int:
    """Bytes to train `cfg` on one device without sharding or activation checkpointing:

        16 P                                  fp32 parameters, gradients, AdamW m and v (4 bytes each)
      + T (30 L d) activation_bytes           activations kept for backward, T = micro_batch_tokens
      + T (3 V) 4                             logits, log-softmax and their gradient (fp32)
      + 512 MiB                               overhead

    `activation_bytes` = 2 under bf16 autocast. An estimate (about +-20% of a measured peak), meant to refuse what
    cannot fit before a run starts, not to pack a device to the last byte."""
    s, vocab = cfg.shape(), cfg.resolve_vocab(vocab_size)
    params = cfg.transformer_config(vocab_size).num_params
    activations = micro_batch_tokens * ACTIVATION_FLOATS_PER_LAYER * s.n_layers * s.d_model * activation_bytes
    head = micro_batch_tokens * HEAD_FLOATS_PER_VOCAB * vocab * 4
    return 16 * params + activations + head + OVERHEAD_BYTES


def available_memory(device: str | torch.device) -> int:
    """Bytes free to allocate: CUDA's free memory, or MemAvailable of /proc/meminfo on the CPU."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    if dev.type != "cpu":
        raise ConfigError(f"device: {dev} is not cpu or cuda")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(cfg: LMModelConfig, vocab_size: int, micro_batch_tokens: int, device: str | torch.device, *,
               activation_bytes: int = 4) -> int:
    """Raise a one-line ConfigError if training `cfg` needs more memory than `device` has free; else the estimate."""
    need = memory_estimate(cfg, vocab_size, micro_batch_tokens, activation_bytes=activation_bytes)
    have = available_memory(device)
    if need > have:
        raise ConfigError(f"model.preset: {cfg.preset} ({cfg.arch}) needs ~{need / 1e9:.1f} GB to train at "
                          f"{micro_batch_tokens} tokens per micro-batch, but {device} has {have / 1e9:.1f} GB free "
                          f"(use a smaller model or micro-batch)")
    return need


def list_models(arch: Arch | str = Arch.OLMO_0724) -> list[dict[str, Any]]:
    """One row per preset: shape, parameter counts at the preset's vocabulary, and the training-memory estimate
    (GB = 1e9 bytes) of its recipe (micro_batch_size x sequence_length tokens, fp32)."""
    rows = []
    for name, s in PRESETS.items():
        cfg = LMModelConfig(preset=name, arch=arch)
        n = count_params(cfg, s.vocab_size)
        tokens = s.micro_batch_size * s.sequence_length
        rows.append({"name": name, "arch": str(cfg.arch), "params": n.params,
                     "non_embedding_params": n.non_embedding_params, "d_model": s.d_model, "n_layers": s.n_layers,
                     "n_heads": s.n_heads, "head_dim": s.head_dim, "mlp_hidden": s.mlp_hidden,
                     "vocab_size": s.vocab_size, "sequence_length": s.sequence_length,
                     "micro_batch_size": s.micro_batch_size,
                     "memory_gb": memory_estimate(cfg, s.vocab_size, tokens) / 1e9})
    return rows
