"""sample.py: flags, streaming, --output, --stop, interactive mode, GPT-2 directories, and bad
input."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import sample
from gptkit import checkpoint
from gptkit.tokenizer import GPT2Tokenizer

SEP = "---------------"


def base_args(out_dir, *extra):
    return [
        f"--out_dir={out_dir}",
        "--device=cpu",
        "--dtype=float32",
        "--max_new_tokens=20",
        *extra,
    ]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_text_streamed_or_not_and_output_jsonl(char_checkpoint, tmp_path, cli):
    args = base_args(char_checkpoint, "--start=ROMEO:", "--num_samples=2", "--seed=7")
    code, plain, err = cli(
        sample.main, *args, "--stream=false", f"--output={tmp_path / 'plain.jsonl'}"
    )
    assert code == 0, err
    assert err.strip().endswith("tokens/s") and err.startswith("40 tokens in ")
    for stream_flag in ("--stream=true", "--stream"):
        code, streamed, err = cli(
            sample.main, *args, stream_flag, f"--output={tmp_path / 'streamed.jsonl'}"
        )
        assert code == 0, err
        assert streamed == plain
    assert cli(sample.main, *args[:-1], "--seed=8", "--stream=false")[1] != plain

    records = read_jsonl(tmp_path / "plain.jsonl")
    assert len(records) == 2
    blocks = plain.split(SEP + "\n")
    chars = json.loads((char_checkpoint / "meta.json").read_text())["chars"]
    for record, block in zip(records, blocks, strict=False):
        assert set(record) == {"prompt", "text", "tokens", "settings", "decoding", "tokens_per_s"}
        assert record["prompt"] == "ROMEO:" and block == "ROMEO:" + record["text"] + "\n"
        assert len(record["tokens"]) == 20
        assert "".join(chars[i] for i in record["tokens"]) == record["text"]
        assert record["settings"]["seed"] == 7 and record["settings"]["max_new_tokens"] == 20
        assert record["tokens_per_s"] > 0
    # sample i draws from its own generator, seeded seed + i
    assert records[0]["text"] != records[1]["text"]
    # --output appends
    streamed_records = read_jsonl(tmp_path / "streamed.jsonl")
    assert [r["text"] for r in streamed_records] == [r["text"] for r in records] * 2


def test_generate_text_streams_in_pieces_and_never_prints_the_stop_string(char_checkpoint):
    cfg = sample.SampleConfig(out_dir=str(char_checkpoint), max_new_tokens=40, device="cpu")
    model, tokenizer = checkpoint.load_model(cfg.init_from, cfg.out_dir, "cpu")
    ids = tokenizer.encode("ROMEO:")
    full, _ = sample.generate_text(
        model, tokenizer, ids, cfg, torch.Generator().manual_seed(3), torch.no_grad()
    )
    stop = full[20:23]
    expected = full[: full.index(stop)]
    pieces = []
    cfg = sample.SampleConfig(out_dir=str(char_checkpoint), max_new_tokens=40, stop=stop)
    text, new_ids = sample.generate_text(
        model, tokenizer, ids, cfg, torch.Generator().manual_seed(3), torch.no_grad(), pieces.append
    )
    assert text == expected and "".join(pieces) == expected
    assert len([p for p in pieces if p]) > 5  # printed as it came, not at the end
    # it stopped at the token that completed the stop string
    assert len(new_ids) == full.index(stop) + len(stop)


def test_stop_string_ends_a_sample(char_checkpoint, tmp_path, cli):
    args = base_args(
        char_checkpoint, "--start=ROMEO:", "--num_samples=1", "--seed=5", "--max_new_tokens=50"
    )
    code, out, err = cli(sample.main, *args, f"--output={tmp_path / 'full.jsonl'}")
    full = read_jsonl(tmp_path / "full.jsonl")[0]["text"]
    stop = full[25:27]
    expected = full[: full.index(stop)]
    for stream in ("true", "false"):
        code, out, err = cli(sample.main, *args, f"--stop={stop}", f"--stream={stream}")
        assert code == 0, err
        assert out == f"ROMEO:{expected}\n{SEP}\n"


def test_a_batch_of_samples_is_the_text_each_seed_gives_alone(char_checkpoint, tmp_path, cli):
    args = base_args(char_checkpoint, "--start=ROMEO:", "--max_new_tokens=30", "--stream=false")
    code, out, err = cli(
        sample.main, *args, "--num_samples=3", "--seed=7", f"--output={tmp_path / 'batch.jsonl'}"
    )
    assert code == 0, err
    batch = [r["text"] for r in read_jsonl(tmp_path / "batch.jsonl")]
    alone = []
    for i in range(3):  # sample i of a batch is seeded seed + i
        code, _, err = cli(
            sample.main,
            *args,
            "--num_samples=1",
            f"--seed={7 + i}",
            f"--output={tmp_path / f'{i}.jsonl'}",
        )
        alone.append(read_jsonl(tmp_path / f"{i}.jsonl")[0]["text"])
    assert batch == alone and len(set(batch)) == 3
    # a stop string ends each row on its own; the other rows run on
    stop = batch[1][10:12]
    code, out, err = cli(sample.main, *args, "--num_samples=3", "--seed=7", f"--stop={stop}")
    assert code == 0, err
    expected = [text[: text.index(stop)] if stop in text else text for text in batch]
    assert out == "".join(f"ROMEO:{text}\n{SEP}\n" for text in expected)
    assert len(expected[1]) == 10 and max(len(t) for t in expected) > 10


def test_quantize_int8_samples_text(char_checkpoint, tmp_path, cli):
    args = base_args(
        char_checkpoint,
        "--start=ROMEO:",
        "--num_samples=2",
        "--quantize=int8",
        f"--output={tmp_path / 'q.jsonl'}",
    )
    code, out, err = cli(sample.main, *args)
    assert code == 0, err
    records = read_jsonl(tmp_path / "q.jsonl")
    assert len(records) == 2
    assert all(len(r["tokens"]) == 20 and r["settings"]["quantize"] == "int8" for r in records)
    assert out.count(SEP) == 2


def test_nanogpts_compile_flag_samples_the_same_text_with_the_eager_step_on_a_cpu(
    char_checkpoint, cli
):
    args = base_args(char_checkpoint, "--start=ROMEO:", "--num_samples=2", "--stream=false")
    code, plain, _ = cli(sample.main, *args)
    code, compiled, err = cli(sample.main, *args, "--compile=True")
    assert code == 0, err
    assert compiled == plain
    assert err.startswith("--compile=True: cpu keeps the eager decode step\n")


def test_a_cpu_without_onednn_bf16_samples_in_float32_and_names_the_dtype_it_cannot_use(
    char_checkpoint,
):
    """ONEDNN_MAX_CPU_ISA=AVX2 withholds oneDNN's bf16 kernels, as on an AVX2-only CPU."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    args = [
        sys.executable,
        os.path.join(ROOT, "sample.py"),
        *base_args(char_checkpoint)[:1],
        "--num_samples=1",
        "--max_new_tokens=5",
    ]
    auto = subprocess.run(
        [*args, "--dtype=auto"], env=env, capture_output=True, text=True, timeout=120
    )
    assert auto.returncode == 0 and auto.stderr.startswith("5 tokens in "), auto.stderr
    bf16 = subprocess.run(
        [*args, "--dtype=bfloat16"], env=env, capture_output=True, text=True, timeout=120
    )
    lines = bf16.stderr.strip().splitlines()
    assert bf16.returncode == 2 and bf16.stdout == "" and len(lines) == 1, bf16.stderr
    assert lines[0].startswith("error: this CPU cannot sample in torch.bfloat16")
    assert lines[0].endswith("use --dtype=float32")


