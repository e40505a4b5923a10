"""
Show what a trained GPT looks at: every layer's and head's attention over a sentence, and how much
one word attends to each earlier word, layer by layer.

    python attention_maps.py --out_dir=out-speedrun-90s
    python attention_maps.py --init_from=gpt2 --text="the cat sat on the mat" --query=sat
    python attention_maps.py --out_dir=out-speedrun-90s --format=json     # the numbers, no pictures
    python attention_maps.py --out_dir=out-long-range --format=html       # one interactive page
    python attention_maps.py --out_dir=out-long-range --format=html --text_file=texts.txt

Writes attention_heads.png (a grid: one heatmap per layer x head) and attention_<query>.png (the
query word's attention to each earlier word, per layer, averaged over heads), or attention.json, or
attention.html (one self-contained page: hover any word of any text, click any layer and head;
gptkit/attention_page.py), to --save_dir (default: out_dir, or the current directory for GPT-2
weights), and prints their names. --text_file gives one text a line (several only for html).

The model attends between tokens (characters, or GPT-2's sub-words); the pictures show words. A
word's attention to another word is the sum of the weights on that word's tokens (the keys),
averaged over its own tokens (the queries), so each word's row still sums to 1 over itself and the
words before it.
"""

import bisect
import os
import re
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch

# the notes' sentence: "jumped" must reach back to "cat"
from data.long_range.corpus import NOTES_SENTENCE
from gptkit.attention_page import PageText, build_page
from gptkit.base import UserError, atomic_write, save_figure, save_json
from gptkit.checkpoint import load_model
from gptkit.configurator import parse_overrides, run_cli
from gptkit.hardware import pick_device


@dataclass(frozen=True)
class AttentionConfig:
    # "resume" (from out_dir) | "gpt2" | ... | a Hugging Face GPT-2 directory
    init_from: str = "resume"
    out_dir: str = "out"
    text: str = NOTES_SENTENCE
    text_file: str = ""  # texts, one a line, instead of --text (several only for --format=html)
    # the word whose attention gets its own picture (its last occurrence); on the page, the word
    # selected when it opens (the default falls back to a text's last word)
    query: str = "jumped"
    format: str = "png"  # "png": two pictures; "json": the word-level weights; "html": one page
    save_dir: str = ""  # where to write; "" = out_dir (or the current directory for GPT-2 weights)
    device: str = "cpu"  # one forward pass: the CPU is plenty
    # a nanoGPT out_dir's tokenizer, its dataset's meta.pkl ("": where nanoGPT's sample.py looks)
    meta_pkl: str = ""


# --------------------------------------------------------------------------------------------------
# From tokens to words (pure functions, tested on hand-made input)


def split_words(text):
    """(start, end) spans of the words of text; punctuation marks count as words of their own."""
    return [m.span() for m in re.finditer(r"\w+(?:'\w+)*|[^\w\s]+", text)]


def token_spans(tokenizer, ids, text):
    """(start, end) character span of each token in text (which must be what ids decode to)."""
    if tokenizer.decode(ids) != text:
        raise UserError(
            "the tokenizer does not reproduce the text exactly, so its tokens cannot be placed on "
            "words"
        )
    # prefix lengths; a token ending inside a multi-byte character decodes to a stand-in, so clamp
    # to stay monotonic
    ends, last = [], 0
    for i in range(1, len(ids) + 1):
        last = min(max(last, len(tokenizer.decode(ids[:i]))), len(text))
        ends.append(last)
    return list(zip([0, *ends[:-1]], ends, strict=True))


def group_tokens(text, spans, words):
    """
    (word index of each token, word labels). A token belongs to the word holding its first non-space
    character; a token of only spaces belongs to the word after it (GPT-2 writes " cat" as one
    token). A word with no token of its own (a sub-word token ran over into it) joins the word
    before it.
    """
    word_ends = [end for _, end in words]
    owner = []
    for start, end in spans:
        piece = text[start:end]
        anchor = start + len(piece) - len(piece.lstrip()) if piece.strip() else start
        owner.append(min(bisect.bisect_right(word_ends, anchor), len(words) - 1))
    kept = sorted(set(owner))
    labels = []
    for k, first in enumerate(kept):
        last = kept[k + 1] - 1 if k + 1 < len(kept) else len(words) - 1
        labels.append(text[words[first][0] : words[last][1]])
    return [kept.index(w) for w in owner], labels


def word_attention(attn, word_of_token, n_words):
    """
    Token attention (..., T, T) -> word attention (..., n_words, n_words): the weights on a word's
    key tokens are summed, and its query tokens' rows averaged, so rows still sum to 1 (causal: word
    q gets 0 from every later word).
    """
    attn = np.asarray(attn, dtype=np.float64)
    T = attn.shape[-1]
    assert len(word_of_token) == T, (len(word_of_token), T)
    member = np.zeros((T, n_words))  # member[t, w] = 1 if token t is in word w
    member[np.arange(T), word_of_token] = 1
    assert member.sum(0).min() > 0, "every word needs at least one token"
    to_words = attn @ member  # (..., T, W): each query token's attention, summed per key word
    mean_over_queries = member.T / member.sum(0)[:, None]  # (W, T)
    return mean_over_queries @ to_words  # (W, T) @ (..., T, W) -> (..., W, W)


