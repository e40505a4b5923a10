r"""
Your own text (a .txt file, or a directory of them) into train.bin / val.bin here, in a byte-level
BPE trained on its train split (Hugging Face `tokenizers`), for config/train_my_text.py.

    python data/my_text/prepare.py --input=my.txt
    python data/my_text/prepare.py --input=my_texts/ --vocab_size=4096
    python data/my_text/prepare.py --input=my.txt --tokenizer=char   # a small alphabet or corpus
    python train.py config/train_my_text.py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from gptkit.configurator import run_cli  # noqa: E402
from gptkit.prepare import prepare_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(lambda: prepare_cli(HERE, __doc__, tokenizer="bpe", input_required=True))
