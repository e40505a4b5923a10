"""Shared fixtures: a prepared Tiny Shakespeare (the repo's copy, never the network) and a tiny
trained run."""

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"

# a model small enough to train 50 iterations in seconds
TINY = [
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=8",
    "--gradient_accumulation_steps=1",
    "--dropout=0.0",
    "--device=cpu",
]


# `make test` hands whole files to whichever pytest-xdist worker is free, in this order: the
# longest first (measured), so no long file starts last while the other core idles (files not
# named keep their place, after these); the torchrun files apart, since they take turns
# (one_torchrun_file_at_a_time).
LONGEST_FIRST = [
    "test_attention_page.py",
    "test_long_range.py",
    "test_bench.py",
    "test_fsdp.py",
    "test_outdir.py",
    "test_data.py",
    "test_train.py",
    "test_ddp.py",
    "test_resume.py",
    "test_resume_settings.py",
    "test_train_wiring.py",
    "test_recurrent.py",
    "test_ddp_resume.py",
    "test_nanogpt.py",
]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    # stable: a file's tests keep their order
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


TORCHRUN_FILES = ("test_ddp", "test_ddp_resume", "test_fsdp")


@pytest.fixture(scope="module", autouse=True)
def one_torchrun_file_at_a_time(request, tmp_path_factory):
    """The files that launch torchrun take turns (a lock shared by `make test`'s workers), as they
    did before the suite ran on every core: two gloo jobs at once is a setting the suite never meant
    to test."""
    if request.module.__name__ not in TORCHRUN_FILES:
        yield
        return
    with open(tmp_path_factory.getbasetemp().parent / "torchrun.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def run_script(*args, env=None, check=True, timeout=300):
    """Run a repo script as a user would, in a subprocess; returns CompletedProcess with text
    output."""
    full_env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    result = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def start_until(path, *args):
    """Start a repo script like run_script but in the background: its Popen (text output) once
    `path` exists. With keep_last, a run's ckpt_NNNNNN.pt appears only once that checkpoint is
    complete."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {path.name} after 120 s"
        time.sleep(0.005)
    return proc


def torchrun_ranks(proc):
    """The pids of the ranks torchrun started."""
    return [int(pid) for pid in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]


def train_args(data_dir, out_dir, *extra):
    return [
        "train.py",
        f"--dataset={data_dir}",
        f"--out_dir={out_dir}",
        *TINY,
        "--progress=False",
        *extra,
    ]


@pytest.fixture(scope="session")
def char_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("shakespeare_char")
    # no --input: the repo's own Tiny Shakespeare
    run_script("data/shakespeare_char/prepare.py", f"--out_dir={out}")
    return out


@pytest.fixture(scope="session")
def tiny_run(char_data, tmp_path_factory):
    """A 60-iteration run on Tiny Shakespeare characters: its out_dir."""
    out = tmp_path_factory.mktemp("tiny_run")
    args = [
        "--max_iters=60",
        "--eval_interval=30",
        "--eval_iters=5",
        "--log_interval=10",
        "--learning_rate=3e-3",
        "--warmup_iters=5",
        "--lr_decay_iters=60",
        "--dtype=float32",
    ]
    run_script(*train_args(char_data, out, *args))
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny in-process models on one thread: on a busy 2-core machine two OpenMP
    threads spin-wait for each other and make tiny forward passes many times slower (measured:
    docs/performance.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def char_checkpoint(tmp_path_factory):
    """An out_dir as train.py leaves it (ckpt.pt + meta.json) for an untrained tiny char model:
    instant to make."""
    import json

    import torch

    from gptkit.tokenizer import CharTokenizer
    from model import GPT, GPTConfig

    out = tmp_path_factory.mktemp("char_checkpoint")
    tokenizer = CharTokenizer.from_text(SHAKESPEARE.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    config = GPTConfig(
        block_size=32, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32, dropout=0.0
    )
    model_args = {f: getattr(config, f) for f in config.__dataclass_fields__}
    torch.save(
        {"model": GPT(config).state_dict(), "model_args": model_args, "iter_num": 0},
        out / "ckpt.pt",
    )
    (out / "meta.json").write_text(json.dumps(tokenizer.meta()))
    return out


@pytest.fixture(scope="session")
def gpt2_hf_dir(tmp_path_factory):
    """A tiny random GPT-2 (vocab 50257) saved in Hugging Face format."""
    import torch

    from gptkit.pretrained import save_pretrained
    from model import GPT, GPTConfig

    root = tmp_path_factory.mktemp("gpt2_hf")
    torch.manual_seed(0)
    save_pretrained(
        GPT(GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=2, n_embd=16, bias=True)),
        root / "model",
    )
    return root / "model"


@pytest.fixture
def cli(capsys):
    """Run a script's main(argv) in this process, through run_cli as `python script.py` does: (exit
    code, stdout, stderr)."""
    from gptkit.configurator import run_cli

    def run(main, *args):
        capsys.readouterr()
        try:
            run_cli(lambda: main([str(a) for a in args]))
            code = 0
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


# --------------------------------------------------------------------------------------------------
# Training tests (test_train.py, test_resume.py, test_faults.py, test_wandb.py, test_ddp.py)

# Tiny models gain nothing from threads; on a shared 2-core machine extra threads only spin
# (one_torch_thread).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def train(data_dir, out_dir, *extra, env=None, check=True):
    """train.py on the tiny model in float32 (bit-exact on CPU), one thread."""
    return run_script(
        *train_args(data_dir, out_dir, "--dtype=float32", *extra),
        env={**ONE_THREAD, **(env or {})},
        check=check,
    )


def read_jsonl(path):
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_train_main(argv, monkeypatch, capsys):
    """train.main() in this process, through run_cli as the script does: (exit code, stdout, stderr
    lines)."""
    import train as train_module

    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, argv)])
    try:
        train_module.run_cli(train_module.main)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


# --------------------------------------------------------------------------------------------------
# Tiny in-process GPTs (test_model.py, test_decoding.py)

VOCAB = 37

# every architecture switch, one at a time, and all of them together
SWITCHES = {
    "gpt2": {},
    "no_bias": dict(bias=False),
    "rmsnorm": dict(norm="rmsnorm"),
    "rope": dict(pos="rope"),
    "relu2": dict(mlp="relu2"),
    "gelu_exact": dict(mlp="gelu_exact"),  # nanoGPT's nn.GELU()
    "qk_norm": dict(qk_norm=True),
    "untied": dict(tie_weights=False),
    "softcap": dict(logit_softcap=1.0),  # beyond the notes, as the next ones
    "value_embeds": dict(value_embeds=True),
    "unet": dict(unet=True, n_layer=3),  # one skip (layer 0 -> layer 2) around a middle layer
    "all": dict(
        bias=False,
        norm="rmsnorm",
        pos="rope",
        mlp="relu2",
        qk_norm=True,
        tie_weights=False,
        logit_softcap=1.0,
        value_embeds=True,
        unet=True,
    ),
}


def tiny_gpt(seed=0, **overrides):
    import torch

    from model import GPT, GPTConfig

    torch.manual_seed(seed)
    defaults = dict(block_size=12, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    config = GPTConfig(**{**defaults, **overrides})
    model = GPT(config).eval()
    # larger weights than GPT-2's init, so logits are far from uniform and greedy picks are clear
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0 if p.dim() >= 2 else 1.0)
    return model


def all_logits(model, idx):
    import torch

    logits, _ = model(idx, targets=torch.zeros_like(idx))  # with targets: logits at every position
    return logits
