"""Fixtures shared by unit and integration tests."""

import pytest
import torch

from raretask.config import load_config


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (and stall badly on a busy machine). Restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def config_from(tmp_path):
    """config_from(ConfigClass, toml_text) -> load(*overrides): the config as `raretask` loads that file, with
    dotted overrides (`train.lr=3e-3`)."""

    def make(cls, text):
        path = tmp_path / "config.toml"
        path.write_text(text)
        return lambda *overrides: load_config(cls, path, list(overrides))

    return make
