"""data/translate and its scoring: the French rules (the notes' own sentence comes out as the notes'
French), the corpus's promises (seeded, val's lengths up to twice train's, no val source in train),
the three configs (matched parameters, the GPT's context holds every val pair, each trains), and
long_range.py's translation table and pictures on tiny checkpoints."""

import json
from collections import Counter

import pytest
import torch
from conftest import ONE_THREAD, ROOT, run_script

import long_range
from data.translate.corpus import (
    NOTES_FRENCH,
    NOTES_SENTENCE,
    bucket,
    corpus,
    line,
    reverse_translate,
    translate,
    words_of,
)
from gptkit.configurator import parse_args
from gptkit.train_config import TrainConfig, new_model
from recurrent import GRULM

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GENERATOR = {"seed": 3, "train_pairs": 400, "val_per_bucket": 4, "max_words": 10}
CONFIGS = ("train_translate.py", "train_translate_gru.py", "train_translate_gru_attention.py")
# the default corpus (python data/translate/prepare.py): its BPE's vocabulary, and the tokens of
# its longest val pair
VOCAB, LONGEST_VAL_PAIR = 591, 85


# --------------------------------------------------------------------------------------------------
# The French rules


@pytest.mark.parametrize(
    "english, french",
    [
        (NOTES_SENTENCE, NOTES_FRENCH),
        # the adjective after its noun, agreeing with it; "assise" agrees with the subject behind it
        (
            "the black cow that was sitting on the old tree, jumped",
            "la vache noire qui était assise sur l'arbre âgé, a sauté",
        ),
        # two words for one, one for two; de + le -> du, de + la stays
        (
            "the big white dog, which was chasing the mouse, who was next to the duck and the "
            "frog, jumped".replace(" and the frog", ""),
            "le chien énorme et blanc, qui chassait la souris, qui était à côté du canard, a sauté",
        ),
        (
            "the owl that was sleeping near the fence, jumped",
            "le hibou qui dormait près de la clôture, a sauté",
        ),
    ],
)
def test_translate_by_rule_and_not_word_by_word(english, french):
    assert translate(english) == french
    assert len(words_of(french)) != len(words_of(english)) or english != NOTES_SENTENCE


def test_the_notes_sentence_is_the_notes_french_up_to_case():
    notes = "Le chat qui était assis sur le tapis, qui était à côté du chien, a sauté"
    assert translate(NOTES_SENTENCE) == notes.lower()


def test_the_control_translates_each_word_and_reverses():
    assert reverse_translate("black cat tree") == "arbre chat noir"


# --------------------------------------------------------------------------------------------------
# The corpus


@pytest.mark.parametrize("task", ["notes", "reverse"])
def test_corpus_lengths_buckets_and_held_out_val(task):
    train, val = corpus(task, **GENERATOR)
    assert (train, val) == corpus(task, **GENERATOR)  # seeded
    assert corpus(task, **{**GENERATOR, "seed": 4})[0] != train
    n = GENERATOR["max_words"]
    assert len(train) == GENERATOR["train_pairs"]
    assert max(len(words_of(s)) for s, _ in train) <= n
    assert not {s for s, _ in val} & {s for s, _ in train}
    buckets = Counter(bucket(len(words_of(s))) for s, _ in val)
    low = 8 if task == "notes" else 1
    assert set(buckets) == {bucket(k) for k in range(low, 2 * n + 1)}  # every length up to 2N
    assert all(count >= GENERATOR["val_per_bucket"] for count in buckets.values())
    if task == "notes":
        assert val[0] == (NOTES_SENTENCE, NOTES_FRENCH)
        assert all(t == translate(s) for s, t in train[:50] + val)
    else:
        assert all(t == reverse_translate(s) for s, t in train[:50] + val)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("translate_small")
    run_script(
        "data/translate/prepare.py",
        f"--out_dir={out}",
        *[f"--{key}={value}" for key, value in GENERATOR.items()],
    )
    return out


def test_prepare_writes_lines_and_the_longest_val_pair(prepared):
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["generator"] == {"task": "notes", **GENERATOR}
    _, val = corpus(**GENERATOR)
    from gptkit.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(meta, prepared)
    assert meta["longest_val_pair_tokens"] == max(len(tokenizer.encode(line(*p))) for p in val)
    assert tokenizer.decode(tokenizer.encode(line(*val[0]))) == line(NOTES_SENTENCE, NOTES_FRENCH)


