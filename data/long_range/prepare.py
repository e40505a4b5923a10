"""
The notes' example as a corpus: sentences where the word after "jumped" depends only on the subject,
which sits behind relative clauses full of other nouns. Generated (seeded), tokenized by our
byte-level BPE (one token per word), into train.bin / val.bin / tokenizer.json / meta.json here.

    python data/long_range/prepare.py
    python data/long_range/prepare.py --seed=7 --train_sentences=40000 --out_dir=data/long_range_7

A sentence: [opening] the [adjectives] SUBJECT that|, which|, who CLAUSE [...], jumped SOUND.
    the cat that was sitting on the mat, which was next to the dog, jumped meowing.
SOUND is the subject's own (cat: meowing, dog: barking, ...), so predicting it after "jumped" needs
the subject, past every distractor. Every sentence has another animal in its clauses, so the nearest
animal to the verb is always the wrong one. Train and val never share a (subject, nearest animal)
pair, val also has sentences longer than any in train, and the notes' sentence is never in train.

It takes no --input, unlike the text scripts: those guarantees, and long_range.py's scoring (which
regenerates val from the seed in meta.json), hold only for generated sentences. --input is answered
with one error line that points to data/my_text/prepare.py, the script for a text of your
own.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from data.long_range.corpus import as_text, corpus  # noqa: E402
from gptkit.base import UserError  # noqa: E402
from gptkit.prepare import add_refused_input, prepare_split, refuse_input  # noqa: E402
from gptkit.tokenizer import BPETokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--out_dir", default=HERE, help="where the bins and meta.json go (default: here)"
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--train_sentences", type=int, default=20000)
    parser.add_argument(
        "--val_sentences",
        type=int,
        default=1000,
        help="of train's lengths, and as many longer ones",
    )
    add_refused_input(parser)
    args = parser.parse_args()
    refuse_input(
        args,
        "data/long_range generates its sentences from --seed (train and val share no subject "
        "and nearest-animal pair, and long_range.py regenerates val to score a model)",
    )
    if args.train_sentences < 1 or args.val_sentences < 1:
        raise UserError("--train_sentences and --val_sentences must be at least 1")
    train, val = corpus(args.seed, args.train_sentences, args.val_sentences)
    train_text, val_text = as_text(train), as_text(val)
    # a vocabulary this large has a merge to spare for every word: BPE stops when each word is
    # one token
    tokenizer = BPETokenizer.train(train_text, vocab_size=1024)
    for sentence in val:
        if len(tokenizer.encode(sentence.text)) != len(sentence.words):
            raise UserError(f"the BPE split a word of {sentence.text!r}: raise vocab_size")
    generator = {
        "seed": args.seed,
        "train_sentences": args.train_sentences,
        "val_sentences": args.val_sentences,
    }
    prepare_split(
        train_text,
        val_text,
        tokenizer,
        args.out_dir,
        "generated (data/long_range/prepare.py)",
        generator=generator,
    )


if __name__ == "__main__":
    from gptkit.configurator import run_cli

    run_cli(main)
