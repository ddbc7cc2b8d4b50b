"""The corpus BPE is trained on the training split only: held-out text never shapes the tokenizer."""

import numpy as np

from raretask.lm.corpus import CorpusConfig, SourceConfig, prepare
from raretask.lm.tokenizers import train_bpe

# one made-up word per document, repeated so that a BPE merges it into a single token if it sees that document
WORDS = ["qwertzu", "plokmij", "zaxscdv", "bhunjym", "frtgyhn", "vcxzlkj"]
DOCS = [" ".join([w] * 12) for w in WORDS]


def prepared(tmp_path, name, **kw):
    texts = tmp_path / "texts"
    texts.mkdir(exist_ok=True)
    for i, text in enumerate(DOCS):
        (texts / f"{i:02d}.txt").write_text(text)
    cfg = CorpusConfig(sources=[SourceConfig(kind="text", path=str(texts))], bpe_vocab_size=400,
                       heldout_fraction=0.34, seed=5, **kw)
    cfg.validate()
    return prepare(cfg, tmp_path / name, progress=False)


def split_words(m, split):
    """The word of every document in `split`, decoded from its token file."""
    tokens, tok = m.read(split), m.tokenizer()
    ends = np.flatnonzero(tokens == m.eos_id)
    return {tok.decode(tokens[a + 1:b]).split()[0] for a, b in zip(np.r_[-1, ends[:-1]], ends)}


def test_heldout_words_are_not_merged_and_training_words_are(tmp_path):
    m = prepared(tmp_path, "out")
    tok = m.tokenizer()
    train, held = split_words(m, "train"), split_words(m, "heldout")
    assert len(held) == 2 and train | held == set(WORDS)  # round(0.34 * 6) = 2 held-out documents
    for w in train:  # the tokenizer has learnt the words it was trained on: one token each
        assert len(tok.encode(" " + w)) == 1, w
    for w in held:  # a BPE that saw the held-out documents would have merged these the same way
        assert len(tok.encode(" " + w)) > 1, w


def test_tokenizer_is_the_bpe_of_the_training_documents_alone(tmp_path):
    m = prepared(tmp_path, "out")
    train = split_words(m, "train")
    alone = train_bpe([d for d, w in zip(DOCS, WORDS) if w in train], 400)  # source order
    assert m.tokenizer().sha256() == alone.sha256()
    # the written order of the training documents (shuffle) does not change the tokenizer
    assert prepared(tmp_path, "unshuffled", shuffle=False).tokenizer().sha256() == alone.sha256()


def test_documents_of_only_special_tokens_are_dropped_after_the_split(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    for i, text in enumerate(DOCS + ["<|endoftext|>"]):
        (texts / f"{i:02d}.txt").write_text(text)
    cfg = CorpusConfig(sources=[SourceConfig(kind="text", path=str(texts))], bpe_vocab_size=400,
                       heldout_fraction=0.3, seed=1)
    cfg.validate()
    m = prepare(cfg, tmp_path / "out", progress=False)
    assert m.data["documents_dropped_empty"] == 1
    assert m.train_documents + m.heldout_documents == len(DOCS)
    assert split_words(m, "train") | split_words(m, "heldout") == set(WORDS)
