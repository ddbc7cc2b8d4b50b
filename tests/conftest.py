"""Fixtures shared by unit and integration tests."""

import pytest

from raretask.config import load_config


@pytest.fixture
def config_from(tmp_path):
    """config_from(ConfigClass, toml_text) -> load(*overrides): the config as `raretask` loads that file, with
    dotted overrides (`train.lr=3e-3`)."""

    def make(cls, text):
        path = tmp_path / "config.toml"
        path.write_text(text)
        return lambda *overrides: load_config(cls, path, list(overrides))

    return make
