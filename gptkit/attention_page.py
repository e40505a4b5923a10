"""
One self-contained HTML page of a GPT's attention, for any number of texts: what attention_maps.py
--format=html writes. Pure: texts, their token and word spans and their attention weights in, one
HTML string out (inline CSS and JavaScript, the weights embedded as JSON; no network, no server).

On the page: the text as words (or, toggled, as the model's tokens); hovering a word shades every
word by how much it attends to it, in the layer and head picked in a grid of thumbnails (one per
layer and head, and the mean of each layer's heads); clicking a word keeps it. Every word element
carries its current weight in a data-weight attribute, so a test can read what the page shows.

Size: weights are stored in thousandths, each row rounded so it still sums to exactly 1000, and
only the causal half (a query's row up to itself); a page holds at most MAX_WEIGHTS of them, about
1 MB.
"""

import html
import json
from dataclasses import dataclass

import numpy as np

from gptkit.base import UserError

SCALE = 1000  # weights in thousandths: 3 digits, as the pictures label them
# at most ~3 bytes a weight in JSON: about 1 MB (docs/attention.md measures pages)
MAX_WEIGHTS = 300_000


@dataclass(frozen=True)
class PageText:
    """One text of the page, as the model saw it."""

    text: str
    token_spans: list  # (start, end) of each token in text
    word_spans: list  # (start, end) of each word in text
    word_of_token: list  # the word each token belongs to
    token_attention: np.ndarray  # (n_layer, n_head, T, T), rows sum to 1
    word_attention: np.ndarray  # (n_layer, n_head, W, W), rows sum to 1
    query: int  # the word selected when the page opens
    warning: str = ""  # shown above the text (e.g. its first words were cut to fit the context)


def thousandths(weights):
    """Rows of weights (..., n) as integers that sum to exactly SCALE: floors, plus one for the
    largest remainders (Hamilton's method), so an entry that was 0 (the future) stays 0."""
    weights = np.asarray(weights, dtype=np.float64)
    scaled = weights / weights.sum(-1, keepdims=True) * SCALE
    floor = np.floor(scaled)
    missing = np.rint(SCALE - floor.sum(-1, keepdims=True))  # (..., 1)
    order = np.argsort(floor - scaled, axis=-1, kind="stable")  # the largest remainder first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(scaled.shape[-1]), order.shape), -1)
    return (floor + (rank < missing)).astype(int)


def causal_rows(weights):
    """(n_layer, n_head, T, T) -> nested lists [layer][head][query]: the query's row up to itself,
    in thousandths."""
    rows = thousandths(weights).tolist()
    return [[[row[: q + 1] for q, row in enumerate(head)] for head in layer] for layer in rows]


def stored_weights(texts):
    """How many weights the page stores for these texts: the causal half, tokens and words."""
    n = 0
    for t in texts:
        n_layer, n_head = t.token_attention.shape[:2]
        for k in (len(t.token_spans), len(t.word_spans)):
            n += n_layer * n_head * k * (k + 1) // 2
    return n


def page_data(model_name, texts, token_name):
    """What the page embeds: plain JSON, documented by its keys."""
    shapes = {a.shape[:2] for t in texts for a in (t.token_attention, t.word_attention)}
    assert len(shapes) == 1, f"every text's attention must have one (n_layer, n_head): {shapes}"
    for t in texts:
        T, W = len(t.token_spans), len(t.word_spans)
        assert t.token_attention.shape[2:] == (T, T), (t.token_attention.shape, T)
        assert t.word_attention.shape[2:] == (W, W), (t.word_attention.shape, W)
        assert len(t.word_of_token) == T, (len(t.word_of_token), T)
        assert 0 <= t.query < W, (t.query, W)
    n_layer, n_head = shapes.pop()
    return {
        "model": model_name,
        "n_layer": n_layer,
        "n_head": n_head,
        "token_name": token_name,  # "characters" or "tokens": what the toggle shows
        "scale": SCALE,  # weights are integers: divide by it
        "texts": [
            {
                "text": t.text,
                "warning": t.warning,
                "query": t.query,
                "word_of_token": list(t.word_of_token),
                # spans index text; weights[layer][head][query] has query + 1 entries (the causal
                # half), summing to scale
                "words": {
                    "spans": [list(s) for s in t.word_spans],
                    "weights": causal_rows(t.word_attention),
                },
                "tokens": {
                    "spans": [list(s) for s in t.token_spans],
                    "weights": causal_rows(t.token_attention),
                },
            }
            for t in texts
        ],
    }


