"""
Tiny Shakespeare, one token per character (65 of them), into train.bin / val.bin / meta.json here.

    python data/shakespeare_char/prepare.py                      # data/tinyshakespeare.txt
    python data/shakespeare_char/prepare.py --input=my_text.txt  # your own text: file or directory
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from gptkit.configurator import run_cli  # noqa: E402
from gptkit.prepare import prepare_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(lambda: prepare_cli(HERE, __doc__, tokenizer="char"))
