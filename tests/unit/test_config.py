"""load_config: TOML + dotted overrides, typed errors naming the field, to_toml round trip, sweep grids."""

from __future__ import annotations

import dataclasses
import re
import tomllib

import numpy as np
import pytest

from raretask.config import Config, ConfigError, load_config, option, parse_value, split_key
from raretask.synthetic.mixture import Placement
from raretask.synthetic.train import EvalMode, OptimizerKind, Schedule, SynthConfig, expand_grid

BASE = """
[mixture]
dim = 8
zipf = 1.0

[[mixture.tasks]]
name = "a"
rank = 2
decay = 0.5

[[mixture.tasks]]
name = "b"
rank = 1
scale = 2.0

[train]
steps = 10
lr = 0.01

[sweep]
widths = [1, 2]
seeds = [0, 1]
"""


@pytest.fixture
def toml_path(tmp_path):
    p = tmp_path / "cfg.toml"
    p.write_text(BASE)
    return p


def _load(path, *overrides):
    return load_config(SynthConfig, path, list(overrides))


def _error(path, *overrides) -> str:
    with pytest.raises(ConfigError) as e:
        _load(path, *overrides)
    msg = str(e.value)
    assert "\n" not in msg  # one line
    return msg


def test_load_plain(toml_path):
    cfg = _load(toml_path)
    assert cfg.mixture.dim == 8 and cfg.mixture.zipf == 1.0
    assert [t.name for t in cfg.mixture.tasks] == ["a", "b"]
    assert cfg.mixture.tasks[0].decay == 0.5 and cfg.mixture.tasks[1].scale == 2.0
    assert cfg.mixture.placement is Placement.ORTHOGONAL  # default
    assert cfg.train.steps == 10 and cfg.train.optimizer is OptimizerKind.ADAMW
    assert cfg.sweep.widths == [1, 2] and cfg.sweep.grid == {}


def test_defaults_without_file():
    cfg = load_config(SynthConfig, None, ["mixture.zipf=1", "mixture.tasks_from.count=3", "mixture.tasks_from.rank=2"])
    assert cfg.mixture.build().ranks == [2, 2, 2]
    assert cfg.train.lr == 1e-3


def test_override_scalars_lists_and_enums(toml_path):
    cfg = _load(toml_path, "train.lr=3e-3", "mixture.noise=0.25", "sweep.widths=[1,2,4]", "train.optimizer=sgd",
                "train.schedule=COSINE", "mixture.placement=random", "eval.mode=samples", "train.steps=7",
                "train.device=cpu")
    assert cfg.train.lr == 3e-3 and isinstance(cfg.train.lr, float)
    assert cfg.mixture.noise == 0.25
    assert cfg.sweep.widths == [1, 2, 4]
    assert cfg.train.optimizer is OptimizerKind.SGD
    assert cfg.train.schedule is Schedule.COSINE  # case-insensitive
    assert cfg.mixture.placement is Placement.RANDOM
    assert cfg.eval.mode is EvalMode.SAMPLES
    assert cfg.train.steps == 7 and cfg.train.device == "cpu"


def test_int_for_float_field_is_converted(toml_path):
    cfg = _load(toml_path, "train.lr=1")
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("key", ["mixture.tasks[0].rank=3", "mixture.tasks.0.rank=3"])
def test_indexed_override(toml_path, key):
    cfg = _load(toml_path, key)
    assert cfg.mixture.tasks[0].rank == 3 and cfg.mixture.tasks[1].rank == 1
    assert cfg.mixture.build().ranks == [3, 1]


def test_split_key_and_parse_value():
    assert split_key("mixture.tasks[0].rank") == ["mixture", "tasks", 0, "rank"]
    assert split_key("mixture.tasks.0.rank") == ["mixture", "tasks", 0, "rank"]
    assert split_key("a[1][2].b") == ["a", 1, 2, "b"]
    assert parse_value("3e-3") == 3e-3 and parse_value("[1, 2]") == [1, 2] and parse_value("true") is True
    assert parse_value("sgd") == "sgd" and parse_value('"x y"') == "x y"


