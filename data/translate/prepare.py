"""
The notes' translation as a corpus: lines `english = french`, data/long_range's sentences (up to
"jumped") translated by rule (data/translate/corpus.py), or with --task=reverse the control, random
word strings translated word by word and reversed. Generated (seeded), tokenized by our byte-level
BPE, into train.bin / val.bin / tokenizer.json / meta.json.

    python data/translate/prepare.py                    # -> data/translate
    python data/translate/prepare.py --task=reverse     # -> data/translate_reverse

Train's sources have up to --max_words words; val has --val_per_bucket pairs in each bucket of five
source lengths up to twice that (1-5, 6-10, ..., 36-40 by default), none of them in train, and, for
the sentences, the notes' sentence, never in train. A model learns `source = target` as a language
model; long_range.py --task=translate greedy-translates val (regenerated from meta.json's
generator) and scores it by source length. meta.json's longest_val_pair_tokens is the context a GPT
needs to hold every val pair.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from data.translate.corpus import TASKS, as_text, corpus, line  # noqa: E402
from gptkit.base import UserError  # noqa: E402
from gptkit.prepare import add_refused_input, prepare_split, refuse_input  # noqa: E402
from gptkit.tokenizer import BPETokenizer  # noqa: E402

OUT_DIRS = {"notes": HERE, "reverse": os.path.join(HERE, "..", "translate_reverse")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--task", default="notes", choices=TASKS)
    parser.add_argument(
        "--out_dir", help="where the bins and meta.json go (default: data/translate, or _reverse)"
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--train_pairs", type=int, default=20000)
    parser.add_argument("--val_per_bucket", type=int, default=100)
    parser.add_argument(
        "--max_words", type=int, default=20, help="train's longest source; val's is twice it"
    )
    add_refused_input(parser)
    args = parser.parse_args()
    refuse_input(
        args,
        "data/translate generates its pairs from --seed (val's sentences are never in train, "
        "and long_range.py regenerates val to score a model)",
    )
    if min(args.train_pairs, args.val_per_bucket) < 1 or args.max_words < 10:
        raise UserError(
            "--train_pairs and --val_per_bucket must be at least 1, --max_words at least 10"
        )
    generator = {
        "task": args.task,
        "seed": args.seed,
        "train_pairs": args.train_pairs,
        "val_per_bucket": args.val_per_bucket,
        "max_words": args.max_words,
    }
    train, val = corpus(**generator)
    train_text = as_text(train)
    # a vocabulary this large has a merge to spare for every word: BPE stops when each word is one
    # token (the elided "l'arbre" is three)
    tokenizer = BPETokenizer.train(train_text, vocab_size=1024)
    longest = max(len(tokenizer.encode(line(*pair))) for pair in val)
    prepare_split(
        train_text,
        as_text(val),
        tokenizer,
        args.out_dir or OUT_DIRS[args.task],
        "generated (data/translate/prepare.py)",
        generator=generator,
        longest_val_pair_tokens=longest,
    )
    print(f"the longest val pair is {longest} tokens: a GPT's block_size must hold it")


if __name__ == "__main__":
    from gptkit.configurator import run_cli

    run_cli(main)
