"""Activations by module name: the hooks read the named module's output at the asked position, exactly as a manual
forward through the same OLMo-core modules; unknown layers and runs without checkpoints are one-line errors."""

import json

import numpy as np
import pytest
import torch

from raretask.analysis.activations import capture, checkpoints, layer_modules, residual_modules, task_prompts
from raretask.config import ConfigError

from .planted import olmo, task


@pytest.fixture(scope="module")
def model(one_thread):
    return olmo(n_layers=2)


def test_capture_equals_a_manual_forward_at_every_layer_and_position(model):
    t = task()
    ids = task_prompts(t, np.arange(0, 10000, 997), prefix=np.array([5]))  # (n, 3): prefix, TOK1, TOK2
    names = residual_modules(model)
    assert names == ["embeddings", "blocks.0", "blocks.1"]
    with torch.no_grad():
        h = [model.embeddings(ids)]
        for block in model.blocks.values():
            h.append(block(h[-1]))
    for position in (1, 2):
        got = capture(model, ids, names, position, batch=4)  # several batches
        for name, want in zip(names, h):
            assert got[name].shape == (len(ids), model.d_model)
            torch.testing.assert_close(got[name], want[:, position].float())
    every = capture(model, ids, ["blocks.1"])["blocks.1"]
    torch.testing.assert_close(every, h[2].float())
    # the layers differ from each other, so a hook on the wrong module would fail above
    assert not torch.allclose(h[1][:, 1], h[2][:, 1])


def test_capture_leaves_no_hook_and_restores_the_mode(model):
    model.train()
    capture(model, torch.zeros(2, 3, dtype=torch.long), ["blocks.0"], 0)
    assert model.training and not model.blocks["0"]._forward_hooks
    model.eval()
    with pytest.raises(ConfigError, match="blocks.7"):
        capture(model, torch.zeros(2, 3, dtype=torch.long), ["blocks.7"], 0)


def test_layers_are_checked_against_the_model(model):
    assert layer_modules(model) == {0: "embeddings", 1: "blocks.0", 2: "blocks.1"}
    assert layer_modules(model, [2]) == {2: "blocks.1"}
    with pytest.raises(ConfigError, match=r"layers: .*0\.\.2.*not 3"):
        layer_modules(model, [3])


def test_checkpoints_need_a_run_with_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="not an LM run directory"):
        checkpoints(tmp_path)
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "meta.json").write_text(json.dumps({"kind": "lm.train"}))
    with pytest.raises(ConfigError, match="no checkpoints"):
        checkpoints(tmp_path)
    for step in (20, 100, 3):
        d = tmp_path / "checkpoints" / f"step{step}"
        d.mkdir(parents=True)
        (d / ".metadata.json").write_text("{}")
    (tmp_path / "checkpoints" / "step50").mkdir()  # incomplete: no metadata yet
    assert [s for s, _ in checkpoints(tmp_path)] == [3, 20, 100]
