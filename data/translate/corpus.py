"""
The notes' translation as data: data/long_range's English sentences (up to "jumped"), translated
into French by rule, and a control of random word strings. prepare.py writes them as `source =
target` lines; long_range.py rebuilds val from meta.json's generator to score a trained model.

    the cat that was sitting on the mat, which was next to the dog, jumped
    = le chat qui était assis sur le tapis, qui était à côté du chien, a sauté

The rules make word-by-word wrong the way the notes' German example is: French adjectives follow
their noun ("the black cat" -> "le chat noir") and agree with its gender ("la vache noire"), a
participle agrees with the subject far behind it ("était assise" for a cow), "was chasing" is one
word ("chassait") and "jumped" two ("a sauté"), de + le contracts ("du chien") and le before a vowel
elides ("l'arbre").

The control (task "reverse"): strings of random words of the same dictionary, each translated alone,
the target in reverse order. No grammar to lean on: a model must hold every word of the source.
"""

import random
import re

from data.long_range.corpus import (
    ADJECTIVES,
    ANIMALS,
    CLAUSES,
    INTRODUCERS,
    THINGS,
    join_words,
    make_sentence,
)

NOTES_SENTENCE = "the cat that was sitting on the mat, which was next to the dog, jumped"
NOTES_FRENCH = "le chat qui était assis sur le tapis, qui était à côté du chien, a sauté"
SEPARATOR = "="  # between source and target: "source = target"
TASKS = ("notes", "reverse")
BUCKET_WIDTH = 5  # val's source lengths in buckets of 5 words: 1-5, 6-10, ...

# noun: (French, gender)
NOUNS = {
    "cat": ("chat", "m"),
    "dog": ("chien", "m"),
    "cow": ("vache", "f"),
    "duck": ("canard", "m"),
    "frog": ("grenouille", "f"),
    "horse": ("cheval", "m"),
    "sheep": ("mouton", "m"),
    "pig": ("cochon", "m"),
    "mouse": ("souris", "f"),
    "lion": ("lion", "m"),
    "owl": ("hibou", "m"),  # h aspiré: "le hibou", no elision
    "wolf": ("loup", "m"),
    "mat": ("tapis", "m"),
    "box": ("boîte", "f"),
    "tree": ("arbre", "m"),  # "l'arbre", "de l'arbre"
    "chair": ("chaise", "f"),
    "table": ("table", "f"),
    "fence": ("clôture", "f"),
    "rug": ("carpette", "f"),
    "bed": ("lit", "m"),
    "wall": ("mur", "m"),
    "door": ("porte", "f"),
    "bench": ("banc", "m"),
    "rock": ("rocher", "m"),
}
# adjective: (masculine, feminine), placed after the noun
ADJ = {
    "big": ("énorme", "énorme"),
    "small": ("minuscule", "minuscule"),
    "old": ("âgé", "âgée"),
    "young": ("jeune", "jeune"),
    "black": ("noir", "noire"),
    "white": ("blanc", "blanche"),
    "little": ("menu", "menue"),
    "happy": ("heureux", "heureuse"),
}
# data/long_range's clauses: N a noun phrase; "{de}" and "{sur}"-less templates; A the participle
# that agrees with the subject
CLAUSE_FR = {
    "was sitting on the N": "était A sur N",
    "was next to the N": "était à côté de N",
    "was chasing the N": "chassait N",
    "saw the N": "a vu N",
    "was hiding under the N": "se cachait sous N",
    "was sleeping near the N": "dormait près de N",
    "liked the N": "aimait N",
    "was watching the N": "regardait N",
    "was behind the N": "était derrière N",
    "had found the N": "avait trouvé N",
    "was playing with the N": "jouait avec N",
    "was looking at the N": "regardait N",
    "was between the N and the N": "était entre N et N",
}
SITTING = {"m": "assis", "f": "assise"}
assert set(CLAUSE_FR) == set(CLAUSES) and set(NOUNS) == set(ANIMALS) | set(THINGS)
assert set(ADJ) == set(ADJECTIVES)
# the control's dictionary: one French word per English word (nouns, adjectives in the masculine)
WORDS = {**{e: f for e, (f, _) in NOUNS.items()}, **{e: m for e, (m, _) in ADJ.items()}}
# a source length never below this, in words (the shortest sentence: "the cat that saw the dog,
# jumped" has 8)
MIN_WORDS = {"notes": 8, "reverse": 1}


def words_of(text):
    """Words of a text, punctuation marks as words: "the dog, jumped" -> the, dog, ",", jumped."""
    return re.findall(r"[\w'-]+|[,.]", text)


def noun_phrase(words, i):
    """English "the [adjectives] NOUN" at words[i]: (its French words, the noun's gender, the index
    after it), or None if no noun phrase starts there."""
    j = i + 1
    while j < len(words) and words[j] in ADJ:
        j += 1
    if words[i] != "the" or j == len(words) or words[j] not in NOUNS:
        return None
    noun, gender = NOUNS[words[j]]
    adjectives = [ADJ[a][gender == "f"] for a in words[i + 1 : j]]
    if len(adjectives) == 2:
        adjectives.insert(1, "et")  # "the big black cat" -> "le chat énorme et noir"
    if noun[0] in "aeiouéâ":
        article = ["l'" + noun]  # elision: one word
    else:
        article = ["la" if gender == "f" else "le", noun]
    return article + adjectives, gender, j + 1


