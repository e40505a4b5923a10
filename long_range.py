"""
Did the model learn the notes' example? On the held-out sentences of data/long_range (regenerated from
the seed in the checkpoint's meta.json), how often the word after "jumped" is the subject's sound, and
which head's attention from "jumped" lands on the subject rather than on any other noun. Prints JSON.

    python long_range.py --out_dir=out-long-range

"baseline_nearest_animal" is the accuracy of guessing the sound of the animal nearest to the verb, a
model that never looks past the distractors (0 by construction: every sentence has another animal in
its clauses); "chance" is one sound in twelve.
"""

import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass

import torch

from base import UserError
from checkpoint import load_model
from configurator import parse_args, run_cli
from data.long_range.corpus import ANIMALS, NOTES_SENTENCE, SOUNDS, corpus, join_words, parse


@dataclass(frozen=True)
class EvaluateConfig:
    out_dir: str = "out-long-range"
    init_from: str = "resume"  # load_model's key: evaluate a checkpoint in out_dir
    device: str = "cpu"


def encode_prefix(tokenizer, sentence):
    """Token ids of the sentence up to and including the verb: one token per word, so indices are words'."""
    ids = tokenizer.encode(join_words(sentence.words[: sentence.verb + 1]))
    assert len(ids) == sentence.verb + 1, (sentence.text, len(ids))
    return ids


@torch.no_grad()
def continuation_accuracy(model, tokenizer, sentences):
    """Fraction of sentences whose most likely next token after the verb is the subject's sound."""
    by_length = defaultdict(list)  # the model returns only the last position's logits: batch equal lengths
    for s in sentences:
        by_length[s.verb + 1].append(s)
    correct = 0
    for group in by_length.values():
        idx = torch.tensor([encode_prefix(tokenizer, s) for s in group])
        logits, _ = model(idx)  # (B, 1, vocab)
        targets = torch.tensor([tokenizer.encode(" " + SOUNDS[s.words[s.subject]])[0] for s in group])
        correct += (logits[:, -1].argmax(-1) == targets).sum().item()
    return correct / len(sentences)


def verb_attention(model, tokenizer, sentence):
    """(n_layer, n_head, words up to the verb): how much the verb attends to each word."""
    return model.attention_maps(torch.tensor(encode_prefix(tokenizer, sentence)))[:, :, -1, :]


def subject_heads(model, tokenizer, sentences):
    """
    Per head (n_layer, n_head): the fraction of sentences where the verb's weight on the subject beats its
    weight on every distractor noun, and the mean weights on the subject and on the strongest distractor.
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
    """The numbers of the README: continuation accuracy (all, and on longer-than-train sentences), baselines, best head."""
    model.eval()
    long = [s for s in sentences if len(s.words) > longest_train]
    beats, on_subject, on_distractor = subject_heads(model, tokenizer, sentences)
    layer, head = divmod(int(beats.argmax()), beats.shape[1])
    return {
        "n": len(sentences),
        "accuracy": continuation_accuracy(model, tokenizer, sentences),
        "n_longer_than_train": len(long),
        "accuracy_longer_than_train": continuation_accuracy(model, tokenizer, long) if long else None,
        "baseline_nearest_animal": sum(s.nearest_animal == s.words[s.subject] for s in sentences) / len(sentences),
        "chance": 1 / len(ANIMALS),
        "best_head": {
            "layer": layer + 1, "head": head + 1,  # 1-based, as attention.py's pictures number them
            "subject_beats_every_distractor": round(beats[layer, head].item(), 4),
            "mean_weight_on_subject": round(on_subject[layer, head].item(), 4),
            "mean_weight_on_strongest_distractor": round(on_distractor[layer, head].item(), 4),
        },
        "notes_sentence": notes_sentence(model, tokenizer, layer, head),
    }  # fmt: skip


@torch.no_grad()
def notes_sentence(model, tokenizer, layer, head):
    """On the notes' sentence: the model's word after "jumped", and the head's weights from "jumped" on each noun."""
    sentence = parse(NOTES_SENTENCE)
    logits, _ = model(torch.tensor([encode_prefix(tokenizer, sentence)]))
    weights = verb_attention(model, tokenizer, sentence)[layer, head]
    nouns = [sentence.subject, *sentence.distractors]
    return {
        "text": NOTES_SENTENCE,
        "next_word": tokenizer.decode([logits[0, -1].argmax().item()]).strip(),
        "jumped_attends_to": {sentence.words[i]: round(weights[i].item(), 4) for i in nouns},
    }


def main(argv=None):
    cfg = parse_args(EvaluateConfig(), sys.argv[1:] if argv is None else argv)
    model, tokenizer = load_model(cfg.init_from, cfg.out_dir, cfg.device)
    with open(os.path.join(cfg.out_dir, "meta.json")) as f:
        generator = json.load(f).get("generator")
    if not generator:
        raise UserError(f"{cfg.out_dir} was not trained on data/long_range (its meta.json has no generator)")
    train, val = corpus(**generator)
    result = evaluate(model, tokenizer, val, max(len(s.words) for s in train))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run_cli(main)
