"""attention_maps.py --format=html: one self-contained page (gptkit/attention_page.py). Its embedded
data is checked here in Python; what the page shows, in a real browser: headless Chromium (Debian's
`chromium`, `make browser`) driven by Playwright, offline, on a small trained long-range model."""

import json
import os
import re

import numpy as np
import pytest
from conftest import run_script

import attention_maps as attention
from gptkit.attention_page import MAX_WEIGHTS, SCALE, PageText, build_page, thousandths

CHROMIUM = "/usr/bin/chromium"
# on a machine without a network (and without a display): no first-run, sync or update checks
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def embedded(page):
    """The JSON the page embeds."""
    found = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', page)
    assert found, "no attention-data script in the page"
    return json.loads(found.group(1))


def causal_random_attention(shape, seed=0):
    """(..., T, T) rows of softmaxes over the past; the future exactly 0."""
    g = np.random.default_rng(seed)
    T = shape[-1]
    scores = 3 * g.normal(size=shape) + np.triu(np.full((T, T), -np.inf), 1)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


# --------------------------------------------------------------------------------------------------
# The page's data, in Python


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thousandths_sum_to_exactly_one_and_keep_the_future_zero(seed):
    weights = causal_random_attention((3, 2, 40, 40), seed)
    rounded = thousandths(weights)
    assert rounded.dtype.kind == "i" and np.all(rounded.sum(-1) == SCALE)
    assert np.all(np.triu(rounded, 1) == 0) and rounded.min() >= 0
    assert np.abs(rounded - weights * SCALE).max() < 1  # each entry moved by less than one unit


def test_the_page_embeds_every_layer_head_and_word(char_checkpoint, tmp_path, cli):
    text = "to be, or not to be"
    args = [f"--out_dir={char_checkpoint}", f"--save_dir={tmp_path}", f"--text={text}"]
    code, out, err = cli(attention.main, *args, "--query=or", "--format=html")
    assert code == 0, err
    path = tmp_path / "attention.html"
    assert out == f"wrote {path}\n" and not err
    page = path.read_text(encoding="utf-8")
    # self-contained: nothing to fetch
    assert not re.search(r"https?:|src=|<link|@import", page), "the page refers to something"
    data = embedded(page)
    assert (data["n_layer"], data["n_head"], data["scale"]) == (2, 2, SCALE)
    assert data["token_name"] == "characters" and len(data["texts"]) == 1
    shown = data["texts"][0]
    assert shown["text"] == text and not shown["warning"]
    words = [text[a:b] for a, b in shown["words"]["spans"]]
    assert words == ["to", "be", ",", "or", "not", "to", "be"] and shown["query"] == 3
    assert "".join(text[a:b] for a, b in shown["tokens"]["spans"]) == text  # every character once
    assert shown["word_of_token"] == np.repeat(np.arange(7), [2, 3, 1, 3, 4, 3, 3]).tolist()
    for unit, n in (("words", 7), ("tokens", len(text))):
        weights = shown[unit]["weights"]  # [layer][head][query]: the causal half
        assert len(weights) == 2 and all(len(layer) == 2 for layer in weights)
        rows = [row for layer in weights for head in layer for row in head]
        assert [len(row) for row in rows] == list(range(1, n + 1)) * 4
        assert all(sum(row) == SCALE for row in rows)  # each row sums to 1

    # the same numbers as --format=json's, to 3 digits
    code, _, err = cli(attention.main, *args, "--query=or", "--format=json")
    assert code == 0, err
    expected = np.array(json.loads((tmp_path / "attention.json").read_text())["attention"])
    for q in range(7):
        got = np.array([[head[q] for head in layer] for layer in shown["words"]["weights"]])
        np.testing.assert_allclose(got / SCALE, expected[:, :, q, : q + 1], atol=1e-3)


def test_several_texts_in_one_page_a_long_one_cut_with_its_warning(char_checkpoint, tmp_path, cli):
    texts = ["to be, or not to be", attention.NOTES_SENTENCE, "the cat sat"]
    (tmp_path / "texts.txt").write_text("\n".join(texts[:2]) + "\n\n" + texts[2] + "\n")
    code, out, err = cli(
        attention.main,
        f"--out_dir={char_checkpoint}",
        f"--save_dir={tmp_path}",
        f"--text_file={tmp_path / 'texts.txt'}",
        "--format=html",
    )
    assert code == 0, err
    data = embedded((tmp_path / "attention.html").read_text(encoding="utf-8"))
    first, notes, last = data["texts"]
    # the notes' sentence has 70 characters, the model's context 32: cut as the pictures cut it
    assert notes["text"] == "was next to the dog, jumped"
    assert notes["warning"].startswith("warning: the text has 70 tokens") and not first["warning"]
    assert err.splitlines() == [notes["warning"]]
    assert (first["text"], last["text"]) == (texts[0], texts[2])
    # the default query ("jumped") where a text has it, else the text's last word
    assert (first["query"], notes["query"], last["query"]) == (6, 6, 2)


