"""long_range.py, the GPT-against-GRU measurement: its table from two small checkpoints whose
answers are known in advance (one always says "meowing", the other always one other sound), so every
number of it follows from the sentences."""

import json
import shutil
from collections import Counter
from dataclasses import asdict

import pytest
import torch
from conftest import run_script

import long_range
from data.long_range.corpus import SOUNDS, corpus, pairs_split, probe
from gptkit.tokenizer import load_tokenizer
from model import GPT, GPTConfig
from recurrent import GRULM, GRUConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GENERATOR = {"seed": 5, "train_sentences": 3000, "val_sentences": 30}
GPT_CONTEXT = 40  # shorter than val's longest sentences: those are beyond the GPT's reach
PROBES = 3
# the GRU's one answer: the sound of the held-out pairs' most frequent subject after the cat (the
# GPT's)
GRU_SUBJECT = Counter(
    subject for subject, _ in pairs_split(GENERATOR["seed"])[1] if subject != "cat"
).most_common(1)[0][0]
GRU_SOUND = SOUNDS[GRU_SUBJECT]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("long_range_small")
    run_script(
        "data/long_range/prepare.py",
        f"--out_dir={out}",
        *[f"--{key}={value}" for key, value in GENERATOR.items()],
    )
    return out


def save_run(prepared, out_dir, model_type, model):
    """An out_dir as train.py leaves it: ckpt.pt (model_args with model_type), meta.json and the
    tokenizer file."""
    out_dir.mkdir()
    model_args = {"model_type": model_type, **asdict(model.config)}
    torch.save(
        {"model": model.state_dict(), "model_args": model_args, "iter_num": 0}, out_dir / "ckpt.pt"
    )
    for name in ("meta.json", "tokenizer.json"):
        shutil.copy(prepared / name, out_dir / name)
    return out_dir


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    """(GPT out_dir, GRU out_dir): a GPT that always answers "meowing" and a GRU that always answers
    GRU_SOUND."""
    meta = json.loads((prepared / "meta.json").read_text())
    tokenizer = load_tokenizer(meta, prepared)
    meowing, gru_sound = (tokenizer.encode(" " + word)[0] for word in ("meowing", GRU_SOUND))
    root = tmp_path_factory.mktemp("runs")
    with torch.no_grad():
        gpt = GPT(
            GPTConfig(
                block_size=GPT_CONTEXT,
                vocab_size=meta["vocab_size"],
                n_layer=1,
                n_head=1,
                n_embd=8,
                tie_weights=False,
            )
        )
        gpt.transformer.ln_f.weight.zero_()  # ln_f's output is its bias: ones, whatever the input
        gpt.transformer.ln_f.bias.fill_(1.0)
        gpt.lm_head.weight.zero_()
        gpt.lm_head.weight[meowing] = 1.0
        gru = GRULM(
            GRUConfig(
                block_size=32, vocab_size=meta["vocab_size"], n_layer=1, n_embd=8, tie_weights=False
            )
        )
        for p in gru.rnn.parameters():
            p.zero_()
        gru.rnn.bias_ih_l0[8:16] = -20.0  # update gate ~0: the state is the candidate...
        gru.rnn.bias_ih_l0[16:] = 5.0  # ...tanh(5) ~ 1 in every unit, whatever the input
        gru.lm_head.weight.zero_()
        gru.lm_head.weight[gru_sound] = 1.0
    return save_run(prepared, root / "gpt", "gpt", gpt), save_run(
        prepared, root / "gru", "gru", gru
    )


def expected(sentences, sound, context=None):
    """long_range.score's {n, accuracy} for a model that always answers `sound` and sees `context`
    tokens (None: all)."""
    reach = [s for s in sentences if context is None or s.verb + 1 <= context]
    right = sum(SOUNDS[s.words[s.subject]] == sound for s in reach)
    result = {"n": len(reach), "accuracy": round(right / len(reach), 4) if reach else None}
    if len(reach) < len(sentences):
        result["n_beyond_context"] = len(sentences) - len(reach)
    return result


