"""The command line: theory, version, entry points, report, demo."""

import json
import re
from pathlib import Path

import numpy as np
import torch

import raretask
from raretask.config import load_config
from raretask.synthetic.train import SynthConfig

from .conftest import ROOT, run_module, summary

DEFAULT = ROOT / "configs" / "synthetic" / "default.toml"


def test_theory_json_matches_the_mixture(cli):
    s = summary(cli("theory", DEFAULT, "--widths", "1,2,4,30", "--json"))
    mix = load_config(SynthConfig, DEFAULT).mixture.build()
    assert s["widths"] == [1, 2, 4, 30]
    assert [t["name"] for t in s["tasks"]] == mix.names
    expected = mix.theory_losses([1, 2, 4, 30])
    for k, t in enumerate(s["tasks"]):
        assert t["frequency"] == mix.frequencies[k]
        assert t["eigenvalues"] == mix.eigenvalues[k].tolist()
        np.testing.assert_allclose(t["loss"], expected[k])
        assert t["loss"][-1] == 0.0  # 30 > total rank 16: everything is kept
    np.testing.assert_allclose(s["mixture_loss"], mix.frequencies @ expected)
    u = [x["utility"] for x in s["utilities"]]
    assert u == sorted(u, reverse=True) and len(u) == sum(mix.ranks)
    assert min(x["index"] for x in s["utilities"]) == 1
    first = s["utilities"][0]
    assert first["utility"] == mix.frequencies[0] * mix.eigenvalues[0][0]


def test_theory_table_and_overrides(cli):
    r = cli("theory", DEFAULT, "mixture.zipf=0.0")
    assert r.exit_code == 0
    assert "mixture loss L_N" in r.stdout and "frequent set F" in r.stdout
    # with zipf = 0 all tasks are equally frequent: 'rare-simple' (lambda 2) gets its feature at width 4
    row = next(ln for ln in r.stdout.splitlines() if "rare-simple" in ln)
    assert re.search(r"rare-simple\s*│\s*0\.1667\s*│\s*1\s*│\s*4\s*│", row), row


def test_version_and_module_entry_point():
    r = run_module("--version")
    assert r.returncode == 0 and raretask.__version__ in r.stdout
    r = run_module("synth", "run", "--help")
    assert r.returncode == 0 and "--dry-run" in r.stdout and "--out" in r.stdout


def test_synth_keys_lists_documented_fields(cli):
    r = cli("synth", "keys")
    assert r.exit_code == 0
    for key in ("mixture.zipf", "mixture.tasks[].decay", "train.lr", "sweep.widths", "eval.mode"):
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(key + " "))
        assert len(line.split()) > 2  # a type and a doc string follow


def _tiny_presets(root: Path, analyses: tuple[str, ...]) -> Path:
    """Copies of the demo's presets, shrunk by overrides (the demo reads them through presets.root, patched below)."""
    from raretask import cli as cli_module
    from raretask.config import load_config
    from raretask.lm.corpus import CorpusConfig
    from raretask.lm.sweep import LMSweepConfig
    from raretask.synthetic.train import SynthConfig

    shrink = {"synthetic/default.toml": (SynthConfig, ["sweep.seeds=[0]", "train.steps=600", "eval.every=300"]),
              "synthetic/residual.toml": (cli_module.ANALYSES["residual"].load("config"), ["sweep.seeds=[0]"]),
              "lm/corpus/embedded.toml": (CorpusConfig, ["max_documents=120", "bpe_vocab_size=512"]),
              # a 512-token BPE has no rarest tenth of 102 tokens: the whole vocabulary as the band
              "lm/demo.toml": (LMSweepConfig, ["data.manifest=unused", "sweep.sizes=[\"cpu-30k\"]",
                                               "tasks[0].value_band=[0,1]",
                                               "sweep.frequencies=[1e-3]", "train.steps=6", "eval.every=3",
                                               "train.checkpoint_every=3", "eval.train_instances=16",
                                               "eval.test_instances=16", "eval.heldout_tokens=1024"])}
    for name in analyses:
        assert f"synthetic/{name}.toml" in shrink
    for rel, (cls, overrides) in shrink.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(load_config(cls, ROOT / "configs" / rel, overrides).to_toml())
    return root


def test_demo_writes_one_report_with_every_part(cli, tmp_path, monkeypatch):
    from raretask import cli as cli_module
    from raretask import presets

    tiny = _tiny_presets(tmp_path / "configs", ("residual",))
    monkeypatch.setattr(presets, "root", lambda: tiny)
    monkeypatch.setattr(cli_module, "DEMO_ANALYSES", ("residual",))
    out = tmp_path / "demo"
    r = cli("demo", "--out", out, "--no-progress")
    assert r.exit_code == 0, r.stderr
    page = (out / "report.html").read_text()
    images = re.findall(r"<img src='data:image/png;base64,[^']+' alt='([^']+)'", page)  # embedded, named by file
    assert {"synthetic/phase_diagram.png", "synthetic/observed_vs_predicted.png"} <= set(images)
    assert any(i.startswith("residual/") for i in images) and any(i.startswith("lm/sweep/") for i in images)
    for img in images:
        assert (out / img).stat().st_size > 5000
    meta = json.loads((out / "synthetic" / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["versions"]["torch"] == torch.__version__
    assert meta["git_commit"] and meta["seeds"] == [0]
    assert json.loads((out / "lm" / "sweep" / "meta.json").read_text())["kind"] == "lm.sweep"
    # the report is rebuilt from a run directory alone
    r = cli("report", out / "synthetic")
    assert r.exit_code == 0 and (out / "synthetic" / "report.html").is_file()