# --------------------------------------------------------------------------------------------------
# The model's attention on the text


def fit_to_context(tokenizer, text, block_size):
    """(text, ids, warning): the text, or, when it is longer than the model's context, its last
    words that fit, with a warning to show ("" when nothing was cut)."""
    ids = tokenizer.encode(text)
    if not ids:
        raise UserError("the text is empty; give --text=...")
    if len(ids) <= block_size:
        return text, ids, ""
    for start, _ in split_words(text):
        cut = tokenizer.encode(text[start:])
        if len(cut) <= block_size:
            warning = (
                f"warning: the text has {len(ids)} tokens, more than the model's context of "
                f"{block_size}; dropping its first words {text[:start].strip()!r}"
            )
            return text[start:], cut, warning
    raise UserError(
        f"the last word of the text alone is longer than the model's context of {block_size} tokens"
    )


def find_query(labels, query, fallback=False):
    """Index of the last word equal to query (ignoring case); with fallback, the last word when
    there is none."""
    matches = [i for i, label in enumerate(labels) if label.lower() == query.strip().lower()]
    if not matches and not fallback:
        raise UserError(
            f"--query={query!r} is not a word of the text; its words are: {' '.join(labels)}"
        )
    return matches[-1] if matches else len(labels) - 1


def label_spans(text, labels):
    """(start, end) of each word label in text: labels are group_tokens' slices of text, in order,
    with only spaces between them."""
    spans, end = [], 0
    for label in labels:
        start = text.index(label, end)
        assert not text[end:start].strip(), (text, labels)
        end = start + len(label)
        spans.append((start, end))
    return spans


@dataclass(frozen=True)
class Attention:
    """The model's attention on one text, as tokens and as words."""

    text: str  # cut to the model's context
    ids: list
    token_spans: list  # (start, end) in text
    word_of_token: list
    labels: list  # the words
    tokens: np.ndarray  # (n_layer, n_head, T, T)
    words: np.ndarray  # (n_layer, n_head, W, W)
    warning: str  # "" unless the text was cut


def attend(model, tokenizer, text):
    """Run the model on text (cut to its context) and read every layer's and head's attention."""
    text, ids, warning = fit_to_context(tokenizer, text, model.config.block_size)
    spans = token_spans(tokenizer, ids, text)
    word_of_token, labels = group_tokens(text, spans, split_words(text))
    device = next(model.parameters()).device
    # (L, nh, T, T)
    attn = model.attention_maps(torch.tensor(ids, dtype=torch.long, device=device)).cpu().numpy()
    words = word_attention(attn, word_of_token, len(labels))  # (L, nh, W, W)
    return Attention(text, ids, spans, word_of_token, labels, attn, words, warning)


