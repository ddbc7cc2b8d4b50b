"""Activations of the LM lab's OLMo-core models, read with forward hooks (OLMo-core itself is not touched), at any
layer and position of an injected task sequence, from every checkpoint saved along a training run.

    for step, _ in checkpoints(run_dir):                       # (step, directory), oldest first
        model = load_model(run_dir, step)                      # the OLMo-core Transformer, eval mode
        inputs = run_inputs(run_dir)                           # the run's tasks, rebuilt, and its prompt prefix
        ids, pos = inputs.prompts(inputs.tasks[0], np.arange(1000))
        acts = capture(model, ids, ["embeddings", "blocks.0"], position=pos["tok1"])   # {name: (1000, d)}

Residual layers. Layer 0 is the embedding output (the residual stream before the first block), layer l >= 1 the
output of block l - 1 (OLMo-core's `blocks["l-1"]`; a pre-norm block returns the residual stream itself), so a model
of L blocks has layers 0..L; `residual_modules(model)[l]` is the module name of layer l.

A task sequence is what the in-loop evaluation scores (raretask.lm.evaluate): the run's prompt prefix (nothing, or
EOS with `eval.prompt = "eos"`), TOK1, TOK2; `positions` names where TOK1 and TOK2 sit, so the residual stream "at
TOK1" is the stream at that position (causal attention: it has seen the prefix and TOK1 only).

`capture` runs under torch.no_grad in eval mode (the previous mode restored), `batch` sequences per forward, and
returns float32 CPU tensors; it is deterministic (no sampling anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from raretask.config import ConfigError

POSITIONS = ("tok1", "tok2")


# --------------------------------------------------------------------------------------------- run directories


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, checkpoint directory) of every complete checkpoint of an LM run directory, oldest first; one-line
    ConfigError for a folder that is no LM run or holds no checkpoint."""
    from raretask.lm.train import checkpoints as saved

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"{run_dir}: no config.toml (not an LM run directory)")
    found = saved(run_dir)
    if not found:
        raise ConfigError(f"{run_dir}: no checkpoints (train.checkpoint_every saves them; keep_checkpoints = 0 "
                          f"keeps every one along training)")
    return found


def load_model(run_dir: Path, step: int | None = None, device: str | torch.device = "cpu") -> Any:
    """The run's OLMo-core Transformer at checkpoint `step` (default: the last), rebuilt from run_dir/config.toml
    and loaded from the checkpoint, in eval mode on `device`."""
    from raretask.lm.train import load_trained_model

    checkpoints(run_dir)  # the one-line errors above, before OLMo-core is asked
    return load_trained_model(Path(run_dir), step, device=str(device))


@dataclass
class RunInputs:
    """The tasks a run injected (rebuilt from its config and corpus: the same tokens, values and split) and the
    prefix its evaluation puts before TOK1 TOK2."""

    tasks: list[Any]  # raretask.lm.tasks.Task
    prefix: np.ndarray  # (0,) or (1,) = [EOS]

    def task(self, name: str) -> Any:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ConfigError(f"task: {name!r} was not injected in this run (it has: "
                          f"{', '.join(t.name for t in self.tasks) or 'no task'})")

    @property
    def positions(self) -> dict[str, int]:
        """Sequence positions of TOK1 and TOK2."""
        return {"tok1": len(self.prefix), "tok2": len(self.prefix) + 1}

    def prompts(self, task: Any, instances: np.ndarray | Sequence[int]) -> tuple[torch.Tensor, dict[str, int]]:
        """(input ids (n, len(prefix) + 2): prefix TOK1 TOK2 of each instance, positions of TOK1 and TOK2)."""
        return task_prompts(task, instances, self.prefix), self.positions


def task_prompts(task: Any, instances: np.ndarray | Sequence[int], prefix: np.ndarray = np.zeros(0)) -> torch.Tensor:
    """Input ids (n, len(prefix) + 2) of the given instance indices: prefix, TOK1, TOK2."""
    rows = np.asarray(task.instances, dtype=np.int64)[np.asarray(instances, dtype=np.int64)]
    head = np.broadcast_to(np.asarray(prefix, dtype=np.int64), (len(rows), len(prefix)))
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([head, rows[:, :2]], axis=1)))


def run_inputs(run_dir: Path) -> RunInputs:
    """The run's tasks and prompt prefix, from its config.toml and the corpus manifest it names."""
    from raretask.config import load_config
    from raretask.lm.corpus import Manifest
    from raretask.lm.evaluate import PromptKind
    from raretask.lm.tasks import build_tasks
    from raretask.lm.train import LMConfig, band_counts

    cfg = load_config(LMConfig, Path(run_dir) / "config.toml")
    try:
        manifest = Manifest.load(cfg.data.manifest)
    except ConfigError as e:
        raise ConfigError(f"{run_dir}: its corpus is needed to rebuild the tasks: {e}") from None
    tasks = build_tasks(cfg.tasks, manifest.vocab_size, manifest.special_ids, counts=band_counts(cfg, manifest))
    prefix = np.array([manifest.eos_id] if cfg.eval.prompt is PromptKind.EOS else [], dtype=np.int64)
    return RunInputs(tasks, prefix)


# ----------------------------------------------------------------------------------------------------- capture


def residual_modules(model: torch.nn.Module) -> list[str]:
    """Module names of the residual layers 0..L: "embeddings", then "blocks.0" .. "blocks.{L-1}"."""
    return ["embeddings", *(f"blocks.{k}" for k in model.blocks.keys())]


def layer_modules(model: torch.nn.Module, layers: Sequence[int] = ()) -> dict[int, str]:
    """{layer: module name} of the requested residual layers (all of them when empty); a one-line ConfigError
    names a layer the model does not have."""
    names = residual_modules(model)
    for layer in layers:
        if not 0 <= layer < len(names):
            raise ConfigError(f"layers: the model has residual layers 0..{len(names) - 1} (0 = embeddings), "
                              f"not {layer}")
    return {layer: names[layer] for layer in (layers or range(len(names)))}


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def capture(model: torch.nn.Module, input_ids: torch.Tensor, modules: Sequence[str],
            position: int | Sequence[int] | None = None, *, batch: int = 256,
            device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """The output of each named module (`model.get_submodule(name)`) on `input_ids` (n, T): at sequence
    `position` (an int -> (n, d); a list of positions -> (n, len, d); None -> every position (n, T, d)), float32 on
    the CPU. Forward hooks only; they are removed afterwards whatever happens."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    for name in modules:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"module {name!r}: not in the model") from None
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    select = slice(None) if position is None else position

    def hook_for(name: str) -> Any:
        def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            parts[name].append(_output_tensor(output)[:, select].float().cpu())
        return hook

    handles = [model.get_submodule(name).register_forward_hook(hook_for(name)) for name in modules]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(input_ids), batch):
            model(input_ids[i:i + batch].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: torch.cat(p) if p else torch.empty(0) for name, p in parts.items()}