@pytest.mark.parametrize("override,key", [
    ("train.lrr=1", "train.lrr"),
    ("mixture.tasks[1].rnk=2", "mixture.tasks[1].rnk"),
    ("bogus.x=1", "bogus"),
    ("mixture.tasks[5].rank=1", "mixture.tasks[5].rank"),
])
def test_unknown_key_is_named(toml_path, override, key):
    assert key in _error(toml_path, override)


@pytest.mark.parametrize("override,field", [
    ("train.steps=1.5", "train.steps"),
    ("train.steps=true", "train.steps"),
    ("train.lr=abc", "train.lr"),
    ("train.lr=true", "train.lr"),
    ("sweep.widths=3", "sweep.widths"),
    ("sweep.widths=[1, 2.5]", "sweep.widths[1]"),
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("mixture.tasks[0].name=3", "mixture.tasks[0].name"),
    ("model.encoder=1", "model.encoder"),
    ("train=3", "train"),
])
def test_wrong_type_names_field(toml_path, override, field):
    assert _error(toml_path, override).startswith(field + ":")


@pytest.mark.parametrize("override,field", [
    ("train.steps=0", "train.steps"),
    ("train.lr=-1", "train.lr"),
    ("eval.frequent_mass=1.5", "eval.frequent_mass"),
    ("sweep.widths=[1, 9]", "sweep.widths"),
    ("sweep.seeds=[0, 0]", "sweep.seeds"),
    ("train.device=tpu", "train.device"),
    ("mixture.dim=2", "mixture.tasks[1].rank"),  # orthogonal blocks 2 + 1 > 2
])
def test_validation_errors_name_field(toml_path, override, field):
    assert _error(toml_path, override).startswith(field + ":")


