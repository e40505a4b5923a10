"""One Tokenizer interface (encode, decode, vocab_size, eot) over char, GPT-2 (tiktoken, offline)
and our own BPE."""

import pytest
from conftest import SHAKESPEARE

from gptkit.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    load_tokenizer,
    new_tokenizer,
)

UNICODE = [
    "héllo wörld, ça va? naïve façade, Ångström",
    "emoji 🤖🚀, a family 👨‍👩‍👧 joined by ZWJ, a flag 🇺🇦 and skin tone 👍🏽",
    "   leading, trailing   \t\t tabs\n\n\n   and runs of      spaces   ",
    "中文，日本語のテキスト, 한국어, العربية, עברית",
    "\r\n windows newlines \r\n, form feed \x0c, vertical tab \x0b, NUL-free controls \x07",
    "math Ω≈ç√∫∑, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP, zero width \u200b joiner, combining e\u0301",
    "<|endoftext|> is plain text here",
    "",
]


@pytest.fixture(scope="module")
def gpt2():
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def shakespeare():
    return SHAKESPEARE.read_text(encoding="utf-8")[:200_000]


@pytest.fixture(scope="module")
def bpe(shakespeare):
    return BPETokenizer.train(shakespeare, vocab_size=512)


def test_gpt2_from_the_offline_cache_is_gpt2(gpt2):
    assert (gpt2.vocab_size, gpt2.eot) == (50257, 50256)
    assert gpt2.encode("Hello world") == [15496, 995]  # GPT-2's ids, as in its papers' examples


@pytest.mark.parametrize("text", UNICODE)
def test_gpt2_round_trips_any_unicode(gpt2, text):
    ids = gpt2.encode(text)
    assert gpt2.decode(ids) == text
    assert all(0 <= i < gpt2.vocab_size for i in ids)


@pytest.mark.parametrize("text", UNICODE)
def test_bpe_round_trips_any_unicode(bpe, text):
    ids = bpe.encode(text)
    # byte-level: emoji never seen in training still encode, as bytes
    assert bpe.decode(ids) == text
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.eot not in ids  # "<|endoftext|>" in the text is text, not the separator


def test_bpe_learns_the_corpus(bpe, shakespeare):
    assert bpe.vocab_size == 512 and bpe.eot is not None
    sample = shakespeare[-20_000:]
    # merges compress the text it was trained on
    assert len(bpe.encode(sample)) < 0.6 * len(sample.encode("utf-8"))


def test_bpe_saved_and_loaded_encodes_the_same(bpe, tmp_path, shakespeare):
    bpe.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(bpe.meta(), tmp_path)
    text = shakespeare[:5000] + UNICODE[1]
    assert loaded.encode(text) == bpe.encode(text)
    assert loaded.meta() == bpe.meta()  # the same sha256: train.py accepts it on resume


def test_bpe_of_other_text_has_another_hash(bpe, shakespeare):
    other = BPETokenizer.train(shakespeare[100_000:], vocab_size=512)
    assert other.vocab_size == bpe.vocab_size
    assert other.meta()["tokenizer_sha256"] != bpe.meta()["tokenizer_sha256"]


def test_bpe_vocab_below_bytes_is_a_clear_error(shakespeare):
    with pytest.raises(ValueError, match="vocab_size=200 is too small"):
        BPETokenizer.train(shakespeare, vocab_size=200)


def test_char_round_trips_within_its_vocabulary(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.decode(tok.encode(shakespeare[:3000])) == shakespeare[:3000]
    assert tok.eot is None and tok.vocab_size == len(set(shakespeare))


def test_char_names_the_characters_outside_its_vocabulary():
    tok = CharTokenizer.from_text("abc \n")
    with pytest.raises(ValueError, match="not in this model's vocabulary") as e:
        tok.encode("a bé🤖c🤖")
    assert "é" in str(e.value) and "🤖" in str(e.value) and "a" not in str(e.value).split(":")[-1]


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
def test_meta_rebuilds_the_same_tokenizer(kind, shakespeare, tmp_path):
    tok = new_tokenizer(kind, shakespeare, shakespeare[:150_000], vocab_size=300)
    if kind == "bpe":
        tok.save(str(tmp_path / "tokenizer.json"))
    rebuilt = load_tokenizer(tok.meta(), tmp_path)
    text = shakespeare[-1000:]
    assert type(rebuilt) is type(tok)
    assert (rebuilt.vocab_size, rebuilt.eot) == (tok.vocab_size, tok.eot)
    assert rebuilt.encode(text) == tok.encode(text)


def test_unknown_tokenizer_kind_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer 'sentencepiece'"):
        load_tokenizer({"tokenizer": "sentencepiece"}, tmp_path)
    with pytest.raises(ValueError, match="tokenizer.json is missing"):
        load_tokenizer({"tokenizer": "bpe"}, tmp_path)
