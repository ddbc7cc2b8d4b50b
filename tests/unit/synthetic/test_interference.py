"""The interference analysis' settings: bad ones name their field, the rare task defaults to the least frequent."""

import pytest

from raretask.config import ConfigError
from raretask.synthetic.interference import InterferenceConfig

from ..analysis.test_interference import TOML


@pytest.fixture
def cfg(config_from):
    return config_from(InterferenceConfig, TOML)


@pytest.mark.parametrize("override, message", [
    ("interference.rare=zzz", "interference.rare: no task named 'zzz'"),
    ("interference.rare=a", "interference.rare: task 'a' is in the frequent set F"),
    ("interference.mode=noisy", "interference.mode: 'noisy' is not one of"),
])
def test_bad_probe_settings_name_the_field(cfg, override, message):
    with pytest.raises(ConfigError, match=message):
        cfg(override)


def test_default_rare_task_is_the_least_frequent(cfg):
    mix, F, r = cfg().probe()
    assert mix.names[r] == "d" and r not in F
