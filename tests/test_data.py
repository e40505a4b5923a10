"""
data/: the prepare scripts (char, GPT-2 BPE, own BPE, streamed shards), the batch loader, training
and sampling on each kind of data, and one clear line for each kind of bad input.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, SHAKESPEARE, run_script, train_args

from gptkit.loader import BatchLoader
from gptkit.prepare import ShardWriter, split_text, stream_documents
from gptkit.tokenizer import GPT2Tokenizer, load_tokenizer

TEXT = SHAKESPEARE.read_text(encoding="utf-8")
QUICK = [
    "--max_iters=4",
    "--eval_interval=4",
    "--eval_iters=2",
    "--log_interval=4",
    "--dtype=float32",
]


def read_meta(data_dir):
    return json.loads((data_dir / "meta.json").read_text())


def read_bins(data_dir, split):
    meta = read_meta(data_dir)
    files = sorted(data_dir.glob(f"{split}.bin")) or sorted(data_dir.glob(f"{split}_*.bin"))
    return [np.fromfile(f, dtype=meta["dtype"]) for f in files]


def assert_one_line_error(result, *phrases):
    """The contract for bad input: exit 2, one line `error: ...` on stderr naming the problem, no
    traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


# --------------------------------------------------------------------------------------------------
# Text that fits in memory: char, GPT-2 BPE, our own BPE


@pytest.fixture(scope="module")
def gpt2_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shakespeare_gpt2")
    run_script("data/shakespeare/prepare.py", f"--input={SHAKESPEARE}", f"--out_dir={out}")
    return out


def prepare_bpe(out, text):
    out.mkdir(exist_ok=True)
    (out / "input.txt").write_text(text, encoding="utf-8")
    run_script(
        "data/shakespeare_bpe/prepare.py",
        f"--input={out / 'input.txt'}",
        f"--out_dir={out}",
        "--vocab_size=512",
    )
    return out


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory):
    return prepare_bpe(tmp_path_factory.mktemp("shakespeare_bpe"), TEXT[:300_000])


def test_prepare_gpt2_shakespeare_matches_nanogpt(gpt2_data):
    meta = read_meta(gpt2_data)
    assert meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16"
    assert (meta["vocab_size"], meta["eot"]) == (50257, 50256)
    # nanoGPT's README numbers
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)
    (train,), (val,) = read_bins(gpt2_data, "train"), read_bins(gpt2_data, "val")
    tok = load_tokenizer(meta, gpt2_data)
    assert (tok.decode(train.tolist()), tok.decode(val.tolist())) == split_text(TEXT)


def test_prepare_own_bpe_writes_its_tokenizer_beside_the_bins(bpe_data):
    meta = read_meta(bpe_data)
    assert meta["tokenizer"] == "bpe" and meta["vocab_size"] == 512 and meta["dtype"] == "uint16"
    tok = load_tokenizer(meta, bpe_data)  # from bpe_data/tokenizer.json
    assert tok.meta()["tokenizer_sha256"] == meta["tokenizer_sha256"]
    (train,), (val,) = read_bins(bpe_data, "train"), read_bins(bpe_data, "val")
    assert (tok.decode(train.tolist()), tok.decode(val.tolist())) == split_text(TEXT[:300_000])
    assert len(train) + len(val) < 0.6 * 300_000  # it learned merges: fewer tokens than bytes


