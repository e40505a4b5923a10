"""
FineWeb-Edu (or any large text corpus) in GPT-2's BPE, streamed: documents are read with `datasets`
(streaming=True), tokenized by worker processes and written as fixed-size shards val_000.bin, ...,
train_000.bin, ... here, so the corpus never has to fit in memory.

    python data/fineweb/prepare.py --max_tokens=1_000_000_000  # sample-10BT, first 1B tokens
    python data/fineweb/prepare.py --input=my_docs.parquet --out_dir=data/my_docs  # local file(s)

Each document is preceded by <|endoftext|>. A local file goes through the same streaming code path:
a "text" column per row (parquet, jsonl), or blank-line-separated paragraphs (.txt).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from gptkit.configurator import run_cli  # noqa: E402
from gptkit.prepare import prepare_stream, stream_documents  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--input", help="a .parquet/.jsonl/.txt file or a directory of them (default: --dataset)"
    )
    parser.add_argument(
        "--dataset", default="HuggingFaceFW/fineweb-edu", help="a Hugging Face dataset"
    )
    parser.add_argument("--name", default="sample-10BT", help="the dataset's config")
    parser.add_argument(
        "--text_field", default="text", help="the column holding each document's text"
    )
    parser.add_argument("--out_dir", default=HERE)
    parser.add_argument(
        "--shard_tokens", type=int, default=100_000_000, help="tokens per shard (200 MB as uint16)"
    )
    parser.add_argument(
        "--val_tokens", type=int, default=10_000_000, help="the first tokens go to val"
    )
    parser.add_argument(
        "--max_tokens",
        type=int,
        default=0,
        help="stop after this many tokens (0: the whole corpus)",
    )
    parser.add_argument(
        "--num_proc",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="tokenizer processes",
    )
    args = parser.parse_args()
    documents = stream_documents(args.input, args.dataset, args.name, args.text_field)
    source = args.input or f"{args.dataset} ({args.name})"
    prepare_stream(
        documents,
        args.out_dir,
        source,
        args.shard_tokens,
        args.val_tokens,
        args.max_tokens,
        args.num_proc,
    )


if __name__ == "__main__":
    run_cli(main)