def test_the_table_is_what_the_sentences_say_it_must_be(runs, cli, tmp_path):
    gpt_dir, gru_dir = runs
    png = tmp_path / "docs" / "plot.png"
    argv = [
        f"--out_dirs={gpt_dir},{gru_dir}",
        f"--probe_sentences={PROBES}",
        "--plot=True",
        f"--plot_path={png}",
    ]
    code, out, err = cli(long_range.main, *argv)
    assert code == 0, err
    table = json.loads(out)
    # the same table again: seeded sentences, deterministic models
    assert cli(long_range.main, *argv)[1] == out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    train, val = corpus(**GENERATOR)
    sets = {"val": val}
    sets |= {
        f"longer_{k}": probe(GENERATOR["seed"], PROBES, [k], salt="longer")
        for k in long_range.LONGER_CLAUSES
    }
    sets |= {
        f"all_animals_{k}": probe(GENERATOR["seed"], PROBES, [k], all_animals=True, salt="animals")
        for k in long_range.ANIMAL_CLAUSES
    }
    everything = [s for sentences in sets.values() for s in sentences]
    animals = [
        s for name, sentences in sets.items() if name.startswith("all_animals") for s in sentences
    ]
    mixed = [s for s in everything if s not in animals]
    longest = max(len(s.words) for s in train)
    assert table["longest_train_sentence"] == {
        "words": longest,
        "distance": max(s.verb - s.subject for s in train),
    }
    assert {label: (m["kind"], m["block_size"]) for label, m in table["models"].items()} == {
        "gpt": ("GPT", GPT_CONTEXT),
        "gru": ("GRULM", 32),
    }

    for label, sound, context in (("gpt", "meowing", GPT_CONTEXT), ("gru", GRU_SOUND, None)):
        for name, sentences in sets.items():
            assert table["sets"][name][label] == expected(sentences, sound, context), (label, name)
        longer = [s for s in val if len(s.words) > longest]
        assert table["sets"]["val_longer_than_train"][label] == expected(longer, sound, context)
        for kind, sentences in (("mixed", mixed), ("all_animals", animals)):
            rows = table["by_distance"][kind]
            assert sum(
                row[label]["n"] + row[label].get("n_beyond_context", 0) for row in rows.values()
            ) == len(sentences)
            for key, row in rows.items():
                assert row[label] == expected(
                    [s for s in sentences if in_bin(s.verb - s.subject, key)], sound, context
                ), (label, kind, key)
        for key, row in table["by_distractor_animals"].items():
            assert row[label] == expected(
                [s for s in everything if in_bin(long_range.n_animals(s), key)], sound, context
            ), (label, key)
        assert list(table["notes_sentence"][label]["top3"])[0] == sound
    assert sum(row["gru"]["n"] for row in table["by_distractor_animals"].values()) == len(
        everything
    )
    # not vacuous
    assert (
        0 < table["sets"]["val"]["gpt"]["accuracy"] < 1
        and 0 < table["sets"]["val"]["gru"]["accuracy"] < 1
    )
    # the probes outgrow the GPT
    assert any(row["gpt"].get("n_beyond_context") for row in table["by_distance"]["mixed"].values())

    # the GRU's wrong answers, sorted by hand: GRU_SOUND is wrong unless GRU_SUBJECT is the subject
    wrong = [s for s in everything if s.words[s.subject] != GRU_SUBJECT]
    in_distractors = [s for s in wrong if GRU_SUBJECT in {s.words[i] for i in s.distractors}]
    nearest = sum(s.nearest_animal == GRU_SUBJECT for s in wrong)
    assert table["wrong_answers"]["gru"] == {
        "n_wrong": len(wrong),
        "nearest_animal": nearest,
        "other_distractor": len(in_distractors) - nearest,
        "other": len(wrong) - len(in_distractors),
    }


def in_bin(value, key):
    """Whether value lies in a table's bin: "10-19", "6" or "1600+"."""
    if key.endswith("+"):
        return value >= int(key[:-1])
    low, _, high = key.partition("-")
    return int(low) <= value <= int(high or low)


def test_dev_split_holds_other_sentences_than_the_test(runs, cli):
    gpt_dir, _ = runs
    code, out, err = cli(
        long_range.main, f"--out_dirs={gpt_dir}", "--split=dev", f"--probe_sentences={PROBES}"
    )
    assert code == 0, err
    table = json.loads(out)
    assert list(table["sets"]) == ["dev"] and table["sets"]["dev"]["n"] == PROBES * len(
        long_range.DEV_CLAUSES
    )
    dev = probe(GENERATOR["seed"], PROBES, long_range.DEV_CLAUSES, salt="dev")
    _, val = corpus(**GENERATOR)
    assert not {s.text for s in dev} & {s.text for s in val}
    assert table["sets"]["dev"]["gpt"] == expected(dev, "meowing", GPT_CONTEXT)


def test_checkpoints_of_other_corpora_are_not_compared(runs, prepared, cli, tmp_path):
    gpt_dir, gru_dir = runs
    other = tmp_path / "other"
    shutil.copytree(gru_dir, other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(
        json.dumps({**meta, "generator": {**meta["generator"], "seed": 6}})
    )
    code, _, err = cli(long_range.main, f"--out_dirs={gpt_dir},{other}")
    assert code == 2 and "trained on different corpora" in err


def test_one_model_without_out_dirs_gives_the_readmes_numbers_and_a_gru_no_heads(runs, cli):
    _, gru_dir = runs
    code, out, err = cli(long_range.main, f"--out_dir={gru_dir}")
    assert code == 0, err
    result = json.loads(out)
    _, val = corpus(**GENERATOR)
    right = sum(s.words[s.subject] == GRU_SUBJECT for s in val)
    assert result["n"] == len(val) and result["accuracy"] == right / len(val) and right > 0
    assert result["best_head"] is None and result["notes_sentence"]["next_word"] == GRU_SOUND
    # a GRU has no attention weights to report
    assert "jumped_attends_to" not in result["notes_sentence"]
    code, _, err = cli(long_range.main, f"--out_dir={gru_dir}", "--plot=True")
    assert code == 2 and "--plot and --split are for the table of --out_dirs" in err