def test_prepare_input_directory_joins_its_txt_files(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.txt").write_text("second file " * 30, encoding="utf-8")
    (tmp_path / "in" / "a.txt").write_text("first file " * 30, encoding="utf-8")
    (tmp_path / "in" / "notes.md").write_text("not read: ZZZ", encoding="utf-8")
    run_script(
        "data/shakespeare_char/prepare.py",
        f"--input={tmp_path / 'in'}",
        f"--out_dir={tmp_path / 'out'}",
    )
    meta = read_meta(tmp_path / "out")
    (train,), (val,) = read_bins(tmp_path / "out", "train"), read_bins(tmp_path / "out", "val")
    text = "".join(meta["chars"][i] for i in np.concatenate([train, val]))
    # sorted by name, joined by a blank line
    assert text == "first file " * 30 + "\n\n" + "second file " * 30
    assert "Z" not in meta["chars"]


@pytest.mark.parametrize(
    "case, phrase",
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("binary", "looks binary"),
        ("latin1", "is not UTF-8"),
        ("no_txt_dir", "holds no .txt files"),
        ("tiny_bpe_vocab", "vocab_size=100 is too small"),
    ],
)
def test_prepare_bad_input_is_one_clear_line(case, phrase, tmp_path):
    script, path, extra = "data/shakespeare_char/prepare.py", tmp_path / "input.txt", []
    if case == "empty":
        path.write_text("  \n\n ")
    elif case == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "latin1":
        path.write_bytes("café crème".encode("latin-1"))
    elif case == "no_txt_dir":
        path = tmp_path
    elif case == "tiny_bpe_vocab":
        path.write_text(TEXT[:2000])
        script, extra = "data/shakespeare_bpe/prepare.py", ["--vocab_size=100"]
    result = run_script(
        script, f"--input={path}", f"--out_dir={tmp_path / 'out'}", *extra, check=False
    )
    assert_one_line_error(result, phrase)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_truncated_token_file_is_named_with_the_fix(char_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    with open(data / "train.bin", "r+b") as f:
        f.truncate(1001)  # half a uint16 token at the end: a copy or download cut short
    result = run_script(*train_args(data, tmp_path / "out", "--max_iters=1"), check=False)
    assert_one_line_error(result, f"{data / 'train.bin'} is truncated", "prepare the dataset again")


def offline_env(tmp_path):
    """No network (every proxy a closed port), no tiktoken cache variable, an empty temp dir for
    tiktoken's default cache."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    (tmp_path / "tmp").mkdir(parents=True)
    dead = "http://127.0.0.1:9"
    return {
        **env,
        "TMPDIR": str(tmp_path / "tmp"),
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
    }


def test_gpt2_bpe_works_offline_with_no_setup(tmp_path):
    # the default input (the repo's Tiny Shakespeare) and the repo's GPT-2 files: nothing from
    # outside the clone
    code = (
        "import os, sys; sys.path.insert(0, os.getcwd())\n"
        "from gptkit.tokenizer import GPT2Tokenizer\n"
        "print(GPT2Tokenizer().encode('Hello world'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=offline_env(tmp_path),
    )
    # GPT-2's ids, as tiktoken.get_encoding("gpt2") gives
    assert result.stdout.strip() == "[15496, 995]", result.stderr
    result = subprocess.run(
        [sys.executable, "data/shakespeare/prepare.py", f"--out_dir={tmp_path / 'out'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=offline_env(tmp_path / "second"),
    )
    assert result.returncode == 0, result.stderr
    meta = read_meta(tmp_path / "out")
    assert meta["vocab_size"] == 50257
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)


def test_gpt2_files_are_checked_before_use(tmp_path):
    from gptkit.tokenizer import GPT2_DIR, gpt2_encoding

    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes((Path(GPT2_DIR) / name).read_bytes())
    with open(tmp_path / "vocab.bpe", "ab") as f:
        f.write(b"x y\n")  # one merge more than GPT-2 has
    with pytest.raises(ValueError, match="vocab.bpe has sha256 .* not GPT-2's"):
        gpt2_encoding(str(tmp_path))


# --------------------------------------------------------------------------------------------------
# The streaming path: a corpus in shards, memory flat in its size

# 3000 documents, about 470 kB, 110k tokens
DOCS = TEXT.split("\n\n")[:3000]
SHARD, VAL = 20_000, 12_000
# the largest process among prepare.py and its workers, in kB
PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True);"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def fineweb_args(input_dir, out_dir, *extra):
    """data/fineweb/prepare.py on local files, run under a fresh parent that prints the peak RSS of
    its children."""
    return [
        "-c",
        PEAK_RSS,
        sys.executable,
        "data/fineweb/prepare.py",
        f"--input={input_dir}",
        f"--out_dir={out_dir}",
        f"--shard_tokens={SHARD}",
        f"--val_tokens={VAL}",
        "--num_proc=2",
        *extra,
    ]


def run_together(commands, env=None):
    """Run scripts at the same time: each spends most of its time starting up on one core."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: run_script(*args, env=env), commands))


@pytest.fixture(scope="module")
def doc_tokens():
    """DOCS as GPT-2 tokens, each document after <|endoftext|> (its separator), tokenized here in
    one process."""
    enc = GPT2Tokenizer()
    return np.concatenate([[enc.eot, *enc.encode(doc)] for doc in DOCS])


@pytest.fixture(scope="module")
def fineweb(tmp_path_factory, doc_tokens):
    """The streaming prepare on 1 parquet file and on 10 (capped by --max_tokens): {name: (dir,
    meta, peak MB)}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("fineweb")
    for copies in (1, 10):
        (root / f"in{copies}").mkdir()
        # real corpora come as many parquet files; row groups keep each read small
        for i in range(copies):
            pq.write_table(
                pa.table({"text": DOCS, "id": range(len(DOCS))}),
                root / f"in{copies}" / f"part_{i}.parquet",
                row_group_size=500,
            )
    commands = [
        fineweb_args(root / "in1", root / "out1"),
        fineweb_args(root / "in10", root / "out10", f"--max_tokens={fineweb_cap(doc_tokens)}"),
    ]
    results = run_together(commands)
    peaks = [int(r.stdout.strip().splitlines()[-1]) / 1024 for r in results]  # ru_maxrss is in kB
    return {
        name: (root / f"out{name[:-1]}", read_meta(root / f"out{name[:-1]}"), peak)
        for name, peak in zip(["1x", "10x"], peaks, strict=True)
    }


def fineweb_cap(doc_tokens):
    return 9 * len(doc_tokens) + 7  # within the 10x input, and not a multiple of anything


def test_fineweb_writes_fixed_size_shards_of_the_documents(fineweb, doc_tokens):
    out, meta, _ = fineweb["1x"]
    val, train = read_bins(out, "val"), read_bins(out, "train")
    assert (
        [len(s) for s in val] == [VAL]
        and all(len(s) == SHARD for s in train[:-1])
        and 0 < len(train[-1]) <= SHARD
    )
    np.testing.assert_array_equal(np.concatenate(val + train), doc_tokens)
    assert meta["tokenizer"] == "gpt2"
    assert (meta["val_tokens"], meta["train_tokens"]) == (VAL, len(doc_tokens) - VAL)
    val_text = GPT2Tokenizer().decode([t for t in doc_tokens[:VAL].tolist() if t != meta["eot"]])
    # for bits per byte: the text, not the separators
    assert meta["val_bytes"] == len(val_text.encode("utf-8"))


def test_fineweb_max_tokens_caps_the_output(fineweb, doc_tokens):
    out, meta, _ = fineweb["10x"]
    cap = fineweb_cap(doc_tokens)
    assert meta["val_tokens"] + meta["train_tokens"] == cap
    assert sum(len(s) for s in read_bins(out, "val") + read_bins(out, "train")) == cap


def test_fineweb_memory_stays_flat_as_the_corpus_grows(fineweb):
    (_, small, peak_1x), (_, large, peak_10x) = fineweb["1x"], fineweb["10x"]
    assert large["train_tokens"] > 8 * small["train_tokens"]
    # holding the 10x corpus' tokens as Python ints would add about 45 MB; streaming adds a few
    # MB at most
    assert peak_10x < peak_1x + 20, (peak_1x, peak_10x)


def test_jsonl_and_txt_stream_through_the_same_code_path(tmp_path):
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"text": d, "n": i}) + "\n" for i, d in enumerate(DOCS[:50])),
        encoding="utf-8",
    )
    assert list(stream_documents(str(tmp_path / "docs.jsonl"))) == DOCS[:50]
    (tmp_path / "docs.txt").write_text("\n\n".join(DOCS[:50]), encoding="utf-8")
    # paragraphs are documents
    assert [d.strip("\n") for d in stream_documents(str(tmp_path / "docs.txt"))] == DOCS[:50]
    with pytest.raises(ValueError, match="text column 'body'"):
        next(stream_documents(str(tmp_path / "docs.jsonl"), text_field="body"))


def test_fineweb_offline_without_input_is_one_clear_line(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = run_script("data/fineweb/prepare.py", f"--out_dir={tmp_path}", env=env, check=False)
    assert_one_line_error(result, "HuggingFaceFW/fineweb-edu", "--input=")


def test_shard_writer_splits_val_then_train_exactly(tmp_path):
    writer = ShardWriter(tmp_path, shard_tokens=10, val_tokens=25, tokenizer=GPT2Tokenizer())
    # chunks straddle every boundary
    for chunk in np.array_split(np.arange(87, dtype=np.uint16), 7):
        writer.add(chunk)
    writer.flush()
    sizes = {f.name: len(np.fromfile(f, dtype=np.uint16)) for f in sorted(tmp_path.glob("*.bin"))}
    assert sizes == {
        "val_000.bin": 10,
        "val_001.bin": 10,
        "val_002.bin": 5,
        **{f"train_00{i}.bin": 10 for i in range(6)},
        "train_006.bin": 2,
    }
    files = [tmp_path / f"val_00{i}.bin" for i in range(3)]
    files += [tmp_path / f"train_00{i}.bin" for i in range(7)]
    np.testing.assert_array_equal(
        np.concatenate([np.fromfile(f, dtype=np.uint16) for f in files]), np.arange(87)
    )


# --------------------------------------------------------------------------------------------------
# The loader: batches a pure function of (seed, split, step, micro_step)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Three train shards whose tokens say which shard they are in (shard k holds k*1000 +
    offset)."""
    out = tmp_path_factory.mktemp("sharded")
    for k, n in enumerate([300, 500, 40]):  # the last is too short for a window and is skipped
        (np.arange(n) + 1000 * k).astype(np.uint16).tofile(out / f"train_00{k}.bin")
    np.arange(200, dtype=np.uint16).tofile(out / "val_000.bin")
    (out / "meta.json").write_text(
        json.dumps({"tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16"})
    )
    return out


def test_batches_are_a_pure_function_of_seed_split_and_step(sharded):
    a, b = BatchLoader(sharded, 64, 4, seed=1), BatchLoader(sharded, 64, 4, seed=1)
    b.get_batch("train", 9)  # drawing other batches first changes nothing
    for args in [("train", 3), ("train", 3, 1), ("val", 3)]:
        for x, y in zip(a.get_batch(*args), b.get_batch(*args), strict=True):
            assert x.equal(y)
    x3, _ = a.get_batch("train", 3)
    assert not x3.equal(a.get_batch("train", 4)[0]) and not x3.equal(a.get_batch("train", 3, 1)[0])
    assert not x3.equal(BatchLoader(sharded, 64, 4, seed=2).get_batch("train", 3)[0])
    first, again = a.eval_batches("val", 3), b.eval_batches("val", 3)
    assert all(x.equal(x2) and y.equal(y2) for (x, y), (x2, y2) in zip(first, again, strict=True))
    assert not first[0][0].equal(first[1][0])


def test_windows_come_from_every_shard_and_never_straddle_two(sharded):
    loader = BatchLoader(sharded, 64, 8, seed=0)
    shards_seen = set()
    for step in range(20):
        x, y = loader.get_batch("train", step)
        assert x.shape == y.shape == (8, 64) and x.dtype == y.dtype == torch.int64
        # y is x shifted by one
        assert (y[:, :-1] == x[:, 1:]).all() and (y[:, -1] == x[:, -1] + 1).all()
        assert (x // 1000 == x[:, :1] // 1000).all()  # one shard per window
        shards_seen |= set((x[:, 0] // 1000).tolist())
    assert shards_seen == {0, 1}  # the 40-token shard is shorter than a window
    assert loader.num_tokens("train") == 800


def test_full_split_batches_cover_every_token_once(sharded):
    loader = BatchLoader(sharded, 64, 2)
    targets = np.concatenate([y.flatten().numpy() for _, y in loader.full_split_batches("train")])
    np.testing.assert_array_equal(
        targets, np.concatenate([np.arange(1, 300), np.arange(1001, 1500)])
    )


# --------------------------------------------------------------------------------------------------
# train.py and sample.py on each kind of data


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bpe_data, fineweb):
    """A few iterations of a tiny model on our own BPE and on GPT-2-BPE shards: {kind: (data_dir,
    out_dir)}."""
    result = {
        kind: (data_dir, tmp_path_factory.mktemp("run"))
        for kind, data_dir in [("bpe", bpe_data), ("gpt2 shards", fineweb["1x"][0])]
    }
    run_together([train_args(data_dir, out, *QUICK) for data_dir, out in result.values()])
    return result


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2 shards"])
def test_train_then_sample_with_the_datasets_tokenizer(kind, runs, tiny_run, char_data, tmp_path):
    data_dir, out = (char_data, tiny_run) if kind == "char" else runs[kind]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (
        all(np.isfinite([m["train_loss"], m["val_loss"]]).all() for m in metrics)
        and (out / "ckpt.pt").exists()
    )
    assert read_meta(out) == read_meta(data_dir)  # train.py copied the tokenizer's description
    args = [
        f"--out_dir={out}",
        "--start=ROMEO:",
        "--num_samples=1",
        "--max_new_tokens=30",
        f"--output={tmp_path / 's.jsonl'}",
    ]
    result = run_script("sample.py", *args, "--device=cpu")
    record = json.loads((tmp_path / "s.jsonl").read_text())
    tok = load_tokenizer(read_meta(data_dir), data_dir)
    assert len(record["tokens"]) == 30 and all(0 <= t < tok.vocab_size for t in record["tokens"])
    assert record["text"] == tok.decode(record["tokens"])
    assert "ROMEO:" + record["text"] in result.stdout


def test_resume_on_a_differently_tokenized_dataset_is_one_clear_line(runs, tmp_path):
    _, out = runs["bpe"]
    # a failed check must not touch the run; a copy keeps it safe anyway
    shutil.copytree(out, tmp_path / "run")
    # same kind, same vocab size, other merges
    other = prepare_bpe(tmp_path / "other", TEXT[300_000:600_000])
    assert read_meta(other)["vocab_size"] == read_meta(out)["vocab_size"]
    result = run_script(
        *train_args(other, tmp_path / "run", "--init_from=resume", "--max_iters=8"), check=False
    )
    assert_one_line_error(result, "does not match the checkpoint's")


def test_text_smaller_than_one_block_is_one_clear_line(tmp_path):
    (tmp_path / "small.txt").write_text(TEXT[:200], encoding="utf-8")
    run_script(
        "data/shakespeare_char/prepare.py",
        f"--input={tmp_path / 'small.txt'}",
        f"--out_dir={tmp_path / 'd'}",
    )
    assert_one_line_error(
        run_script(*train_args(tmp_path / "d", tmp_path / "out"), check=False),
        "block_size=32 is too large",
        "lower block_size",
    )


def test_dataset_without_bins_says_to_run_prepare(tmp_path, char_data):
    shutil.copy(char_data / "meta.json", tmp_path / "meta.json")
    result = run_script(*train_args(tmp_path, tmp_path / "out"), check=False)
    assert_one_line_error(result, "has no train.bin", "prepare.py")


def test_sample_names_characters_outside_the_vocabulary(tiny_run):
    result = run_script(
        "sample.py", f"--out_dir={tiny_run}", "--start=ROMEO: ✓ Über", "--device=cpu", check=False
    )
    assert_one_line_error(result, "not in this model's vocabulary", "Ü✓")