def build_page(model_name, texts, token_name="tokens"):
    """The HTML page (a string) for texts (PageText); a UserError if they need more than
    MAX_WEIGHTS."""
    if not texts:
        raise UserError("no text to show; give --text=... or --text_file=...")
    needed = stored_weights(texts)
    if needed > MAX_WEIGHTS:
        raise UserError(
            f"these {len(texts)} text(s) need {needed:,} attention weights, more than one page "
            f"holds ({MAX_WEIGHTS:,}, about 1 MB); give fewer or shorter texts"
        )
    data = json.dumps(page_data(model_name, texts, token_name), separators=(",", ":"))
    # inside <script>, "</script>" would end the element: JSON may spell "<" as \u003c
    data = data.replace("<", "\\u003c")
    title = html.escape(f"{model_name}: attention")
    return PAGE.replace("__TITLE__", title).replace("__DATA__", data)


# --------------------------------------------------------------------------------------------------
# The page: plain DOM, no library, nothing fetched

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 72em;
  color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
.help, #readout, .warning { color: #555; font-size: .9em; }
.warning { color: #9a3412; background: #fff7ed; padding: .3em .6em; border-radius: 4px; }
nav button { font: inherit; margin: 0 .3em .3em 0; padding: .2em .6em; border: 1px solid #bbb;
  border-radius: 4px; background: #fafafa; cursor: pointer; max-width: 24em; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
nav button.selected, .thumb.selected { border-color: #ea580c; box-shadow: 0 0 0 2px #ea580c; }
#sentence { font-size: 1.45em; line-height: 2.3; margin: .6em 0; white-space: pre-wrap; }
.unit { padding: .15em .1em; border-radius: 4px; cursor: pointer; position: relative; }
.unit::after { content: attr(data-label); position: absolute; left: 0; right: 0; top: 100%;
  font-size: .5em; line-height: 1.2; text-align: center; color: #1e40af; }
.tokens .unit { border: 1px solid #ccc; margin: 0 1px; }
.tokens .unit::after { content: none; }
.unit.future { color: #aaa; }
.unit.query { outline: 2px solid #ea580c; }
#grid { border-collapse: collapse; margin-top: .8em; }
#grid th { font-weight: normal; color: #555; font-size: .85em; padding: 0 .4em; }
.thumb { border: 1px solid #ccc; border-radius: 4px; background: #fff; padding: 3px; margin: 2px;
  cursor: pointer; font: 12px system-ui, sans-serif; color: #333; }
.thumb canvas { display: block; width: 84px; height: 84px; image-rendering: pixelated; }
.thumb .top { display: block; max-width: 84px; overflow: hidden; white-space: nowrap; }
</style>
</head>
<body>
<h1 id="title"></h1>
<p class="help">Hover a word to see what it attends to (shading: its weight on each word, against
the strongest); click it to keep it. Click a thumbnail to pick a layer and head, or a layer's mean
over its heads. Each thumbnail shows every word (rows) attending to every word (columns), the
selected word's row in orange, and under it the word that row weighs most. Word weights are the sum
over a word's tokens (keys), averaged over its tokens (queries): each row sums to 1.</p>
<nav id="texts"></nav>
<p class="warning" id="warning" hidden></p>
<label><input type="checkbox" id="show-tokens"> show the model's <span id="token-name"></span>
</label>
<div id="sentence"></div>
<div id="readout"></div>
<table id="grid"></table>
<script type="application/json" id="attention-data">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("attention-data").textContent);
const MEAN = -1;  // the "head" that averages a layer's heads
const state = {
  text: 0, tokens: false,  // the text shown, as words or as tokens
  layer: data.n_layer - 1, head: MEAN,
  query: 0, hover: null,  // the unit clicked, and the one under the mouse (it wins; null: none)
};

function view() {  // the selected text, as words or tokens
  const t = data.texts[state.text];
  return state.tokens ? t.tokens : t.words;
}

function row(layer, head, q) {  // weights of unit q on units 0..n-1 (0 past q), in [0, 1]
  const heads = head === MEAN ? [...Array(data.n_head).keys()] : [head];
  const out = new Array(view().spans.length).fill(0);
  for (const h of heads) {
    view().weights[layer][h][q].forEach((w, k) => { out[k] += w / data.scale / heads.length; });
  }
  return out;
}

function label(k, quoted = state.tokens) {  // unit k's text; a token is quoted: it may be a space
  const [start, end] = view().spans[k];
  const text = data.texts[state.text].text.slice(start, end);
  return quoted ? JSON.stringify(text) : text;
}

function headName(layer, head) {
  const which = head === MEAN ? `mean of ${data.n_head} heads` : `head ${head + 1}`;
  return `layer ${layer + 1}, ${which}`;
}

function showText() {  // lay the text out as units, the gaps between them as plain text
  const t = data.texts[state.text];
  const box = document.getElementById("sentence");
  box.replaceChildren();
  box.className = state.tokens ? "tokens" : "words";
  let end = 0;
  view().spans.forEach(([start, stop], k) => {
    box.append(t.text.slice(end, start));
    const span = document.createElement("span");
    span.className = "unit";
    span.dataset.index = k;
    span.textContent = t.text.slice(start, stop);
    span.addEventListener("mouseenter", () => { state.hover = k; update(); });
    span.addEventListener("click", () => { state.query = k; update(); });
    box.append(span);
    end = stop;
  });
  box.append(t.text.slice(end));
  const warning = document.getElementById("warning");
  warning.textContent = t.warning;
  warning.hidden = !t.warning;
  document.querySelectorAll("#texts button").forEach((b, i) => {
    b.classList.toggle("selected", i === state.text);
  });
  update();
}

function draw(canvas, layer, head, query) {  // one heatmap; the query's row in orange
  const n = view().spans.length;
  canvas.width = canvas.height = n;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(n, n);
  for (let q = 0; q < n; q++) {
    const weights = row(layer, head, q);
    for (let k = 0; k < n; k++) {
      const w = Math.sqrt(weights[k]);  // square root: small weights stay visible
      const i = 4 * (q * n + k);
      const rgb = q === query ? [255, 255 - 167 * w, 255 - 243 * w]
                              : [255 - 218 * w, 255 - 156 * w, 255 - 20 * w];
      image.data.set([...rgb, 255], i);
    }
  }
  ctx.putImageData(image, 0, 0);
}

function update() {  // everything that follows the query, the layer and the head
  const query = state.hover ?? state.query;
  const weights = row(state.layer, state.head, query);
  const strongest = Math.max(...weights);
  document.querySelectorAll("#sentence .unit").forEach((span, k) => {
    const w = weights[k];
    span.dataset.weight = w.toFixed(3);
    span.dataset.label = w >= 0.01 ? w.toFixed(2) : "";  // printed under the word
    span.classList.toggle("query", k === query);
    span.classList.toggle("future", k > query);
    const alpha = strongest > 0 ? w / strongest : 0;
    span.style.background = `rgba(37, 99, 235, ${alpha.toFixed(3)})`;
    span.style.color = alpha > 0.55 ? "#fff" : "";
  });
  // the strongest first, down to what shows as 0.001
  const ranked = weights.map((w, k) => [w, k]).filter(([w]) => w >= 0.0005);
  ranked.sort((a, b) => b[0] - a[0]);
  document.getElementById("readout").textContent =
    `${label(query, true)} (${headName(state.layer, state.head)}) attends to: ` +
    ranked.slice(0, 6).map(([w, k]) => `${label(k)} ${w.toFixed(3)}`).join(", ");
  document.querySelectorAll(".thumb").forEach((thumb) => {
    const layer = Number(thumb.dataset.layer), head = Number(thumb.dataset.head);
    thumb.classList.toggle("selected", layer === state.layer && head === state.head);
    draw(thumb.querySelector("canvas"), layer, head, query);
    const w = row(layer, head, query);
    const top = w.indexOf(Math.max(...w));
    thumb.querySelector(".top").textContent = `${label(top)} ${w[top].toFixed(2)}`;
  });
}

function setTokens(on) {  // keep the query: a word's last token, a token's word
  const t = data.texts[state.text];
  if (on && !state.tokens) state.query = t.word_of_token.lastIndexOf(state.query);
  if (!on && state.tokens) state.query = t.word_of_token[state.query];
  state.tokens = on;
  state.hover = null;
  showText();
}

function selectText(i) {
  state.text = i;
  state.query = data.texts[i].query;
  if (state.tokens) state.query = data.texts[i].word_of_token.lastIndexOf(state.query);
  state.hover = null;
  showText();
}

document.getElementById("title").textContent = `${data.model}: what each word attends to`;
document.getElementById("token-name").textContent = data.token_name;
const toggle = document.getElementById("show-tokens");
toggle.addEventListener("change", () => setTokens(toggle.checked));
document.getElementById("sentence").addEventListener("mouseleave", () => {
  state.hover = null;
  update();
});
data.texts.forEach((t, i) => {
  const button = document.createElement("button");
  button.textContent = t.text;
  button.title = t.text;
  button.addEventListener("click", () => selectText(i));
  document.getElementById("texts").append(button);
});
const grid = document.getElementById("grid");
const header = grid.insertRow();
header.append(document.createElement("th"));
for (let h = 0; h <= data.n_head; h++) {
  const th = document.createElement("th");
  th.textContent = h < data.n_head ? `head ${h + 1}` : "mean";
  header.append(th);
}
for (let layer = 0; layer < data.n_layer; layer++) {
  const tr = grid.insertRow();
  const th = document.createElement("th");
  th.textContent = `layer ${layer + 1}`;
  tr.append(th);
  for (const head of [...Array(data.n_head).keys(), MEAN]) {
    const thumb = document.createElement("button");
    thumb.className = "thumb";
    thumb.dataset.layer = layer;
    thumb.dataset.head = head;
    thumb.title = headName(layer, head);
    thumb.append(document.createElement("canvas"), document.createElement("span"));
    thumb.lastChild.className = "top";
    thumb.addEventListener("click", () => { state.layer = layer; state.head = head; update(); });
    tr.insertCell().append(thumb);
  }
}
selectText(0);
</script>
</body>
</html>
"""