def test_stop_string_escapes_mean_newline():
    assert sample.unescape("\\n\\n") == "\n\n" and sample.unescape("a\\tb") == "a\tb"


def test_interactive_mode_reads_piped_prompts_until_eof(char_checkpoint, cli):
    args = base_args(char_checkpoint, "--seed=11", "--max_new_tokens=25")
    result = subprocess.run(
        [sys.executable, "sample.py", *args, "--interactive"],
        input="ROMEO:\nhé€llo\nJULIET:\n",
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split(SEP + "\n")
    assert len(blocks) == 3 and blocks[2] == ""  # two continuations, each ended by the separator
    # the continuation only, no prompt echo
    assert all(len(b) == 25 + 1 and ">>>" not in b for b in blocks[:2])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # reported, then the loop goes on
    assert errors == ["error: characters not in this model's vocabulary: 'é€'"]
    # the first continuation is what a plain run gives for that prompt and seed
    code, out, err = cli(sample.main, *args, "--start=ROMEO:", "--num_samples=1")
    assert out == "ROMEO:" + blocks[0] + SEP + "\n"


def test_init_from_a_hugging_face_gpt2_directory(gpt2_hf_dir, tmp_path, cli):
    output = tmp_path / "hf.jsonl"
    args = [
        f"--init_from={gpt2_hf_dir}",
        "--device=cpu",
        "--dtype=float32",
        "--start=Hello, world",
        "--num_samples=1",
        "--max_new_tokens=8",
        "--top_p=0.9",
        f"--output={output}",
    ]
    code, out, err = cli(sample.main, *args)
    assert code == 0, err
    record = read_jsonl(output)[0]
    assert len(record["tokens"]) == 8 and max(record["tokens"]) < 50257
    assert record["text"] == GPT2Tokenizer().decode(record["tokens"])
    assert out == "Hello, world" + record["text"] + "\n" + SEP + "\n"


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--temperature=-0.5", "error: --temperature=-0.5 must be >= 0"),
        ("--top_p=0", "error: --top_p=0.0 must be in (0, 1]"),
        ("--top_p=1.5", "error: --top_p=1.5 must be in (0, 1]"),
        ("--top_k=0", "error: --top_k=0 must be at least 1"),
        ("--stream=maybe", "error: --stream=maybe must be auto, true or false"),
        ("--quantize=int3", "error: --quantize=int3 must be one of none, int8, int4"),
    ],
)
def test_bad_settings_are_one_clear_line(char_checkpoint, cli, flag, message):
    code, out, err = cli(sample.main, *base_args(char_checkpoint), flag)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [message]