def clause(words, i, english, french, subject_gender):
    """The French of one clause template (N a noun phrase, A the subject's participle) if the
    English template starts at words[i]: (French words, index after it), else None."""
    phrases = []
    for template in english.replace("the N", "N").split():  # N reads its own "the"
        if template == "N":
            found = noun_phrase(words, i)
            if found is None:
                return None
            phrase, _, i = found
            phrases.append(phrase)
        elif i < len(words) and words[i] == template:
            i += 1
        else:
            return None
    out = []
    for template in french.split():
        if template == "N":
            out += phrases.pop(0)
        elif template == "A":
            out.append(SITTING[subject_gender])
        else:
            out.append(template)
    return out, i


def contract(words):
    """de + le -> du (de la and de l' stay)."""
    out = []
    for w in words:
        if w == "le" and out and out[-1] == "de":
            out[-1] = "du"
        else:
            out.append(w)
    return out


def translate(text):
    """French of an English sentence of data/long_range's grammar that ends at ", jumped"."""
    words = words_of(text)
    french, gender, i = noun_phrase(words, 0)
    while words[i:] != [",", "jumped"]:
        intro = next(x.split() for x in INTRODUCERS if words[i : i + len(x.split())] == x.split())
        i += len(intro)
        french += [",", "qui"] if intro[0] == "," else ["qui"]
        french_clause, i = next(
            found
            for english, template in CLAUSE_FR.items()
            if (found := clause(words, i, english, template, gender))
        )
        french += french_clause
    return join_words(contract(french + [",", "a", "sauté"]))


# --------------------------------------------------------------------------------------------------
# The corpus: (source, target) pairs, train up to max_words source words, val up to twice that


def english_sentence(rng, n_clauses):
    """A data/long_range sentence of n_clauses clauses, without its opening and from "jumped" on
    only the verb: "the cat that ..., jumped"."""
    subject = rng.choice(ANIMALS)
    nearest = rng.choice([a for a in ANIMALS if a != subject])
    s = make_sentence(rng, subject, nearest, n_clauses)
    start = max(i for i in range(s.subject) if s.words[i] == "the")
    return join_words(s.words[start : s.verb + 1])


def random_string(rng, n_words):
    """The control's source: n_words words drawn from the dictionary, with repetition."""
    return " ".join(rng.choice(sorted(WORDS)) for _ in range(n_words))


def reverse_translate(text):
    """The control's target: each word's French, in reverse order."""
    return " ".join(WORDS[w] for w in reversed(text.split()))


def pair(task, rng, n_words):
    """A (source, target) pair of the task whose source has about n_words words: exactly, for the
    control; for sentences, a clause count that reaches that length (the caller keeps the lengths
    it wants)."""
    if task == "reverse":
        source = random_string(rng, n_words)
        return source, reverse_translate(source)
    n_clauses = max(1, round((n_words - 3) / 6.5) + rng.choice([-1, 0, 0, 1]))
    source = english_sentence(rng, n_clauses)
    return source, translate(source)


def bucket(n_words, width=BUCKET_WIDTH):
    """The val bucket of a source length: 1-5, 6-10, ... (width 5)."""
    low = (n_words - 1) // width * width + 1
    return f"{low}-{low + width - 1}"


def corpus(task="notes", seed=1337, train_pairs=20000, val_per_bucket=100, max_words=20):
    """
    (train, val) lists of (source, target). Train: sources of MIN_WORDS to max_words words. Val:
    val_per_bucket pairs per bucket of source length up to 2 * max_words, none of them in train
    (and, for the sentences, the notes' sentence first: never in train).
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {', '.join(TASKS)}")
    rng = random.Random(f"{task} {seed}")
    low = MIN_WORDS[task]
    held_out = {NOTES_SENTENCE}
    train = []
    while len(train) < train_pairs:
        source, target = pair(task, rng, rng.randint(low, max_words))
        if low <= len(words_of(source)) <= max_words and source not in held_out:
            train.append((source, target))
    seen = {source for source, _ in train}
    val = []
    wanted = {bucket(n): val_per_bucket for n in range(low, 2 * max_words + 1)}
    while any(wanted.values()):
        n_words = rng.randint(low, 2 * max_words)
        source, target = pair(task, rng, n_words)
        name = bucket(len(words_of(source)))
        if wanted.get(name) and source not in seen and len(words_of(source)) <= 2 * max_words:
            wanted[name] -= 1
            seen.add(source)
            val.append((source, target))
    val.sort(key=lambda p: len(words_of(p[0])))
    return train, [(NOTES_SENTENCE, NOTES_FRENCH)] + val if task == "notes" else val


def line(source, target):
    return f"{source} {SEPARATOR} {target}\n"


def as_text(pairs):
    return "".join(line(*p) for p in pairs)
