"""What the LM integration tests share: a tiny news corpus and a tiny run trained on it in-process."""

from __future__ import annotations

from pathlib import Path


def tiny_news_corpus(out: Path) -> Path:
    """The embedded BBC news subset, 150 documents, a 512-token BPE, prepared into `out`."""
    from raretask.lm.corpus import CorpusConfig, SourceConfig, prepare

    prepare(CorpusConfig(sources=[SourceConfig(kind="embedded", subset="bbcnews")], bpe_vocab_size=512,
                         max_documents=150, heldout_fraction=0.1), out, progress=False)
    return out


def trained_run(root: Path, config: str) -> Path:
    """root/run: `config` (a TOML text with a {manifest} field) trained on a tiny corpus prepared in root/corpus."""
    from raretask.config import load_config
    from raretask.lm.train import LMConfig, train

    corpus = tiny_news_corpus(root / "corpus")
    (root / "tiny.toml").write_text(config.format(manifest=corpus))
    train(load_config(LMConfig, root / "tiny.toml"), root / "run", progress=False)
    return root / "run"
