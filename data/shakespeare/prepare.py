"""
Tiny Shakespeare in GPT-2's BPE (tiktoken, 50257 tokens) into train.bin / val.bin / meta.json here.

    python data/shakespeare/prepare.py                      # data/tinyshakespeare.txt (in the repo)
    python data/shakespeare/prepare.py --input=my_text.txt  # your own text: a file or a directory
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from gptkit.configurator import run_cli  # noqa: E402
from gptkit.prepare import prepare_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(lambda: prepare_cli(HERE, __doc__, tokenizer="gpt2"))
