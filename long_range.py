"""
Did the model learn the notes' example? On the held-out sentences of data/long_range (regenerated
from the seed in the checkpoint's meta.json), how often the word after "jumped" is the subject's
sound, and which head's attention from "jumped" lands on the subject rather than on any other noun.
Prints JSON.

    python long_range.py --out_dir=out-long-range

"baseline_nearest_animal" is the accuracy of guessing the sound of the animal nearest to the verb, a
model that never looks past the distractors (0 by construction: every sentence has another animal in
its clauses); "chance" is one sound in twelve.

With --out_dirs, the notes' argument measured: does a recurrent network lose the subject that
attention finds? For each model (the GPT and recurrent.py's GRU), accuracy by the distance in words
from the subject to the verb and by the number of distractor animals, on sentences far longer than
any in training, and the three words each puts first after the notes' sentence, as one table:

    python long_range.py --out_dirs=out-long-range,out-long-range-gru --plot=True
    python long_range.py --out_dirs=out-x --split=dev   # tuning: new sentences, never the test ones

(--plot=True: + docs/long_range_gru_vs_gpt.png). Its sentences (all on the (subject, nearest
animal) pairs train never has, data/long_range/corpus.py):
  val            the val split above: the notes' sentence, sentences of train's lengths (1-3
                 clauses), and as many longer than any train sentence (4-5 clauses)
  longer_K       --probe_sentences sentences of K clauses (6 to 128): subject-verb distances from
                 ~40 words to ~900, where train's longest is 32. A GPT sees block_size tokens:
                 sentences whose verb lies beyond are out of its reach (counted as
                 n_beyond_context, not scored)
  all_animals_K  the same with every noun of the K clauses (1 to 128) an animal: the most
                 distractors they hold
by_distance scores val with the longer_K sentences (mixed distractors), and the all_animals_K
sentences apart; by_distractor_animals scores them all (more animals come with longer sentences:
compare all_animals_K with longer_K at one K for the distractors alone). --split=dev scores new
sentences of 1-5 clauses from another random stream instead, for learning-rate sweeps.

On a checkpoint of data/translate (its meta.json's generator names a task), the notes' translation
instead (docs/translation.md): each model greedy-translates val (`english =` -> the French, up to
the newline), scored by bucket of source length as exact match and per-word accuracy (the share of
the target's words right at their place), with the notes' sentence as each writes it; --plot=True
draws exact match against source length (docs/translation_by_length.png) and the first GPT's
attention while it writes the French of the notes' sentence and of one with an adjective
(docs/translation_attention.png):

    python long_range.py --out_dirs=out-translate,out-translate-gru,out-translate-gru-attention \
        --plot=True
"""

import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch

from data.long_range.corpus import ANIMALS, NOTES_SENTENCE, SOUNDS, corpus, join_words, parse, probe
from data.translate.corpus import SEPARATOR, bucket, line, translate, words_of
from data.translate.corpus import corpus as translate_corpus
from gptkit.base import UserError, save_figure
from gptkit.checkpoint import load_model
from gptkit.configurator import parse_args, run_cli
from model import GPT