def test_a_text_cannot_close_the_script_that_holds_it():
    text = "a</script><b>"
    T = len(text)
    attn = causal_random_attention((1, 1, T, T))
    page = build_page(
        "m<x>",
        [
            PageText(
                text,
                [(i, i + 1) for i in range(T)],
                [(0, T)],
                [0] * T,
                attn,
                np.ones((1, 1, 1, 1)),
                0,
            )
        ],
    )
    assert page.count("</script>") == 2 and "<title>m&lt;x&gt;: attention</title>" in page
    assert embedded(page)["texts"][0]["text"] == text


@pytest.mark.parametrize(
    "case",
    [
        "query_missing",
        "too_many_weights",
        "text_and_file",
        "png_of_two",
        "no_checkpoint",
        "no_file",
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(case, char_checkpoint, tmp_path, cli):
    texts = tmp_path / "texts.txt"
    texts.write_text("to be, or not to be\nthe cat sat\n")
    save = tmp_path / "out"
    args = [f"--out_dir={char_checkpoint}", f"--save_dir={save}", "--format=html"]
    expected = {
        "query_missing": "--query='be' is not a word of the text; its words are: the cat sat",
        "too_many_weights": f"more than one page holds ({MAX_WEIGHTS:,}, about 1 MB)",
        "text_and_file": "error: give --text or --text_file, not both",
        "png_of_two": "but --format=png shows one; use --format=html for several",
        "no_checkpoint": "error: no checkpoint at",
        "no_file": "error: cannot read --text_file=",
    }[case]
    if case == "query_missing":  # a --query given must be in every text
        args += [f"--text_file={texts}", "--query=be"]
    elif case == "too_many_weights":  # 150 texts of 31 characters: ~2,200 weights each
        texts.write_text("to be, or not to be: that is it\n" * 150)
        args += [f"--text_file={texts}"]
    elif case == "text_and_file":
        args += [f"--text_file={texts}", "--text=the cat"]
    elif case == "png_of_two":
        args = [f"--out_dir={char_checkpoint}", f"--save_dir={save}", f"--text_file={texts}"]
    elif case == "no_checkpoint":
        args[0] = f"--out_dir={tmp_path}"
    else:
        args += [f"--text_file={tmp_path / 'missing.txt'}"]
    code, out, err = cli(attention.main, *args)
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not save.exists()


# --------------------------------------------------------------------------------------------------
# In a real browser: headless Chromium, offline


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium context with a new empty profile and no network; skips (one line) without one."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's (apt)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no playwright: pip install -r requirements-dev.txt")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium_profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            offline=True,
            viewport={"width": 1100, "height": 800},
        )
        yield context
        context.close()


def open_page(browser, path):
    """The page opened from disk; every request it makes and every script error, recorded."""
    page = browser.new_page()
    page.requests, page.errors = [], []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(path.as_uri())
    return page


def shown(page):
    """(text, weight) of every word (or token) on the page, as the page shows them now."""
    units = page.query_selector_all("#sentence .unit")
    return [(u.text_content(), float(u.get_attribute("data-weight"))) for u in units]


def thumb(layer, head):
    return f".thumb[data-layer='{layer}'][data-head='{head}']"


@pytest.fixture(scope="module")
def long_range_run(tmp_path_factory):
    """
    config/train_long_range.py on the README's corpus (seed 1337, the same train.bin; a small val),
    shortened to 1,000 iterations at lr 4e-3, enough for a head to find the subject (the shipped
    1,500 are tests/test_long_range.py's); about a minute on one thread.
    """
    data = tmp_path_factory.mktemp("long_range")
    run_script(
        "data/long_range/prepare.py",
        f"--out_dir={data}",
        "--seed=1337",
        "--train_sentences=20000",
        "--val_sentences=20",
    )
    out = tmp_path_factory.mktemp("long_range_run")
    run_script(
        "train.py",
        "config/train_long_range.py",
        f"--dataset={data}",
        f"--out_dir={out}",
        "--progress=False",
        "--learning_rate=4e-3",
        "--max_iters=1000",
        "--lr_decay_iters=1000",
        "--eval_interval=1000",
        "--eval_iters=2",
    )
    return out