# --------------------------------------------------------------------------------------------------
# The three configs


def test_the_three_configs_match_parameters_and_the_gpt_holds_every_val_pair():
    configs = [parse_args(TrainConfig(), [str(ROOT / "config" / name)]) for name in CONFIGS]
    gpt, gru, gru_attention = (new_model(c, vocab_size=VOCAB, sdpa=False) for c in configs)
    assert type(gru) is GRULM and not gru.config.attention and gru_attention.config.attention
    counts = [m.get_num_params() for m in (gpt, gru, gru_attention)]
    assert max(counts) / min(counts) < 1.05, counts
    assert gpt.config.block_size >= LONGEST_VAL_PAIR
    assert {c.dataset for c in configs} == {"translate"}


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    """Each config, trained 3 steps on the small corpus at a tiny width: out_dirs in CONFIGS'
    order."""
    root = tmp_path_factory.mktemp("translate_runs")
    outs = [root / name.removesuffix(".py") for name in CONFIGS]
    for name, out in zip(CONFIGS, outs, strict=True):
        run_script(
            "train.py",
            f"config/{name}",
            f"--dataset={prepared}",
            f"--out_dir={out}",
            "--n_embd=16",
            "--max_iters=3",
            "--eval_iters=1",
            "--eval_interval=3",
            "--batch_size=4",
            "--progress=False",
            env=ONE_THREAD,
        )
    return outs


def test_each_config_trains(runs):
    kinds = [torch.load(o / "ckpt.pt", weights_only=True)["model_args"] for o in runs]
    assert [k.get("model_type", "gpt") for k in kinds] == ["gpt", "gru", "gru"]
    assert [k.get("attention", False) for k in kinds] == [False, False, True]


# --------------------------------------------------------------------------------------------------
# The scorer


def test_translation_scores():
    assert long_range.translation_scores("le chat, a sauté", "le chat, a sauté") == (True, 1.0)
    assert long_range.translation_scores("le chien, a", "le chat, a sauté") == (False, 0.6)


def test_translate_greedy_is_each_models_greedy_line(runs):
    for out in runs:
        _, model, tokenizer, generator = long_range.load(str(out), "cpu")
        model.eval()
        _, val = corpus(**generator)
        sources = [s for s, _ in val[:6]]
        got = long_range.translate_greedy(model, tokenizer, sources, batch_size=2)
        for source, text in zip(sources, got, strict=True):
            ids = torch.tensor([tokenizer.encode(f"{source} =")])
            budget = 2 * ids.shape[1] + 8  # the scorer's: at most twice the prompt, plus a few
            if long_range.kind_of(model) == "GPT":
                budget = min(budget, model.config.block_size - ids.shape[1])
            written = model.generate(ids, budget, temperature=0)
            by_hand = tokenizer.decode(written[0, ids.shape[1] :].tolist()).split("\n")[0].strip()
            assert text == by_hand


def test_the_table_and_the_pictures(runs, tmp_path, cli):
    plot, maps = tmp_path / "by_length.png", tmp_path / "attention.png"
    code, out, err = cli(
        long_range.main,
        f"--out_dirs={','.join(map(str, runs))}",
        "--plot=True",
        f"--plot_path={plot}",
        f"--maps_path={maps}",
    )
    assert code == 0, err
    table = json.loads(out)
    labels = [o.name for o in runs]
    assert [table["models"][k]["kind"] for k in labels] == ["GPT", "GRU", "GRU + attention"]
    assert list(table["by_length"]) == [bucket(k) for k in range(8, 21, 5)]
    for rows in [*table["by_length"].values(), table["all"]]:
        assert set(rows) == set(labels)
        assert all(0 <= r["exact"] <= r["word_accuracy"] <= 1 for r in rows.values())
    assert sum(table["by_length"][b][labels[0]]["n"] for b in table["by_length"]) == 1 + 3 * 4
    assert set(table["notes_sentence"]) == set(labels)
    attention = table["attention"]
    assert attention["layer"] in (1, 2) and 0 <= attention["sauté -> jumped"] <= 1
    assert plot.stat().st_size > 10_000 and maps.stat().st_size > 10_000