LONGER_CLAUSES = (6, 8, 12, 16, 32, 64, 128)
ANIMAL_CLAUSES = (1, 2, 3, 4, 5, 16, 32, 64, 128)
DEV_CLAUSES = (1, 2, 3, 4, 5)
# bins of the tables: [edge, next edge); fine where train's lengths end (distance 32) and a GPT's
# context (64), wide beyond
DISTANCE_EDGES = (0, 10, 20, 30, 40, 50, 60, 80, 100, 200, 400, 800, 1600)
ANIMAL_EDGES = (1, 2, 3, 4, 5, 6, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class EvaluateConfig:
    out_dir: str = "out-long-range"
    init_from: str = "resume"  # load_model's key: evaluate a checkpoint in out_dir
    device: str = "cpu"
    # checkpoints to compare in one table, comma-separated (then out_dir is not used)
    out_dirs: str = ""
    # with out_dirs: "test", val and the probes; "dev", other sentences, for tuning
    split: str = "test"
    probe_sentences: int = 200  # with out_dirs: per clause count, in each probe (and in dev)
    # with out_dirs: also write accuracy against distance (translation: source length), one line
    # per model, to plot_path; translation: and the first GPT's attention map, to maps_path
    plot: bool = False
    plot_path: str = ""  # "": docs/long_range_gru_vs_gpt.png, or docs/translation_by_length.png
    maps_path: str = "docs/translation_attention.png"


def load(out_dir, device, init_from="resume"):
    """(label, model, tokenizer, the corpus generator) of an out_dir trained on data/long_range or
    data/translate (its generator has a task)."""
    model, tokenizer = load_model(init_from, out_dir, device)
    with open(os.path.join(out_dir, "meta.json")) as f:
        generator = json.load(f).get("generator")
    if not generator:
        raise UserError(
            f"{out_dir} was not trained on data/long_range or data/translate "
            "(its meta.json has no generator)"
        )
    return os.path.basename(os.path.normpath(out_dir)), model, tokenizer, generator


def encode_prefix(tokenizer, sentence):
    """Token ids of the sentence up to and including the verb: one token per word, so indices are
    words'."""
    ids = tokenizer.encode(join_words(sentence.words[: sentence.verb + 1]))
    assert len(ids) == sentence.verb + 1, (sentence.text, len(ids))
    return ids


@torch.no_grad()
def word_after_verb(model, tokenizer, sentences):
    """The model's most likely word after the verb of each sentence, or None where the prefix is
    longer than a GPT's context (a GRU reads any length)."""
    limit = model.config.block_size if isinstance(model, GPT) else None
    # the model returns only the last position's logits: batch equal lengths
    by_length = defaultdict(list)
    for i, s in enumerate(sentences):
        by_length[s.verb + 1].append(i)
    words = [None] * len(sentences)
    for length, group in by_length.items():
        if limit is not None and length > limit:
            continue
        # (B, 1, vocab)
        logits, _ = model(torch.tensor([encode_prefix(tokenizer, sentences[i]) for i in group]))
        for i, token in zip(group, logits[:, -1].argmax(-1).tolist(), strict=True):
            words[i] = tokenizer.decode([token]).strip()
    return words


def continuation_accuracy(model, tokenizer, sentences):
    """Fraction of sentences whose most likely next word after the verb is the subject's sound."""
    words = word_after_verb(model, tokenizer, sentences)
    return sum(
        w == SOUNDS[s.words[s.subject]] for w, s in zip(words, sentences, strict=True)
    ) / len(sentences)


def verb_attention(model, tokenizer, sentence):
    """(n_layer, n_head, words up to the verb): how much the verb attends to each word."""
    return model.attention_maps(torch.tensor(encode_prefix(tokenizer, sentence)))[:, :, -1, :]


def subject_heads(model, tokenizer, sentences):
    """
    Per head (n_layer, n_head): the fraction of sentences where the verb's weight on the subject
    beats its weight on every distractor noun, and the mean weights on the subject and on the
    strongest distractor.
    """
    beats, on_subject, on_distractor = 0, 0, 0
    for s in sentences:
        weights = verb_attention(model, tokenizer, s)
        subject, strongest = weights[..., s.subject], weights[..., list(s.distractors)].amax(-1)
        beats = beats + (subject > strongest).float()
        on_subject, on_distractor = on_subject + subject, on_distractor + strongest
    n = len(sentences)
    return beats / n, on_subject / n, on_distractor / n


def evaluate(model, tokenizer, sentences, longest_train):
    """The numbers of the README: continuation accuracy (all, and on longer-than-train sentences),
    baselines, best head."""
    model.eval()
    long = [s for s in sentences if len(s.words) > longest_train]
    result = {
        "n": len(sentences),
        "accuracy": continuation_accuracy(model, tokenizer, sentences),
        "n_longer_than_train": len(long),
        "accuracy_longer_than_train": continuation_accuracy(model, tokenizer, long)
        if long
        else None,
        "baseline_nearest_animal": sum(s.nearest_animal == s.words[s.subject] for s in sentences)
        / len(sentences),
        "chance": 1 / len(ANIMALS),
    }
    if not model.has_attention:  # the GRU: no heads to look into
        return result | {"best_head": None, "notes_sentence": notes_sentence(model, tokenizer)}
    beats, on_subject, on_distractor = subject_heads(model, tokenizer, sentences)
    layer, head = divmod(int(beats.argmax()), beats.shape[1])
    return result | {
        "best_head": {
            "layer": layer + 1,
            "head": head + 1,  # 1-based, as attention_maps.py's pictures number them
            "subject_beats_every_distractor": round(beats[layer, head].item(), 4),
            "mean_weight_on_subject": round(on_subject[layer, head].item(), 4),
            "mean_weight_on_strongest_distractor": round(on_distractor[layer, head].item(), 4),
        },
        "notes_sentence": notes_sentence(model, tokenizer, layer, head),
    }


@torch.no_grad()
def notes_sentence(model, tokenizer, layer=None, head=None):
    """On the notes' sentence: the model's word after "jumped", and (given a head) its weights from
    "jumped" on each noun."""
    sentence = parse(NOTES_SENTENCE)
    logits, _ = model(torch.tensor([encode_prefix(tokenizer, sentence)]))
    result = {
        "text": NOTES_SENTENCE,
        "next_word": tokenizer.decode([logits[0, -1].argmax().item()]).strip(),
    }
    if layer is None:
        return result
    weights = verb_attention(model, tokenizer, sentence)[layer, head]
    nouns = [sentence.subject, *sentence.distractors]
    return result | {
        "jumped_attends_to": {sentence.words[i]: round(weights[i].item(), 4) for i in nouns}
    }


# --------------------------------------------------------------------------------------------------
# --out_dirs: the GPT against the GRU, by distance and distractors


def n_animals(sentence):
    """The distractor animals: animals among the nouns between the subject and the verb."""
    return sum(sentence.words[i] in SOUNDS for i in sentence.distractors)


def score(predictions, sentences, keep=lambda s: True):
    """{n, accuracy} over the sentences kept, plus n_beyond_context for those a GPT cannot reach
    (None predictions)."""
    pairs = [(p, s) for p, s in zip(predictions, sentences, strict=True) if keep(s)]
    scored = [p == SOUNDS[s.words[s.subject]] for p, s in pairs if p is not None]
    result = {"n": len(scored), "accuracy": round(sum(scored) / len(scored), 4) if scored else None}
    if len(scored) < len(pairs):
        result["n_beyond_context"] = len(pairs) - len(scored)
    return result


def wrong_answers(predictions, sentences):
    """Where the wrong answers go: the nearest animal's sound (recency), another distractor
    animal's, or elsewhere."""
    counts = Counter()
    for p, s in zip(predictions, sentences, strict=True):
        if p is None or p == SOUNDS[s.words[s.subject]]:
            continue
        distractor_sounds = {SOUNDS[s.words[i]] for i in s.distractors if s.words[i] in SOUNDS}
        counts[
            "nearest_animal"
            if p == SOUNDS[s.nearest_animal]
            else "other_distractor"
            if p in distractor_sounds
            else "other"
        ] += 1
    return {
        "n_wrong": sum(counts.values()),
        **{k: counts[k] for k in ("nearest_animal", "other_distractor", "other")},
    }


@torch.no_grad()
def notes_top3(model, tokenizer):
    """The model's three most likely words after the notes' sentence, with their probabilities."""
    idx = torch.tensor([tokenizer.encode(NOTES_SENTENCE)])
    probs = torch.softmax(model(idx)[0][0, -1].float(), dim=-1)
    top = probs.topk(3)
    return {
        tokenizer.decode([i]).strip(): round(p, 4)
        for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    }


def sentence_sets(generator, split, n):
    """{name: sentences} to score, and the longest train sentence (words) and subject-verb
    distance."""
    train, val = corpus(**generator)
    seed = generator["seed"]
    longest = {
        "words": max(len(s.words) for s in train),
        "distance": max(s.verb - s.subject for s in train),
    }
    if split == "dev":
        return {"dev": probe(seed, n, DEV_CLAUSES, salt="dev")}, longest
    sets = {"val": val}
    sets |= {f"longer_{k}": probe(seed, n, [k], salt="longer") for k in LONGER_CLAUSES}
    sets |= {
        f"all_animals_{k}": probe(seed, n, [k], all_animals=True, salt="animals")
        for k in ANIMAL_CLAUSES
    }
    return sets, longest


def bin_of(value, edges):
    """The label of the bin [edge, next edge) holding value: "10-19", or "1600+" past the last
    edge."""
    low = max(e for e in edges if e <= value)
    high = next((e for e in edges if e > value), None)
    return f"{low}+" if high is None else str(low) if high == low + 1 else f"{low}-{high - 1}"


def distance(sentence):
    return sentence.verb - sentence.subject


def binned(rows, label, sentences, predicted, key):
    """rows[bin][label] = the score of the sentences in each bin (key(sentence) names it), bins in
    increasing order."""
    groups = defaultdict(list)
    for s in sentences:
        groups[key(s)].append(s)
    for name in sorted(groups, key=lambda name: int(name.split("-")[0].rstrip("+"))):
        rows.setdefault(name, {})[label] = score(
            [predicted[id(s)] for s in groups[name]], groups[name]
        )


def load_all(cfg):
    """load() of each of --out_dirs, refused unless all were trained on one corpus."""
    out_dirs = [d for d in cfg.out_dirs.split(",") if d]
    if not out_dirs:
        raise UserError("--out_dirs names no checkpoint")
    models = [load(d, cfg.device) for d in out_dirs]
    generators = {json.dumps(g, sort_keys=True) for *_, g in models}
    if len(generators) != 1:
        raise UserError(
            f"the models were trained on different corpora ({', '.join(sorted(generators))}): "
            "compare models of one"
        )
    return models


def measure(cfg, models):
    """The JSON table: per model, accuracy on each sentence set, by distance and by distractor
    animals."""
    sets, longest = sentence_sets(models[0][3], cfg.split, cfg.probe_sentences)
    everything = [s for sentences in sets.values() for s in sentences]
    by_distance = {  # mixed distractors (val and longer_K, or dev), and every noun an animal
        "mixed": [
            s
            for name, sentences in sets.items()
            if not name.startswith("all_animals")
            for s in sentences
        ],
        "all_animals": [
            s
            for name, sentences in sets.items()
            if name.startswith("all_animals")
            for s in sentences
        ],
    }
    table = {
        "models": {
            label: {
                "kind": type(m).__name__,
                "parameters": m.get_num_params(),
                "block_size": m.config.block_size,
            }
            for label, m, _, _ in models
        },
        "split": cfg.split,
        "longest_train_sentence": longest,
        "chance": round(1 / len(ANIMALS), 4),
        "sets": {name: {"n": len(s)} for name, s in sets.items()},
        "by_distance": {kind: {} for kind, sentences in by_distance.items() if sentences},
        "by_distractor_animals": {},
        "wrong_answers": {},
        "notes_sentence": {},
    }
    if "val" in sets:
        table["sets"]["val_longer_than_train"] = {
            "n": sum(len(s.words) > longest["words"] for s in sets["val"])
        }
    for label, model, tokenizer, _ in models:
        predictions = {
            name: word_after_verb(model, tokenizer, sentences) for name, sentences in sets.items()
        }
        predicted = {
            id(s): p
            for name, sentences in sets.items()
            for s, p in zip(sentences, predictions[name], strict=True)
        }
        for name, sentences in sets.items():
            table["sets"][name][label] = score(predictions[name], sentences)
        if "val" in sets:
            longer = score(
                predictions["val"], sets["val"], lambda s: len(s.words) > longest["words"]
            )
            table["sets"]["val_longer_than_train"][label] = longer
        for kind, rows in table["by_distance"].items():
            binned(
                rows,
                label,
                by_distance[kind],
                predicted,
                lambda s: bin_of(distance(s), DISTANCE_EDGES),
            )
        binned(
            table["by_distractor_animals"],
            label,
            everything,
            predicted,
            lambda s: bin_of(n_animals(s), ANIMAL_EDGES),
        )
        table["wrong_answers"][label] = wrong_answers(
            [predicted[id(s)] for s in everything], everything
        )
        table["notes_sentence"][label] = {
            "text": NOTES_SENTENCE,
            "top3": notes_top3(model, tokenizer),
        }
    return table


def plot(table, path):
    """Accuracy against subject-verb distance (log scale), one line per model, dashed where every
    noun is an animal; chance and the longest distance in training marked."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(8, 4.5), layout="tight")
    ax = fig.add_subplot()
    for i, (label, info) in enumerate(table["models"].items()):
        for kind, rows in table["by_distance"].items():
            points = [
                (bin_centre(name), row[label]["accuracy"])
                for name, row in rows.items()
                if row[label]["accuracy"] is not None
            ]
            if not points:
                continue
            # the GRU reads on
            reach = f", {info['block_size']}-token context" if info["kind"] == "GPT" else ""
            name = f"{label} ({info['kind']}, {info['parameters'] / 1e3:.0f}K parameters{reach})"
            # the first model on top, where lines overlap at 100%
            style = dict(color=f"C{i}", zorder=10 - i)
            style |= (
                dict(marker="o", linestyle="-")
                if kind == "mixed"
                else dict(marker="x", linestyle="--")
            )
            ax.plot(
                *zip(*points, strict=True),
                label=name if kind == "mixed" else f"{label}, every noun an animal",
                **style,
            )
    ax.axhline(table["chance"], color="gray", linestyle=":", label="chance (1 in 12)")
    ax.axvline(
        table["longest_train_sentence"]["distance"],
        color="gray",
        linestyle="-.",
        label="longest distance in training",
    )
    ax.set_xscale("log")
    ax.set_xlabel('distance from the subject to "jumped" (words)')
    ax.set_ylabel('the word after "jumped" is the subject\'s sound')
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def bin_centre(name):
    """A bin's middle on a log axis: "10-19" -> ~14.5; "1600+" -> 2000."""
    low, _, high = name.rstrip("+").partition("-")
    low = max(int(low), 1)
    high = int(high) + 1 if high else 1.25 * low if name.endswith("+") else low + 1
    return (low * high) ** 0.5


# --------------------------------------------------------------------------------------------------
# data/translate: greedy translation of val, scored by source length


def kind_of(model):
    """A model's family for tables and plots: "GPT", "GRU" (the notes' encoder-decoder) or "GRU +
    attention"."""
    if isinstance(model, GPT):
        return "GPT"
    return "GRU + attention" if model.config.attention else "GRU"


@torch.no_grad()
def translate_greedy(model, tokenizer, sources, batch_size=256):
    """Each source's greedy continuation after "source =", up to its first newline: the French
    text. Sources are batched by prompt length; a GPT writes no further than its context."""
    prompts = [tokenizer.encode(f"{source} {SEPARATOR}") for source in sources]
    newline = tokenizer.encode("\n")
    assert len(newline) == 1, newline
    by_length = defaultdict(list)
    for i, ids in enumerate(prompts):
        by_length[len(ids)].append(i)
    texts = [None] * len(sources)
    for length, group in by_length.items():
        for start in range(0, len(group), batch_size):
            rows = group[start : start + batch_size]
            # French is never more than twice the English, in tokens, plus a few
            budget = 2 * length + 8
            if isinstance(model, GPT):
                budget = min(budget, model.config.block_size - length)
            idx = torch.tensor([prompts[i] for i in rows])
            written = []
            for token in model.generate_stream(idx, budget, temperature=0):  # (B, 1)
                written.append(token)
                if (torch.cat(written, dim=1) == newline[0]).any(dim=1).all():
                    break
            for i, ids in zip(rows, torch.cat(written, dim=1).tolist(), strict=True):
                cut = ids.index(newline[0]) if newline[0] in ids else len(ids)
                texts[i] = tokenizer.decode(ids[:cut]).strip()
    return texts


def translation_scores(predicted, target):
    """(exact match, the fraction of the target's words right at their position)."""
    got, want = words_of(predicted), words_of(target)
    right = sum(g == w for g, w in zip(got, want, strict=False))
    return got == want, right / len(want)


def measure_translation(models, generator):
    """The JSON table of data/translate: per model, exact match and per-word accuracy by bucket of
    source length, and the notes' sentence as each writes it."""
    _, val = translate_corpus(**generator)
    table = {
        "models": {
            label: {
                "kind": kind_of(m),
                "parameters": m.get_num_params(),
                "n_embd": m.config.n_embd,
                "block_size": m.config.block_size,
            }
            for label, m, _, _ in models
        },
        "task": generator["task"],
        "longest_train_source_words": generator["max_words"],
        "by_length": {},
        "all": {},
        "notes_sentence": {},
    }
    for label, model, tokenizer, _ in models:
        model.eval()
        french = translate_greedy(model, tokenizer, [source for source, _ in val])
        groups = defaultdict(list)
        for (source, target), text in zip(val, french, strict=True):
            groups[bucket(len(words_of(source)))].append(translation_scores(text, target))
        groups = {name: groups[name] for name in sorted(groups, key=lambda n: int(n.split("-")[0]))}
        groups["all"] = [score for scores in groups.values() for score in scores]
        for name, scores in groups.items():
            row = {
                "n": len(scores),
                "exact": round(sum(e for e, _ in scores) / len(scores), 4),
                "word_accuracy": round(sum(w for _, w in scores) / len(scores), 4),
            }
            if name == "all":
                table["all"][label] = row
            else:
                table["by_length"].setdefault(name, {})[label] = row
        if generator["task"] == "notes":
            table["notes_sentence"][label] = french[0]
    return table


def plot_translation(table, path):
    """Exact match against source length, one line per checkpoint, a colour per model family and
    width; the longest train source marked."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(8, 4.5), layout="tight")
    ax = fig.add_subplot()
    families = {}  # one colour, and one legend entry, per family: its seeds share them
    for label, info in table["models"].items():
        family = f"{info['kind']} (width {info['n_embd']}, {info['parameters'] / 1e3:.0f}K)"
        first = family not in families
        colour = families.setdefault(family, f"C{len(families)}")
        points = [
            (sum(map(int, name.split("-"))) / 2, row[label]["exact"])
            for name, row in table["by_length"].items()
        ]
        ax.plot(
            *zip(*points, strict=True),
            color=colour,
            marker="o",
            alpha=0.8,
            label=family if first else None,
        )
    ax.axvline(
        table["longest_train_source_words"] + 0.5,
        color="gray",
        linestyle="-.",
        label="longest source in training",
    )
    ax.set_xlabel("English source length (words, punctuation included; buckets of 5)")
    ax.set_ylabel("exact-match translations (greedy)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


# the notes' sentence with an adjective, whose order French flips: "black cat" -> "chat noir"
ADJECTIVE_SENTENCE = "the black cat that was sitting on the mat, which was next to the dog, jumped"
# (French word, the English word it translates): the query that writes the first should look at
# the second
ALIGNED = (("sauté", "jumped"), ("noir", "black"))


@torch.no_grad()
def translation_attention(model, tokenizer, path=None):
    """
    A GPT's attention while it writes the French of the notes' sentence and of ADJECTIVE_SENTENCE:
    for each French word, the weights of the query that predicts it (the token before it) on the
    English words. Picks the head whose weight from the query writing "sauté" on "jumped" and from
    the one writing "noir" on "black" is highest on average; returns its weights on those pairs and
    [French word, the English word its query weighs most] per sentence, and draws its two maps to
    path (if given).
    """
    model.eval()
    maps = []
    for english in (NOTES_SENTENCE, ADJECTIVE_SENTENCE):
        ids = tokenizer.encode(line(english, translate(english)))
        tokens = [tokenizer.decode([i]).strip() for i in ids]
        sep, end = tokens.index(SEPARATOR), len(tokens) - 1  # the last token is the newline
        weights = model.attention_maps(torch.tensor(ids))  # (n_layer, n_head, T, T)
        # row r: the query at sep + r, which predicts the French token sep + r + 1
        maps.append((tokens[:sep], tokens[sep + 1 : end], weights[:, :, sep : end - 1, :sep]))
    # (2, n_layer, n_head)
    aligned = torch.stack(
        [
            weights[:, :, french.index(f), english.index(e)]
            for (english, french, weights), (f, e) in zip(maps, ALIGNED, strict=True)
        ]
    )
    layer, head = divmod(int(aligned.mean(0).argmax()), aligned.shape[2])
    result = {
        "layer": layer + 1,  # 1-based, as attention_maps.py's pictures number them
        "head": head + 1,
        **{
            f"{f} -> {e}": round(aligned[i, layer, head].item(), 4)
            for i, (f, e) in enumerate(ALIGNED)
        },
        "most_attended": [
            [
                [f, english[int(w.argmax())]]
                for f, w in zip(french, weights[layer, head], strict=True)
            ]
            for english, french, weights in maps
        ],
    }
    if path:
        plot_translation_attention(maps, layer, head, path)
    return result


def plot_translation_attention(maps, layer, head, path):
    """The chosen head's weights, French words (the one each query writes) against English words,
    one panel per sentence."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6), layout="tight")
    for i, (english, french, weights) in enumerate(maps):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(weights[layer, head].numpy(), cmap="viridis", vmin=0, aspect="auto")
        ax.set_xticks(range(len(english)), english, rotation=90, fontsize=8)
        ax.set_yticks(range(len(french)), [f"writes {w}" for w in french], fontsize=8)
        ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
    fig.suptitle(
        "The GPT's attention while it writes the French: each row sums to 1 over the whole "
        "line; shown on the English words",
        fontsize=9,
    )
    save_figure(fig, path)


def main(argv=None):
    cfg = parse_args(EvaluateConfig(), sys.argv[1:] if argv is None else argv)
    if cfg.out_dirs:
        return compare(cfg)
    if cfg.plot or cfg.split != "test":
        raise UserError("--plot and --split are for the table of --out_dirs")
    loaded = load(cfg.out_dir, cfg.device, cfg.init_from)
    _, model, tokenizer, generator = loaded
    if "task" in generator:
        print(json.dumps(measure_translation([loaded], generator), indent=1))
        return
    train, val = corpus(**generator)
    result = evaluate(model, tokenizer, val, max(len(s.words) for s in train))
    print(json.dumps(result, indent=1))


def compare(cfg):
    """--out_dirs: measure's table as JSON, and the plot."""
    if cfg.split not in ("test", "dev"):
        raise UserError(f"--split={cfg.split} must be test or dev")
    if cfg.probe_sentences < 1:
        raise UserError("--probe_sentences must be at least 1")
    models = load_all(cfg)
    generator = models[0][3]
    if "task" not in generator:
        table = measure(cfg, models)
        print(json.dumps(table, indent=1))
        if cfg.plot:
            plot(table, cfg.plot_path or "docs/long_range_gru_vs_gpt.png")
            print(f"wrote {cfg.plot_path or 'docs/long_range_gru_vs_gpt.png'}", file=sys.stderr)
        return
    if cfg.split != "test":
        raise UserError("--split=dev is for data/long_range: data/translate has val only")
    table = measure_translation(models, generator)
    gpts = [(m, t) for _, m, t, _ in models if isinstance(m, GPT)]
    if gpts and generator["task"] == "notes":
        table["attention"] = translation_attention(*gpts[0], cfg.maps_path if cfg.plot else None)
    print(json.dumps(table, indent=1))
    if cfg.plot:
        plot_translation(table, cfg.plot_path or "docs/translation_by_length.png")
        print(f"wrote {cfg.plot_path or 'docs/translation_by_length.png'}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