def test_malformed_override_and_file_errors(tmp_path, toml_path):
    assert "train.lr" in _error(toml_path, "train.lr")
    with pytest.raises(ConfigError, match="not found"):
        load_config(SynthConfig, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[mixture\ndim = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(SynthConfig, bad)


def _roundtrip(cfg, tmp_path):
    text = cfg.to_toml()
    tomllib.loads(text)  # valid TOML
    p = tmp_path / "again.toml"
    p.write_text(text)
    return load_config(SynthConfig, p)


def test_to_toml_roundtrip(toml_path, tmp_path):
    cfg = _load(toml_path, "train.optimizer=sgd", "train.weight_decay=0.1", "mixture.placement=random",
                "mixture.tasks[0].eigenvalues=[3.0, 1.0]", "mixture.tasks[0].rank=2")
    again = _roundtrip(cfg, tmp_path)
    assert again.to_dict() == cfg.to_dict()
    assert again.train.optimizer is OptimizerKind.SGD and again.mixture.tasks[0].eigenvalues == [3.0, 1.0]
    assert "frequency" not in cfg.to_dict()["mixture"]["tasks"][0]  # None fields are left out


def test_to_toml_roundtrip_with_grid(toml_path, tmp_path):
    cfg = _load(toml_path, "sweep.mixture.zipf=[0.5, 1]")
    again = _roundtrip(cfg, tmp_path)
    assert again.sweep.grid == {"mixture.zipf": [0.5, 1]}
    assert again.to_dict() == cfg.to_dict()


def test_relative_covariance_path_resolved_against_toml_dir(tmp_path, monkeypatch):
    sub = tmp_path / "cfgdir"
    sub.mkdir()
    np.save(sub / "c.npy", np.diag([2.0, 1.0, 0.0, 0.0]))
    (sub / "cfg.toml").write_text('[mixture]\ndim = 4\n[[mixture.tasks]]\nname = "a"\nfrequency = 1.0\n'
                                  'covariance = "c.npy"\n[sweep]\nwidths = [1]\n')
    monkeypatch.chdir(tmp_path)  # cwd is not the config's directory
    cfg = load_config(SynthConfig, sub / "cfg.toml")
    assert cfg.mixture.tasks[0].covariance == str((sub / "c.npy").resolve())
    np.testing.assert_allclose(cfg.mixture.build().eigenvalues[0], [2.0, 1.0])


# -------------------------------------------------------------------------------------------------- sweep grid


def _check_zipf_grid(cfg, values):
    assert cfg.sweep.grid == {"mixture.zipf": values}
    points = expand_grid(cfg)
    assert [a for a, _ in points] == [{"mixture.zipf": v} for v in values]
    for (_, point), v in zip(points, values):
        assert isinstance(point, SynthConfig)
        assert point.mixture.zipf == v
        assert point.sweep.grid == {}
        assert point.train.lr == cfg.train.lr and point.sweep.widths == cfg.sweep.widths
        w = np.arange(1, 3, dtype=float) ** -v
        np.testing.assert_allclose(point.mixture.build().frequencies, w / w.sum())


def test_grid_from_toml_table(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(BASE + "\n[sweep.mixture]\nzipf = [0.5, 1.0]\n")
    _check_zipf_grid(_load(p), [0.5, 1.0])


def test_grid_from_override(toml_path):
    _check_zipf_grid(_load(toml_path, "sweep.mixture.zipf=[0.5,1]"), [0.5, 1])


def test_grid_product_over_keys(toml_path):
    cfg = _load(toml_path, "sweep.mixture.zipf=[0.5, 2.0]", "sweep.train.lr=[1e-3, 1e-2, 1e-1]")
    points = expand_grid(cfg)
    assert len(points) == 6
    got = {(p.mixture.zipf, p.train.lr) for _, p in points}
    assert got == {(z, lr) for z in (0.5, 2.0) for lr in (1e-3, 1e-2, 1e-1)}


def test_no_grid_gives_self(toml_path):
    cfg = _load(toml_path)
    assert expand_grid(cfg) == [({}, cfg)]


@pytest.mark.parametrize("override,key", [
    ("sweep.mixture.zipff=[1]", "mixture.zipff"),
    ("sweep.nothing=[1, 2]", "nothing"),
    ("sweep.mixture.tasks[3].rank=[1]", "mixture.tasks[3]"),
])
def test_unknown_grid_key(toml_path, override, key):
    assert key in _error(toml_path, override)


def test_grid_values_must_be_valid_lists(toml_path):
    assert "sweep.mixture.zipf" in _error(toml_path, "sweep.mixture.zipf=1.0")
    assert "sweep.mixture.zipf" in _error(toml_path, "sweep.mixture.zipf=[]")
    assert "mixture.zipf" in _error(toml_path, "sweep.mixture.zipf=[1.0, -1.0]")  # invalid grid point
    assert "mixture.dim" in _error(toml_path, "sweep.mixture.dim=[0]")


@dataclasses.dataclass
class Inner(Config):
    rate: float = option(0.5, "a rate", gt=0, le=1)
    sizes: list[int] = option(factory=lambda: [1, 2], doc="sizes", ge=1)
    optional: float | None = option(None, "may be absent", ge=0)


@dataclasses.dataclass
class Outer(Config):
    inner: Inner = option(factory=Inner, doc="nested")
    steps: int = option(10, "steps", ge=1)


def test_declared_bounds_are_checked_with_the_field_named():
    """Bounds declared on a field (option(..., ge=, gt=, le=)) are checked for numbers and every number of a list,
    at any nesting depth, by Config.validate itself: a subclass states no check loop."""
    Outer().validate()
    for data, message in [({"steps": 0}, "steps: must be >= 1, got 0"),
                          ({"inner": {"rate": 0.0}}, "inner.rate: must be > 0, got 0.0"),
                          ({"inner": {"rate": 1.5}}, "inner.rate: must be <= 1, got 1.5"),
                          ({"inner": {"sizes": [3, 0]}}, "inner.sizes: must be >= 1, got 0"),
                          ({"inner": {"optional": -1.0}}, "inner.optional: must be >= 0, got -1.0")]:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            Outer.from_dict(data).validate()