def test_in_a_browser_jumped_finds_cat_in_the_head_that_found_it(
    browser, long_range_run, tmp_path, cli
):
    code, out, err = cli(
        attention.main, f"--out_dir={long_range_run}", f"--save_dir={tmp_path}", "--format=html"
    )
    assert code == 0, err
    path = tmp_path / "attention.html"
    data = embedded(path.read_text(encoding="utf-8"))
    page = open_page(browser, path)
    words = [w for w, _ in shown(page)]
    assert " ".join(words) == attention.NOTES_SENTENCE.replace(",", " ,")
    jumped, cat, mat, dog = (words.index(w) for w in ("jumped", "cat", "mat", "dog"))

    # every layer and head (and each layer's mean) is a click away; hovering "jumped" after another
    # word shows its row, and the numbers on the page are the embedded ones
    looks = {}
    for layer in range(data["n_layer"]):
        for head in [*range(data["n_head"]), -1]:
            page.click(thumb(layer, head))
            assert page.get_attribute(thumb(layer, head), "class") == "thumb selected"
            page.hover("#sentence .unit >> nth=0")
            assert shown(page)[jumped][1] == 0  # "the" does not see the future
            page.hover(f"#sentence .unit >> nth={jumped}")
            weights = [w for _, w in shown(page)]
            assert abs(sum(weights) - 1) < 5e-3, weights
            if head >= 0:
                stored = data["texts"][0]["words"]["weights"][layer][head][jumped]
                np.testing.assert_allclose(weights, np.array(stored) / SCALE, atol=6e-4)
                looks[layer, head] = weights
    # the head that weighs one earlier word most from "jumped" weighs "cat", far above the others
    layer, head = max(looks, key=lambda lh: max(looks[lh][:jumped]))
    weights = looks[layer, head]
    assert int(np.argmax(weights[:jumped])) == cat, (layer, head, weights)
    assert weights[cat] > 0.5 > 10 * max(weights[mat], weights[dog]), weights

    page.click(thumb(layer, head))
    page.hover(f"#sentence .unit >> nth={jumped}")
    assert page.text_content("#readout").startswith(
        f'"jumped" (layer {layer + 1}, head {head + 1}) attends to: cat '
    )
    screenshot = page.screenshot(path=tmp_path / "page.png", full_page=True)
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(screenshot) > 20_000
    assert page.errors == [] and all(url.startswith("file://") for url in page.requests)
    page.close()


def test_in_a_browser_tokens_and_texts(char_checkpoint, browser, tmp_path, cli):
    texts = ["to be, or not to be", attention.NOTES_SENTENCE]
    (tmp_path / "texts.txt").write_text("\n".join(texts))
    code, _, err = cli(
        attention.main,
        f"--out_dir={char_checkpoint}",
        f"--save_dir={tmp_path}",
        f"--text_file={tmp_path / 'texts.txt'}",
        "--format=html",
    )
    assert code == 0, err
    page = open_page(browser, tmp_path / "attention.html")
    assert page.is_hidden("#warning")
    assert [w for w, _ in shown(page)] == ["to", "be", ",", "or", "not", "to", "be"]
    # the default query, the last word, until a click keeps another one
    assert page.get_attribute("#sentence .unit >> nth=6", "class") == "unit query"
    page.click("#sentence .unit >> nth=3")
    page.mouse.move(0, 0)  # off the text: the clicked word stays
    weights = [w for _, w in shown(page)]
    assert weights[4:] == [0, 0, 0] and abs(sum(weights) - 1) < 5e-3
    assert page.text_content("#readout").startswith('"or" (layer 2, mean of 2 heads)')

    page.check("#show-tokens")  # the model's own tokens: characters; the query becomes its last
    tokens = shown(page)
    assert "".join(t for t, _ in tokens) == texts[0]
    assert [t for t, w in tokens if w > 0][-1] == "r"  # "or"'s last character; nothing after it
    page.hover("#sentence .unit >> nth=1")
    assert [w for _, w in shown(page)][2:] == [0] * (len(texts[0]) - 2)

    page.click("#texts button >> nth=1")  # the second text, cut to the context, says so
    assert page.is_visible("#warning")
    assert "dropping its first words" in page.text_content("#warning")
    assert "".join(t for t, _ in shown(page)) == "was next to the dog, jumped"
    assert page.errors == [] and all(url.startswith("file://") for url in page.requests)
    page.close()
