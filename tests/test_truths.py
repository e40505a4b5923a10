"""Small truths the docs and the repository promise: the int8 comparisons the docs call fp32 run
fp32, every prepare script answers --input, documented commands leave nothing
untracked-but-unignored in the checkout, and a LICENSE."""

import subprocess

import pytest
from conftest import ROOT, run_script

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench.py"]


def test_docs_bench_commands_that_compare_int8_with_fp32_run_in_fp32():
    """bench.py sample's `auto` dtype is bf16 on a CPU with native bf16: a line that says fp32 must
    run fp32."""
    checked = 0
    for path in DOCS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "bench.py sample" in line and "--quantize=int8" in line and "fp32" in line:
                assert "--dtype=float32" in line or "`auto` is fp32 here" in line, (
                    f"{path.name}:{n}: {line}"
                )
                checked += 1
    assert checked >= 3


def test_long_range_prepare_answers_input_with_one_error_line(tmp_path):
    (tmp_path / "sentences.txt").write_text("the cat that saw the dog, jumped meowing.\n")
    result = run_script(
        "data/long_range/prepare.py",
        f"--input={tmp_path / 'sentences.txt'}",
        f"--out_dir={tmp_path / 'out'}",
        check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == "" and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: data/long_range generates its sentences from --seed")
    assert "data/my_text/prepare.py --input" in lines[0]
    assert not (tmp_path / "out").exists()


def test_every_prepare_script_documents_input():
    for script in sorted(ROOT.glob("data/*/prepare.py")):
        result = run_script(script.relative_to(ROOT), "--help")
        assert "--input" in result.stdout, script


# what the documented commands write inside the checkout (docs/sampling.md's
# --output=samples.jsonl, docs/attention.md's --save_dir=., docs/data.md's data/my_text and
# data/my_docs, every out_dir, W&B's files, make's .venv)
WRITTEN = [
    "samples.jsonl",
    "attention_heads.png",
    "attention_jumped.png",
    "attention.json",
    "out-speedrun-90s/ckpt.pt",
    "out/eval.json",
    "data/my_text/train.bin",
    "data/my_text/meta.json",
    "data/my_text/tokenizer.json",
    "data/my_docs/val_000.bin",
    "data/shakespeare_char/input.txt",
    "wandb/latest-run",
    ".venv/bin/python",
]
SHIPPED = [
    "docs/attention_heads.png",
    "docs/speedrun_frontier.png",
    "docs/long_range_jumped.png",
    "data/tinyshakespeare.txt",
    "data/gpt2_tokenizer/vocab.bpe",
    "LICENSE",
]


def test_gitignore_covers_what_documented_commands_write_into_the_checkout():
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True
    )
    if inside.returncode != 0:
        pytest.skip("not a git checkout")

    def ignored(paths):
        result = subprocess.run(
            ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True
        )
        return result.stdout.split()

    assert ignored(WRITTEN) == WRITTEN
    assert ignored(SHIPPED) == []


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the nanoGPT, trusted authors\n")
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
