"""
The notes' example as data: seeded sentences where the word after "jumped" depends only on the
subject, which sits behind relative clauses full of other nouns. prepare.py writes them as token
files; the script long_range.py rebuilds the val sentences from meta.json's seed to score a
trained model.

A sentence: [opening] the [adjectives] SUBJECT that|, which|, who CLAUSE [...], jumped SOUND.
    the cat that was sitting on the mat, which was next to the dog, jumped meowing.
"""

import random
import re
from dataclasses import dataclass

# the sentence of our notes (attention_maps.py's default text): "jumped" must reach back past
# two clauses to "cat"
NOTES_SENTENCE = "the cat that was sitting on the mat, which was next to the dog, jumped"

SOUNDS = {
    "cat": "meowing",
    "dog": "barking",
    "cow": "mooing",
    "duck": "quacking",
    "frog": "croaking",
    "horse": "neighing",
    "sheep": "bleating",
    "pig": "oinking",
    "mouse": "squeaking",
    "lion": "roaring",
    "owl": "hooting",
    "wolf": "howling",
}
ANIMALS = sorted(SOUNDS)
THINGS = [
    "mat",
    "box",
    "tree",
    "chair",
    "table",
    "fence",
    "rug",
    "bed",
    "wall",
    "door",
    "bench",
    "rock",
]
ADJECTIVES = ["big", "small", "old", "young", "black", "white", "little", "happy"]
OPENINGS = [
    "yesterday ,",
    "one day ,",
    "suddenly ,",
    "in the morning ,",
    "after a while ,",
    "then",
    "at noon ,",
    "later that day ,",
]
CLAUSES = [
    "was sitting on the N",
    "was next to the N",
    "was chasing the N",
    "saw the N",
    "was hiding under the N",
    "was sleeping near the N",
    "liked the N",
    "was watching the N",
    "was behind the N",
    "had found the N",
    "was playing with the N",
    "was looking at the N",
    "was between the N and the N",
]
INTRODUCERS = ["that", ", which", ", who"]
VERB = "jumped"
TRAIN_CLAUSES = (1, 3)  # clauses per train sentence
LONG_CLAUSES = (4, 5)  # val's long sentences: more clauses, and more words than any train sentence
VAL_PAIR_FRACTION = 0.2  # of the (subject, nearest animal) pairs, held out for val


@dataclass(frozen=True)
class Sentence:
    """A sentence as words (punctuation marks are words), with where its subject, distractors and
    verb are."""

    words: tuple
    subject: int  # index of the subject noun
    distractors: tuple  # indices of the other nouns, all between the subject and the verb
    verb: int  # index of "jumped"; the next word is the subject's sound

    @property
    def text(self):
        return join_words(self.words)

    @property
    def nearest_animal(self):
        return next(self.words[i] for i in reversed(self.distractors) if self.words[i] in SOUNDS)


def join_words(words):
    """Words back into text: a space between words, none before a punctuation mark."""
    return re.sub(r" ([,.])", r"\1", " ".join(words))


def parse(text):
    """The Sentence of a text of this grammar (up to "jumped" at least): words, subject,
    distractors, verb."""
    words = re.findall(r"\w+|[,.]", text)
    nouns = [i for i, w in enumerate(words) if w in SOUNDS or w in THINGS]
    assert nouns and VERB in words and words[nouns[0]] in SOUNDS, text
    return Sentence(tuple(words), nouns[0], tuple(nouns[1:]), words.index(VERB))


def make_sentence(rng, subject, nearest, n_clauses, all_animals=False):
    """A sentence whose subject is `subject` and whose last animal before the verb is `nearest`.
    all_animals: every noun of its clauses is an animal (`nearest` the last), the most distractors
    its clauses can hold."""
    clauses = [rng.choice(CLAUSES) for _ in range(n_clauses)]
    n_slots = sum(c.count("N") for c in clauses)
    others = [a for a in ANIMALS if a != subject]
    # the slot of `nearest`: other animals (or things) before it, only things after it
    k, before = (n_slots - 1, others) if all_animals else (rng.randrange(n_slots), others + THINGS)
    nouns = (
        [rng.choice(before) for _ in range(k)]
        + [nearest]
        + [rng.choice(THINGS) for _ in range(n_slots - k - 1)]
    )
    words = rng.choice(["", "", *OPENINGS]).split()
    words += ["the", *rng.sample(ADJECTIVES, rng.choice([0, 0, 1, 2])), subject]
    for clause in clauses:
        # any clause may open with any of these, so no marker word sits right after the
        # subject alone
        words += rng.choice(INTRODUCERS).split()
        for word in clause.split():
            if word == "N":
                word = nouns.pop(0)
                if rng.random() < 0.3:
                    words.append(rng.choice(ADJECTIVES))
            words.append(word)
    words += [",", VERB, SOUNDS[subject], "."]
    return parse(join_words(words))


def pairs_split(seed):
    """(train pairs, val pairs) of (subject, nearest animal); the notes' (cat, dog) is a val
    pair."""
    pairs = [(s, a) for s in ANIMALS for a in ANIMALS if s != a]
    random.Random(seed).shuffle(pairs)
    n_val = round(VAL_PAIR_FRACTION * len(pairs))
    val = set(pairs[:n_val]) | {("cat", "dog")}
    return [p for p in pairs if p not in val], sorted(val)


def corpus(seed=1337, train_sentences=20000, val_sentences=1000):
    """
    (train, val) lists of Sentences. val: the notes' sentence, val_sentences of train's lengths and
    val_sentences longer (in words) than the longest train sentence, all on pairs train never has.
    """
    rng = random.Random(seed)
    train_pairs, val_pairs = pairs_split(seed)
    train = [
        make_sentence(rng, *rng.choice(train_pairs), rng.randint(*TRAIN_CLAUSES))
        for _ in range(train_sentences)
    ]
    longest = max(len(s.words) for s in train)
    val = [parse(NOTES_SENTENCE + f" {SOUNDS['cat']}.")]
    val += [
        make_sentence(rng, *rng.choice(val_pairs), rng.randint(*TRAIN_CLAUSES))
        for _ in range(val_sentences)
    ]
    while len(val) < 1 + 2 * val_sentences:
        sentence = make_sentence(rng, *rng.choice(val_pairs), rng.randint(*LONG_CLAUSES))
        if len(sentence.words) > longest:
            val.append(sentence)
    return train, val


def probe(seed, n, clauses, all_animals=False, salt="probe"):
    """
    n sentences per clause count in `clauses`, on the held-out (val) pairs of the corpus of this
    seed, from a random stream of their own (named by salt): val's pairs in new sentences, longer
    than val's (more clauses) or, with all_animals, with every noun an animal. long_range.py
    measures the models on them.
    """
    rng = random.Random(f"{salt} {seed}")
    _, val_pairs = pairs_split(seed)
    return [
        make_sentence(rng, *rng.choice(val_pairs), k, all_animals)
        for k in clauses
        for _ in range(n)
    ]


def as_text(sentences):
    return "".join(s.text + "\n" for s in sentences)
