r"""
Tiny Shakespeare in our own byte-level BPE (Hugging Face `tokenizers`, trained on the train split),
into train.bin / val.bin / tokenizer.json / meta.json here.

    python data/shakespeare_bpe/prepare.py   # 2048 tokens, data/tinyshakespeare.txt
    python data/shakespeare_bpe/prepare.py --vocab_size=4096 --input=my_text.txt \
        --out_dir=data/my_text
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from gptkit.configurator import run_cli  # noqa: E402
from gptkit.prepare import prepare_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(lambda: prepare_cli(HERE, __doc__, tokenizer="bpe"))