def read_texts(cfg, overrides):
    """The texts to show: --text, or the lines of --text_file (blank lines skipped)."""
    if not cfg.text_file:
        return [cfg.text]
    if "text" in overrides:
        raise UserError("give --text or --text_file, not both")
    try:
        with open(cfg.text_file, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise UserError(f"cannot read --text_file={cfg.text_file} ({reason})") from None
    if not texts:
        raise UserError(f"--text_file={cfg.text_file} has no text; write one text a line")
    if len(texts) > 1 and cfg.format != "html":
        raise UserError(
            f"--text_file={cfg.text_file} has {len(texts)} texts, but --format={cfg.format} shows "
            "one; use --format=html for several"
        )
    return texts


# --------------------------------------------------------------------------------------------------
# Pictures


def readable(labels):
    """Quote punctuation marks, which are barely visible as tick labels on their own."""
    return [label if any(c.isalnum() for c in label) else f"'{label}'" for label in labels]


def plot_heads(weights, labels, title, caption, path):
    """One heatmap per layer (rows) and head (columns); weights (n_layer, n_head, W, W)."""
    from matplotlib.figure import Figure

    n_layer, n_head, W, _ = weights.shape
    labels = readable(labels)
    cell = max(2.2, 0.16 * W)  # inches per heatmap: room for one label per word
    fig = Figure(figsize=(cell * n_head + 1.5, cell * n_layer + 1.8))
    axes = fig.subplots(n_layer, n_head, squeeze=False)
    fontsize = 7 if W <= 20 else 5
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            image = ax.imshow(weights[layer, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(
                range(W), labels if layer == n_layer - 1 else [], rotation=90, fontsize=fontsize
            )
            ax.set_yticks(range(W), labels if head == 0 else [], fontsize=fontsize)
    fig.suptitle(title, fontsize=12)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=9, wrap=True)
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_query(query_weights, labels, query_index, title, caption, path):
    """The query word's attention to itself and each earlier word, one row per layer; query_weights
    (n_layer, W)."""
    from matplotlib.figure import Figure

    shown = query_weights[:, : query_index + 1]  # later words get 0: leave them out
    n_layer, n_words = shown.shape
    fig = Figure(figsize=(max(6.0, 0.75 * n_words + 2.5), 0.55 * n_layer + 3.2))
    ax = fig.subplots()
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=max(shown.max(), 1e-9), aspect="auto")
    for layer in range(n_layer):
        for w in range(n_words):
            value = shown[layer, w]
            color = "white" if value > 0.6 * shown.max() else "black"
            ax.text(w, layer, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(
        range(n_words), readable(labels[: query_index + 1]), rotation=45, ha="right", fontsize=10
    )
    ax.set_yticks(range(n_layer), [f"layer {layer + 1}" for layer in range(n_layer)], fontsize=10)
    ax.set_title(title, fontsize=11)
    fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, path, dpi=110, bbox_inches="tight")


# --------------------------------------------------------------------------------------------------


def main(argv=None):
    overrides = parse_overrides(AttentionConfig(), sys.argv[1:] if argv is None else argv)
    cfg = replace(AttentionConfig(), **overrides)
    if cfg.format not in ("png", "json", "html"):
        raise UserError(f"--format={cfg.format} must be png, json or html")
    texts = read_texts(cfg, overrides)
    model, tokenizer = load_model(cfg.init_from, cfg.out_dir, pick_device(cfg.device), cfg.meta_pkl)
    if not model.has_attention:
        raise UserError(
            f"{cfg.out_dir} holds a recurrent model ({type(model).__name__}): "
            "it has no attention to show"
        )
    model_name = os.path.basename(
        os.path.normpath(cfg.out_dir if cfg.init_from == "resume" else cfg.init_from)
    )
    save_dir = cfg.save_dir or (cfg.out_dir if cfg.init_from == "resume" else ".")
    unit = "characters" if tokenizer.kind == "char" else "tokens"

    seen = []
    for text in texts:
        seen.append(attend(model, tokenizer, text))
        if seen[-1].warning:
            print(seen[-1].warning, file=sys.stderr)
    # a --query the user gave must be in every text; the default falls back to a text's last word
    fallback = cfg.format == "html" and "query" not in overrides
    queries = [find_query(a.labels, cfg.query, fallback) for a in seen]
    if cfg.format == "html":
        page = build_page(
            model_name,
            [
                PageText(
                    a.text,
                    a.token_spans,
                    label_spans(a.text, a.labels),
                    a.word_of_token,
                    a.tokens,
                    a.words,
                    query,
                    a.warning,
                )
                for a, query in zip(seen, queries, strict=True)
            ],
            unit,
        )
    make_save_dir(save_dir)
    if cfg.format == "html":
        path = os.path.join(save_dir, "attention.html")

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(page)

        atomic_write(path, write)
        written = [path]
    else:
        written = write_one(cfg.format, save_dir, model_name, unit, seen[0], queries[0])
    for path in written:
        print(f"wrote {path}")


def make_save_dir(save_dir):
    try:
        os.makedirs(save_dir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create --save_dir={save_dir} ({e.strerror}); choose another directory"
        ) from None


def write_one(fmt, save_dir, model_name, unit, a, query_index):
    """The two pictures (png) or the numbers (json) of one text; returns the paths written."""
    weights, labels = a.words, a.labels
    query_weights = weights[:, :, query_index, :].mean(axis=1)  # (L, W): averaged over heads
    n_head = weights.shape[1]
    aggregation = "sum over a word's key tokens, mean over its query tokens"
    if fmt == "json":
        path = os.path.join(save_dir, "attention.json")
        save_json(
            path,
            {
                "model": model_name,
                "text": a.text,
                "words": labels,
                "tokens_per_word": np.bincount(a.word_of_token, minlength=len(labels)).tolist(),
                "aggregation": aggregation,
                "query": labels[query_index],
                "query_index": query_index,
                "attention": np.round(weights, 6).tolist(),  # [layer][head][query word][key word]
                # [layer][key word], mean over heads
                "query_attention": np.round(query_weights, 6).tolist(),
            },
        )
        return [path]
    caption = (
        f"{len(a.ids)} {unit} grouped into {len(labels)} words: token weights aggregated to words "
        f"({aggregation}), so each row sums to 1."
    )
    heads_path = os.path.join(save_dir, "attention_heads.png")
    title = (
        f"{model_name}: attention of each word (rows) to each word (columns), every layer and head"
    )
    plot_heads(
        weights, labels, title, caption + " Upper triangle: future words, always 0.", heads_path
    )
    query = labels[query_index]
    query_path = os.path.join(save_dir, f"attention_{re.sub(r'[^0-9A-Za-z_-]+', '_', query)}.png")
    title = (
        f'{model_name}: how much "{query}" attends to each word so far (mean over {n_head} heads)'
    )
    own = (
        f"The last column is {query!r} itself: each of its {unit} attends to itself and the "
        "earlier ones in the word."
    )
    plot_query(query_weights, labels, query_index, title, f"{caption} {own}", query_path)
    return [heads_path, query_path]


if __name__ == "__main__":
    run_cli(main)
