"""attention_maps.py: tokens grouped into words, word-level weights, and the pictures it draws."""

import json

import numpy as np
import pytest
import torch

import attention_maps as attention
from gptkit.tokenizer import CharTokenizer, GPT2Tokenizer
from model import GPT, GPTConfig


def causal_random_attention(T, seed=0):
    """A (T, T) attention matrix: rows are softmaxes over the past, future entries exactly 0."""
    g = np.random.default_rng(seed)
    scores = g.normal(size=(T, T)) + np.triu(np.full((T, T), -np.inf), 1)
    weights = np.exp(scores - scores.max(1, keepdims=True))
    return weights / weights.sum(1, keepdims=True)


def test_word_attention_on_a_hand_made_matrix():
    # tokens: "the" = 0,1 | "cat" = 2 | "sat" = 3,4,5
    word_of_token = [0, 0, 1, 2, 2, 2]
    attn = np.zeros((6, 6))
    attn[0, 0] = 1
    attn[1, :2] = [0.25, 0.75]
    attn[2, :3] = [0.2, 0.3, 0.5]
    attn[3, :4] = [0.1, 0.1, 0.6, 0.2]
    attn[4, :5] = [0.0, 0.5, 0.0, 0.25, 0.25]
    attn[5, :6] = [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]
    expected = np.array(
        [
            [1.0, 0.0, 0.0],  # "the": its two tokens put everything on "the"
            [0.5, 0.5, 0.0],  # "cat": 0.2 + 0.3 on "the" (summed over its key tokens)
            [
                (0.2 + 0.5 + 0.2) / 3,
                (0.6 + 0.0 + 0.1) / 3,
                (0.2 + 0.5 + 0.7) / 3,
            ],  # "sat": mean of its 3 query tokens
        ]
    )
    np.testing.assert_allclose(attention.word_attention(attn, word_of_token, 3), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_word_attention_rows_sum_to_one_and_the_future_is_zero(seed):
    word_of_token = [0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4]
    attn = np.stack([causal_random_attention(11, seed + h) for h in range(3)])  # (nh, T, T)
    words = attention.word_attention(attn, word_of_token, 5)
    assert words.shape == (3, 5, 5)
    np.testing.assert_allclose(words.sum(-1), 1.0)
    assert np.all(words[:, np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)
    assert np.all(words[:, np.tril_indices(5)[0], np.tril_indices(5)[1]] > 0)


def test_characters_group_into_words_with_the_space_before_them():
    text = "the cat, sat"
    tokenizer = CharTokenizer(sorted(set(text)))
    ids = tokenizer.encode(text)
    spans = attention.token_spans(tokenizer, ids, text)
    assert spans[:3] == [(0, 1), (1, 2), (2, 3)]
    word_of_token, labels = attention.group_tokens(text, spans, attention.split_words(text))
    assert labels == ["the", "cat", ",", "sat"]
    #                    t  h  e  _  c  a  t  ,  _  s  a  t
    assert word_of_token == [0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3]


def test_gpt2_sub_words_group_into_words(gpt2_hf_dir):
    text = "the cat that was sitting on the mat, jumped"
    tokenizer = GPT2Tokenizer()
    ids = tokenizer.encode(text)
    word_of_token, labels = attention.group_tokens(
        text, attention.token_spans(tokenizer, ids, text), attention.split_words(text)
    )
    assert labels == ["the", "cat", "that", "was", "sitting", "on", "the", "mat", ",", "jumped"]
    pieces = {}
    for token, word in zip(ids, word_of_token, strict=True):
        pieces[word] = pieces.get(word, "") + tokenizer.decode([token])
    assert [pieces[w].strip() for w in range(len(labels))] == labels


def test_pictures_are_written_and_not_blank(char_checkpoint, tmp_path, cli):
    import matplotlib.image

    code, out, err = cli(attention.main, f"--out_dir={char_checkpoint}", f"--save_dir={tmp_path}")
    assert code == 0, err
    # the notes' sentence has 70 characters, the model's context 32: the first words are dropped,
    # with a warning
    assert "warning:" in err and "dropping its first words" in err
    paths = [tmp_path / "attention_heads.png", tmp_path / "attention_jumped.png"]
    assert out.splitlines() == [f"wrote {p}" for p in paths]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        pixels = matplotlib.image.imread(path)
        assert min(pixels.shape[:2]) > 300
        assert pixels[..., :3].std() > 0.05  # heatmaps, labels and text, not a blank canvas


def test_json_has_word_level_weights(char_checkpoint, tmp_path, cli):
    text = "to be, or not to be"
    code, out, err = cli(
        attention.main,
        f"--out_dir={char_checkpoint}",
        f"--save_dir={tmp_path}",
        f"--text={text}",
        "--query=or",
        "--format=json",
    )
    assert code == 0, err
    assert out.strip() == f"wrote {tmp_path / 'attention.json'}" and not list(
        tmp_path.glob("*.png")
    )
    result = json.loads((tmp_path / "attention.json").read_text())
    assert result["words"] == ["to", "be", ",", "or", "not", "to", "be"]
    assert result["tokens_per_word"] == [2, 3, 1, 3, 4, 3, 3]  # a word owns the space before it
    assert result["query"] == "or" and result["query_index"] == 3
    weights = np.array(result["attention"])
    assert weights.shape == (2, 2, 7, 7)  # (layer, head, query word, key word)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.triu(weights, 1) == 0)
    np.testing.assert_allclose(result["query_attention"], weights[:, :, 3, :].mean(1), atol=1e-5)
    # the numbers are the model's own attention, aggregated
    ckpt = torch.load(char_checkpoint / "ckpt.pt", weights_only=True)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])
    tokenizer = CharTokenizer(json.loads((char_checkpoint / "meta.json").read_text())["chars"])
    attn = model.eval().attention_maps(torch.tensor(tokenizer.encode(text))).numpy()
    word_of_token = np.repeat(np.arange(7), result["tokens_per_word"])
    np.testing.assert_allclose(weights, attention.word_attention(attn, word_of_token, 7), atol=1e-5)


def test_a_hugging_face_gpt2_directory(gpt2_hf_dir, tmp_path, cli):
    code, out, err = cli(
        attention.main, f"--init_from={gpt2_hf_dir}", f"--save_dir={tmp_path}", "--format=json"
    )
    assert code == 0, err
    result = json.loads((tmp_path / "attention.json").read_text())
    assert result["text"] == attention.NOTES_SENTENCE and result["words"][-1] == "jumped"
    assert np.array(result["attention"]).shape[:2] == (2, 2)


def test_query_not_in_the_text_is_one_clear_line(char_checkpoint, tmp_path, cli):
    code, out, err = cli(
        attention.main,
        f"--out_dir={char_checkpoint}",
        f"--save_dir={tmp_path}",
        "--text=the cat sat",
        "--query=dog",
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --query='dog' is not a word of the text; its words are: the cat sat"
    ]
    assert not list(tmp_path.iterdir())


def test_no_checkpoint_is_one_clear_line(tmp_path, cli):
    code, out, err = cli(attention.main, f"--out_dir={tmp_path}")
    assert code == 2
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: no checkpoint at") and "ckpt.pt" in lines[0]
    )