def test_no_checkpoint_is_one_clear_line(tmp_path, cli):
    code, out, err = cli(sample.main, *base_args(tmp_path))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: no checkpoint at {tmp_path / 'ckpt.pt'}: train first, or check out_dir"
    ]


class Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoint_that_needs_unpickling_is_refused_and_its_code_never_runs(
    char_checkpoint, tmp_path, cli
):
    marker = tmp_path / "code_ran"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    torch.save({"model": Payload(marker), "model_args": {}}, out_dir / "ckpt.pt")
    (out_dir / "meta.json").write_text((char_checkpoint / "meta.json").read_text())
    code, out, err = cli(sample.main, *base_args(out_dir))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"error: {out_dir / 'ckpt.pt'} is corrupt, truncated or unsafe to load"
    )
    assert not marker.exists()
    # the payload is live: unsafe loading would have run it
    torch.load(out_dir / "ckpt.pt", weights_only=False)
    assert marker.exists()


def test_prompt_characters_outside_the_vocabulary_are_named(char_checkpoint, cli):
    code, out, err = cli(sample.main, *base_args(char_checkpoint, "--start=Ромео: hi"))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: characters not in this model's vocabulary: 'Ремо'"]


def test_prompt_longer_than_the_context_is_cropped_with_a_warning(char_checkpoint, tmp_path, cli):
    # 74 characters, context 32
    prompt = "To be, or not to be, that is the question: whether 'tis nobler in the mind"
    code, out, err = cli(
        sample.main,
        *base_args(
            char_checkpoint,
            f"--start={prompt}",
            "--num_samples=1",
            f"--output={tmp_path / 'o.jsonl'}",
        ),
    )
    assert code == 0, err
    assert (
        "warning: the prompt has 74 tokens, more than the context of 32; keeping the last 32" in err
    )
    record = read_jsonl(tmp_path / "o.jsonl")[0]
    assert out.startswith(prompt) and len(record["tokens"]) == 20
