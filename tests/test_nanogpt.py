"""
Coming from nanoGPT (gptkit/nanogpt.py): its checkpoints sample, evaluate and
resume here, its meta.pkl is read without running anything, its data folders train and its config
files parse. Every nanoGPT file here is made the way nanoGPT's own code writes it (a condensed copy
of its model.py and train.py below: same modules, same names, same saved dict), and each foreign
file gets one line, exit 2, and nothing written.
"""

import ast
import json
import math
import os
import pickle
import shutil
from dataclasses import dataclass, fields

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import ONE_THREAD, ROOT, SHAKESPEARE, run_script, run_train_main

import attention_maps as attention
import sample
from gptkit import checkpoint, nanogpt
from gptkit.base import UserError
from gptkit.configurator import ConfigError, parse_overrides
from gptkit.resume import run_settings
from gptkit.tokenizer import GPT2Tokenizer
from gptkit.train_config import TrainConfig, configure_adamw

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process tiny models

# enough for a 2-layer model to learn something in 40 steps
TEXT = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]


# --------------------------------------------------------------------------------------------------
# nanoGPT's model.py, condensed: the same modules under the same names, so the same state dict


@dataclass
class NanoConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class NanoLayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, config, flash):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.dropout, self.flash = config.dropout, flash
        if not flash:  # nanoGPT on PyTorch < 2.0: the mask is a persistent buffer, saved in ckpt.pt
            mask = torch.tril(torch.ones(config.block_size, config.block_size))
            self.register_buffer("bias", mask.view(1, 1, config.block_size, config.block_size))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, nh, T, hs)
        k, q, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (k, q, v))
        if self.flash:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0, is_causal=True
            )
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class NanoMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class NanoBlock(nn.Module):
    def __init__(self, config, flash):
        super().__init__()
        self.ln_1 = NanoLayerNorm(config.n_embd, bias=config.bias)
        self.attn = NanoAttention(config, flash)
        self.ln_2 = NanoLayerNorm(config.n_embd, bias=config.bias)
        self.mlp = NanoMLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, config, flash=True):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([NanoBlock(config, flash) for _ in range(config.n_layer)]),
                ln_f=NanoLayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        pos = torch.arange(0, idx.size(1), dtype=torch.long)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        # all positions (nanoGPT: only the last without targets)
        logits = self.lm_head(self.transformer.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        optim_groups = [
            {
                "params": [p for p in param_dict.values() if p.dim() >= 2],
                "weight_decay": weight_decay,
            },
            {"params": [p for p in param_dict.values() if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)


# --------------------------------------------------------------------------------------------------
# nanoGPT's data/*/prepare.py and train.py, condensed: a checkout with data/<name>/ and
# out-<name>/ckpt.pt

# the keys of nanoGPT train.py's `config` (its globals of type int, float, bool, str), with
# its defaults
NANOGPT_DEFAULTS = dict(
    out_dir="out",
    eval_interval=2000,
    log_interval=1,
    eval_iters=200,
    eval_only=False,
    always_save_checkpoint=True,
    init_from="scratch",
    wandb_log=False,
    wandb_project="owt",
    wandb_run_name="gpt2",
    dataset="openwebtext",
    gradient_accumulation_steps=5 * 8,
    batch_size=12,
    block_size=1024,
    n_layer=12,
    n_head=12,
    n_embd=768,
    dropout=0.0,
    bias=False,
    learning_rate=6e-4,
    max_iters=600000,
    weight_decay=1e-1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    decay_lr=True,
    warmup_iters=2000,
    lr_decay_iters=600000,
    min_lr=6e-5,
    backend="nccl",
    device="cuda",
    dtype="bfloat16",
    compile=True,
)

# nanoGPT's config/train_shakespeare_char.py with a model small enough for a test
# (the 2L/4H/64d)
SMALL_RUN = dict(
    out_dir="out-shakespeare-char",
    eval_interval=20,
    eval_iters=10,
    log_interval=10,
    always_save_checkpoint=False,
    wandb_project="shakespeare-char",
    wandb_run_name="mini-gpt",
    dataset="shakespeare_char",
    gradient_accumulation_steps=1,
    batch_size=8,
    block_size=32,
    n_layer=2,
    n_head=4,
    n_embd=64,
    dropout=0.0,
    learning_rate=1e-3,
    max_iters=40,
    lr_decay_iters=100,
    min_lr=1e-4,
    beta2=0.99,
    warmup_iters=5,
    device="cpu",
    compile=False,
    dtype="float32",
)


def prepare_char(data_dir, text):
    """nanoGPT's data/shakespeare_char/prepare.py."""
    os.makedirs(data_dir, exist_ok=True)
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    n = len(text)
    train_ids = np.array([stoi[c] for c in text[: int(n * 0.9)]], dtype=np.uint16)
    val_ids = np.array([stoi[c] for c in text[int(n * 0.9) :]], dtype=np.uint16)
    train_ids.tofile(os.path.join(data_dir, "train.bin"))
    val_ids.tofile(os.path.join(data_dir, "val.bin"))
    with open(os.path.join(data_dir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)


def prepare_gpt2(data_dir, text):
    """nanoGPT's data/shakespeare/prepare.py: tiktoken's gpt2 encode_ordinary (here from the repo's
    own BPE files)."""
    os.makedirs(data_dir, exist_ok=True)
    n, enc = len(text), GPT2Tokenizer().enc
    train_ids = np.array(enc.encode_ordinary(text[: int(n * 0.9)]), dtype=np.uint16)
    val_ids = np.array(enc.encode_ordinary(text[int(n * 0.9) :]), dtype=np.uint16)
    train_ids.tofile(os.path.join(data_dir, "train.bin"))
    val_ids.tofile(os.path.join(data_dir, "val.bin"))


def nanogpt_train(checkout, settings, flash=True, compiled=False, resume=False):
    """nanoGPT's train.py on one CPU process: {iter: val loss} of its evaluations; ckpt.pt as it
    saves it."""
    cfg = {**NANOGPT_DEFAULTS, **settings}
    g = type("G", (), cfg)  # its globals, read as g.key
    out_dir, data_dir = checkout / g.out_dir, checkout / "data" / g.dataset
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1337)

    def get_batch(split):
        data = np.memmap(data_dir / f"{split}.bin", dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - g.block_size, (g.batch_size,))
        x = torch.stack(
            [torch.from_numpy((data[i : i + g.block_size]).astype(np.int64)) for i in ix]
        )
        y = torch.stack(
            [torch.from_numpy((data[i + 1 : i + 1 + g.block_size]).astype(np.int64)) for i in ix]
        )
        return x, y

    iter_num, best_val_loss = 0, 1e9
    meta_path = data_dir / "meta.pkl"
    meta_vocab_size = (
        pickle.load(open(meta_path, "rb"))["vocab_size"] if meta_path.exists() else None
    )
    model_args = dict(
        n_layer=g.n_layer,
        n_head=g.n_head,
        n_embd=g.n_embd,
        block_size=g.block_size,
        bias=g.bias,
        vocab_size=None,
        dropout=g.dropout,
    )
    if not resume:
        model_args["vocab_size"] = meta_vocab_size if meta_vocab_size is not None else 50304
        model = NanoGPT(NanoConfig(**model_args), flash)
    else:
        ckpt = torch.load(out_dir / "ckpt.pt", weights_only=False)  # nanoGPT's own load
        for k in ["n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size"]:
            model_args[k] = ckpt["model_args"][k]
        model = NanoGPT(NanoConfig(**model_args), flash)
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
    optimizer = model.configure_optimizers(g.weight_decay, g.learning_rate, (g.beta1, g.beta2))
    if resume:
        optimizer.load_state_dict(ckpt["optimizer"])
    # nanoGPT saves the compiled wrapper's keys: _orig_mod.
    raw_model = torch.compile(model) if compiled else model

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "val"]:
            losses = torch.zeros(g.eval_iters)
            for k in range(g.eval_iters):
                losses[k] = model(*get_batch(split))[1].item()
            out[split] = losses.mean()
        model.train()
        return out

    def get_lr(it):
        if it < g.warmup_iters:
            return g.learning_rate * (it + 1) / (g.warmup_iters + 1)
        if it > g.lr_decay_iters:
            return g.min_lr
        decay_ratio = (it - g.warmup_iters) / (g.lr_decay_iters - g.warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return g.min_lr + coeff * (g.learning_rate - g.min_lr)

    evals = {}
    X, Y = get_batch("train")
    while True:
        lr = get_lr(iter_num) if g.decay_lr else g.learning_rate
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        if iter_num % g.eval_interval == 0:
            losses = estimate_loss()
            evals[iter_num] = losses["val"].item()
            if losses["val"] < best_val_loss or g.always_save_checkpoint:
                best_val_loss = losses["val"]
                if iter_num > 0:
                    checkpoint = {
                        "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "model_args": model_args,
                        "iter_num": iter_num,
                        "best_val_loss": best_val_loss,
                        "config": cfg,
                    }
                    torch.save(checkpoint, out_dir / "ckpt.pt")
        _, loss = model(X, Y)
        X, Y = get_batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), g.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        if iter_num > g.max_iters:
            break
    return evals


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A nanoGPT checkout after `python data/shakespeare_char/prepare.py && python train.py
    config/train_shakespeare_char.py` (a small model, 40 iterations): ({iter: val loss}, its
    path)."""
    root = tmp_path_factory.mktemp("nanoGPT")
    prepare_char(root / "data" / "shakespeare_char", TEXT)
    evals = nanogpt_train(root, SMALL_RUN)
    assert (root / "out-shakespeare-char" / "ckpt.pt").exists()
    assert evals[40] < evals[0] - 0.5, evals  # it learned
    return evals, root


def copy_checkout(checkout, tmp_path):
    shutil.copytree(checkout[1], tmp_path / "nanoGPT")
    return tmp_path / "nanoGPT"


def reference(path, flash=True):
    """nanoGPT's model from a checkpoint, as its sample.py loads it."""
    ckpt = torch.load(path, weights_only=False)
    model = NanoGPT(NanoConfig(**ckpt["model_args"]), flash)
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    return model.eval(), ckpt


def listing(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(code, err, *fragments):
    lines = err if isinstance(err, list) else err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------------
# Checkpoints: the same model, the same optimizer


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "flash, compiled",
    [(True, False), (False, False), (True, True)],
    ids=["flash", "mask_buffer", "orig_mod"],
)
def test_nanogpt_checkpoint_is_the_same_model_and_the_same_adamw(flash, compiled, bias, tmp_path):
    """Logits equal nanoGPT's, and three AdamW steps from its saved state land on the same weights:
    its two parameter groups map onto ours by name. Older runs saved the causal mask (`attn.bias`);
    compiled ones `_orig_mod.` keys."""
    settings = {**SMALL_RUN, "max_iters": 20, "eval_interval": 10, "eval_iters": 2, "bias": bias}
    prepare_char(tmp_path / "data" / "shakespeare_char", TEXT[:20_000])
    nanogpt_train(tmp_path, settings, flash=flash, compiled=compiled)
    path = tmp_path / "out-shakespeare-char" / "ckpt.pt"
    saved = torch.load(path, weights_only=True)
    assert any(k.endswith(".attn.bias") for k in saved["model"]) == (not flash)
    assert all(k.startswith("_orig_mod.") for k in saved["model"]) == compiled

    ref, ckpt = reference(path, flash)
    ours_ckpt = checkpoint.load_checkpoint(path)
    ours = checkpoint.model_from_checkpoint(ours_ckpt).eval()
    assert ours_ckpt["iter_num"] == 20
    assert ours_ckpt["best_val_loss"] == pytest.approx(ckpt["best_val_loss"].item())
    vocab = ours.config.vocab_size
    idx = torch.randint(0, vocab, (3, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours(idx, idx)[0], ref(idx)[0])

    ref_opt = ref.configure_optimizers(0.1, 1e-3, (0.9, 0.99))
    ref_opt.load_state_dict(ckpt["optimizer"])
    our_opt = configure_adamw(ours, 0.1, 1e-3, (0.9, 0.99), "cpu")
    our_opt.load_state_dict(ours_ckpt["optimizer"])
    for step in range(3):
        x = torch.randint(0, vocab, (4, 32), generator=torch.Generator().manual_seed(step))
        for model, opt in ((ref, ref_opt), (ours, our_opt)):
            model(x, x.roll(-1, 1))[1].backward()
            opt.step()
            opt.zero_grad()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, ref_params[name], msg=name)


def test_sample_on_a_nanogpt_out_dir_finds_its_meta_pkl_and_matches_its_model(
    checkout, tmp_path, cli
):
    """sample.py --out_dir=<nanoGPT's out dir>: the tokenizer from data/<dataset>/meta.pkl of the
    checkout beside it (where nanoGPT's sample.py looks), and greedy text token for token what
    nanoGPT's model gives."""
    _, root = checkout
    out_dir = root / "out-shakespeare-char"
    before = listing(root)
    code, out, err = cli(
        sample.main,
        f"--out_dir={out_dir}",
        "--start=ROMEO:",
        "--temperature=0",
        "--max_new_tokens=30",
        "--num_samples=1",
        "--stream=false",
        "--device=cpu",
        "--dtype=float32",
    )
    assert code == 0, err
    text = out.split("\n---------------")[0]

    ref, _ = reference(out_dir / "ckpt.pt")
    meta = pickle.load(open(root / "data" / "shakespeare_char" / "meta.pkl", "rb"))
    ids = [meta["stoi"][c] for c in "ROMEO:"]
    for _ in range(30):
        ids.append(int(ref(torch.tensor([ids[-32:]]))[0][0, -1].argmax()))
    assert text == "".join(meta["itos"][i] for i in ids)
    assert listing(root) == before  # sampling writes nothing

    # out_dir elsewhere: the meta.pkl is not where nanoGPT looks, so it must be named
    # (a 65-token model is not GPT-2's)
    moved = tmp_path / "moved"
    shutil.copytree(out_dir, moved)
    code, _, err = cli(sample.main, f"--out_dir={moved}", "--start=ROMEO:", "--device=cpu")
    one_error_line(code, err, "nanoGPT model of", "--meta_pkl=PATH")
    meta_pkl = root / "data" / "shakespeare_char" / "meta.pkl"
    code, out2, err = cli(
        sample.main,
        f"--out_dir={moved}",
        f"--meta_pkl={meta_pkl}",
        "--start=ROMEO:",
        "--temperature=0",
        "--max_new_tokens=30",
        "--num_samples=1",
        "--stream=false",
        "--device=cpu",
        "--dtype=float32",
    )
    assert code == 0 and out2 == out, err


def test_attention_on_a_nanogpt_out_dir(checkout, tmp_path, cli):
    out_dir = checkout[1] / "out-shakespeare-char"
    code, out, err = cli(
        attention.main,
        f"--out_dir={out_dir}",
        "--text=the cat sat",
        "--query=sat",
        "--format=json",
        f"--save_dir={tmp_path}",
    )
    assert code == 0, err
    assert "attention.json" in out and json.loads((tmp_path / "attention.json").read_text())


def test_gpt2_bpe_without_meta_pkl(tmp_path, cli):
    """A nanoGPT run on GPT-2 BPE (data/openwebtext, no meta.pkl; vocab padded to 50304): sampled
    with GPT-2's BPE."""
    settings = {
        **SMALL_RUN,
        "dataset": "openwebtext",
        "out_dir": "out",
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 16,
        "max_iters": 2,
        "eval_interval": 1,
        "eval_iters": 1,
        "batch_size": 2,
        "always_save_checkpoint": True,
    }
    prepare_gpt2(tmp_path / "data" / "openwebtext", TEXT[:20_000])
    nanogpt_train(tmp_path, settings)
    path = tmp_path / "out" / "ckpt.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model_args"]["vocab_size"] == 50304
    # as training leaves them: the padding is never the likeliest token
    ckpt["model"]["lm_head.weight"][50257:] = 0
    torch.save(ckpt, path)
    # no data folder at all: nanoGPT's sample.py assumes GPT-2 BPE then
    shutil.rmtree(tmp_path / "data")

    code, out, err = cli(
        sample.main,
        f"--out_dir={tmp_path / 'out'}",
        "--start=Hello",
        "--temperature=0",
        "--max_new_tokens=8",
        "--num_samples=1",
        "--stream=false",
        "--device=cpu",
        "--dtype=float32",
    )
    assert code == 0, err
    assert "GPT-2 BPE, as nanoGPT's sample.py" in err
    enc = GPT2Tokenizer().enc
    ref, _ = reference(path)
    ids = enc.encode("Hello", allowed_special={"<|endoftext|>"})  # nanoGPT's sample.py encode
    for _ in range(8):
        ids.append(int(ref(torch.tensor([ids]))[0][0, -1].argmax()))
    assert out.split("\n---------------")[0] == enc.decode(ids)


# --------------------------------------------------------------------------------------------------
# train.py: --eval_only and --init_from=resume on nanoGPT's out_dir, and its data folders


def test_eval_only_on_a_nanogpt_out_dir_takes_its_dataset_and_matches_its_model(
    checkout, tmp_path, monkeypatch, capsys
):
    root = copy_checkout(checkout, tmp_path)
    out_dir = root / "out-shakespeare-char"
    code, stdout, err = run_train_main(
        [f"--out_dir={out_dir}", "--eval_only=True", "--device=cpu", "--dtype=float32"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])

    # nanoGPT's model on the same tokens: val.bin in non-overlapping block_size windows, every
    # token predicted once
    ref, _ = reference(out_dir / "ckpt.pt")
    val_bin = root / "data" / "shakespeare_char" / "val.bin"
    val = torch.from_numpy(np.fromfile(val_bin, dtype=np.uint16).astype(np.int64))
    nats = sum(
        F.cross_entropy(
            ref(val[None, s : s + 32][:, : len(val) - 1 - s])[0][0],
            val[s + 1 : s + 33],
            reduction="sum",
        ).item()
        for s in range(0, len(val) - 1, 32)
    )
    assert result["iter"] == 40 and result["tokens"] == len(val) - 1
    assert result["loss"] == pytest.approx(nats / (len(val) - 1), abs=1e-5)
    original = checkout[1] / "out-shakespeare-char" / "ckpt.pt"
    assert (out_dir / "ckpt.pt").read_bytes() == original.read_bytes()


def test_resume_continues_the_nanogpt_run_and_writes_our_format(checkout, tmp_path):
    """--init_from=resume on nanoGPT's out_dir: its iteration, best val loss, AdamW state and config
    (dataset beside the out_dir, learning-rate schedule, batch size), fresh RNG state, said in one
    line; its loss goes on from where the nanoGPT run stopped, as nanoGPT's own resume does; the
    checkpoint written back is ours."""
    evals, _ = checkout
    root = copy_checkout(checkout, tmp_path)
    out_dir = root / "out-shakespeare-char"
    result = run_script(
        "train.py",
        "--init_from=resume",
        f"--out_dir={out_dir}",
        "--max_iters=60",
        "--device=cpu",
        "--dtype=float32",
        "--progress=False",
        env=ONE_THREAD,
    )
    notes = [line for line in result.stdout.splitlines() if "is nanoGPT's" in line]
    assert notes == [
        f"{out_dir / 'ckpt.pt'} is nanoGPT's: continuing its run at iter 40 "
        f"(best val loss {evals[40]:.4f}) with its config and AdamW state, "
        "fresh RNG state (nanoGPT saves none); "
        "checkpoints are written back in this project's format"
    ]
    # its schedule and log_interval: step 50 (index 49) at warmup 5, cosine from 1e-3 to
    # min_lr 1e-4 at 100
    lr = 1e-4 + 0.5 * (1 + math.cos(math.pi * (49 - 5) / 95)) * (1e-3 - 1e-4)
    logged = [line for line in result.stdout.splitlines() if line.startswith("iter ")]
    assert [line.split(":")[0] for line in logged] == ["iter 50", "iter 60"], logged
    assert f"lr {lr:.2e}," in logged[0], logged

    metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in metrics] == [60]
    # nanoGPT's own resume of the same checkpoint to iter 60 (other batches, so within noise
    # of ours)
    nano_root = copy_checkout(checkout, tmp_path / "nano")
    nano = nanogpt_train(nano_root, {**SMALL_RUN, "max_iters": 60}, resume=True)
    assert metrics[0]["val_loss"] < evals[40], (metrics, evals)
    assert metrics[0]["val_loss"] == pytest.approx(nano[60], abs=0.1), (metrics, nano)

    written = torch.load(out_dir / "ckpt.pt", weights_only=True)
    assert (
        written["iter_num"] == 60
        and written["rng"] is not None
        and written["model_args"]["mlp"] == "gelu_exact"
    )
    assert written["best_val_loss"] == pytest.approx(metrics[0]["val_loss"])
    config = json.loads((out_dir / "config.json").read_text())
    assert (
        config["dataset"] == str(root / "data" / "shakespeare_char")
        and config["batch_size"] == 8
        and config["beta2"] == 0.99
    )
    vocab = pickle.load(open(root / "data" / "shakespeare_char" / "meta.pkl", "rb"))["itos"]
    chars = json.loads((out_dir / "meta.json").read_text())["chars"]
    assert chars == [vocab[i] for i in range(len(vocab))]


def test_nanogpt_setting_of_another_type_must_be_given_and_changes_are_described(
    checkout, tmp_path
):
    """A setting of its config that is not of our type stops a resume with one line until it is
    given; the others are the run's own (its dataset found beside out_dir), and a given one that
    differs is a change, described as for our checkpoints."""
    root = copy_checkout(checkout, tmp_path)
    path = root / "out-shakespeare-char" / "ckpt.pt"
    saved = torch.load(path, weights_only=True)
    saved["config"]["batch_size"] = "8"
    torch.save(saved, path)
    given = {"init_from": "resume", "out_dir": str(path.parent)}
    with pytest.raises(UserError) as e:
        run_settings(given)
    assert str(e.value) == (
        "its nanoGPT config has batch_size='8', which should be a int: give --batch_size=..."
    )
    cfg, changes = run_settings({**given, "batch_size": 4, "max_iters": 60})
    assert cfg.batch_size == 4 and cfg.beta2 == 0.99 and cfg.warmup_iters == 5
    assert cfg.dataset == str(root / "data" / "shakespeare_char")
    assert changes == [("max_iters", 40, 60)]


def test_only_gptkit_nanogpt_knows_nanogpts_formats():
    """Outside gptkit/nanogpt.py, modules call it only at the doors, where a nanoGPT file is read
    (a checkpoint, a data folder, a meta.pkl), and no library module asks for a key named after
    it: past the door nothing asks whose a checkpoint was."""
    doors = {"as_ours", "data_meta", "meta_pkl_tokenizer"}
    used = set()
    for path in sorted(ROOT.glob("*.py")) + sorted((ROOT / "gptkit").glob("*.py")):
        if path.name == "nanogpt.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "gptkit.nanogpt":
                used |= {alias.name for alias in node.names}
            elif isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "nanogpt":
                used.add(node.attr)
            elif path.parent.name == "gptkit" and isinstance(node, ast.Constant):
                assert node.value != "nanogpt", f"{path.name} line {node.lineno}"
    assert used == doors


def test_nanogpt_data_folder_trains_without_preparing(checkout, tmp_path):
    """--dataset=<nanoGPT's data/<name>> (train.bin, val.bin, meta.pkl; no meta.json) trains;
    out_dir's meta.json then holds its characters, in its ids, and sample.py reads them."""
    data_dir = checkout[1] / "data" / "shakespeare_char"
    out = tmp_path / "out"
    run_script(
        "train.py",
        f"--dataset={data_dir}",
        f"--out_dir={out}",
        "--n_layer=1",
        "--n_head=2",
        "--n_embd=16",
        "--block_size=16",
        "--batch_size=4",
        "--gradient_accumulation_steps=1",
        "--max_iters=10",
        "--eval_interval=10",
        "--eval_iters=2",
        "--device=cpu",
        "--dtype=float32",
        "--progress=False",
        env=ONE_THREAD,
    )
    meta = json.loads((out / "meta.json").read_text())
    itos = pickle.load(open(data_dir / "meta.pkl", "rb"))["itos"]
    assert meta["tokenizer"] == "char" and meta["chars"] == [itos[i] for i in range(len(itos))]
    assert not (data_dir / "meta.json").exists()


def test_eval_gpt2_config_evaluates_gpt2_weights_on_a_gpt2_data_folder(
    gpt2_hf_dir, tmp_path, monkeypatch, capsys
):
    """nanoGPT's config/eval_gpt2.py (eval_only with init_from GPT-2) evaluates GPT-2's weights,
    here a local tiny copy, on a nanoGPT GPT-2 BPE data folder (data/shakespeare: .bin files, no
    meta.pkl)."""
    data_dir, config = tmp_path / "shakespeare", tmp_path / "eval_gpt2.py"
    prepare_gpt2(data_dir, TEXT[:20_000])
    config.write_text(NANOGPT_CONFIGS["eval_gpt2.py"])
    args = [
        config,
        f"--init_from={gpt2_hf_dir}",
        f"--dataset={data_dir}",
        f"--out_dir={tmp_path / 'out'}",
        "--block_size=64",
        "--device=cpu",
        "--dtype=float32",
    ]
    code, stdout, err = run_train_main(args, monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["iter"] == 0 and 9 < result["loss"] < 12  # ln(50257) = 10.8: random weights
    assert err == [
        f"{data_dir} has no meta.json or meta.pkl: read as nanoGPT's GPT-2 BPE tokens (uint16)"
    ]


# --------------------------------------------------------------------------------------------------
# meta.pkl: plain data only, nothing ever runs


class Payload:
    """Unpickling this creates the marker file: what a malicious meta.pkl would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_meta_pkl_reads_nanogpt_vocabulary_in_every_protocol(tmp_path):
    chars = sorted(set(TEXT))
    meta = {
        "vocab_size": len(chars),
        "itos": dict(enumerate(chars)),
        "stoi": {c: i for i, c in enumerate(chars)},
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"meta{protocol}.pkl"
        path.write_bytes(pickle.dumps(meta, protocol=protocol))
        assert nanogpt.read_meta_pkl(path) == meta
    tokenizer = nanogpt.meta_tokenizer(meta)
    assert tokenizer.encode("ROMEO:") == [meta["stoi"][c] for c in "ROMEO:"]
    assert tokenizer.decode(range(10, 20)) == "".join(chars[10:20])


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
def test_malicious_meta_pkl_is_refused_and_never_runs(protocol, checkout, tmp_path, cli):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "meta.pkl"
    meta = pickle.load(open(checkout[1] / "data" / "shakespeare_char" / "meta.pkl", "rb"))
    evil.write_bytes(pickle.dumps({**meta, "vocab_size": Payload(marker)}, protocol=protocol))
    with pytest.raises(UserError, match="holds more than plain dicts, strings and ints"):
        nanogpt.read_meta_pkl(evil)
    # through sample.py, as --meta_pkl
    shutil.copytree(checkout[1] / "out-shakespeare-char", tmp_path / "moved")
    code, out, err = cli(
        sample.main, f"--out_dir={tmp_path / 'moved'}", f"--meta_pkl={evil}", "--device=cpu"
    )
    one_error_line(code, err, str(evil), "holds more than plain")
    assert out == "" and not marker.exists()
    pickle.load(open(evil, "rb"))  # the payload is live: plain pickle.load would have run it
    assert marker.exists()


# nanoGPT's meta.pkl of a two-character vocabulary
TWO_CHARS = {"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a pickle at all", "is not a readable pickle"),
        (pickle.dumps(TWO_CHARS)[:-9], "is not a readable pickle"),
        (pickle.dumps({**TWO_CHARS, "itos": ["a", "b"]}), "holds more than plain"),
        (pickle.dumps({**TWO_CHARS, "vocab_size": 2.0}), "holds more than plain"),
        (pickle.dumps({**TWO_CHARS, "vocab_size": 3}), "is not nanoGPT's meta.pkl"),
        (pickle.dumps({**TWO_CHARS, "stoi": {"a": 1, "b": 0}}), "is not nanoGPT's meta.pkl"),
        (pickle.dumps({"itos": {0: "a"}}), "is not nanoGPT's meta.pkl"),
    ],
    ids=["garbage", "truncated", "list", "float", "wrong_size", "stoi_not_inverse", "missing_keys"],
)
def test_meta_pkl_that_is_not_nanogpts_plain_dict_is_refused_in_one_line(
    content, message, tmp_path
):
    path = tmp_path / "meta.pkl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        nanogpt.read_meta_pkl(path)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------------
# Foreign files: one line, exit 2, nothing written


def foreign_checkpoints(model_state):
    return {
        "bare_state_dict": model_state,  # torch.save(model.state_dict()), as many scripts do
        "other_trainer": {"state_dict": model_state, "epoch": 3},
        "nanogpt_args_other_weights": {
            "model": {"w": torch.zeros(2)},
            "optimizer": {},
            "iter_num": 1,
            "best_val_loss": 1.0,
            "model_args": dict(
                n_layer=1, n_head=1, n_embd=8, block_size=8, bias=False, vocab_size=5, dropout=0.0
            ),
        },
    }


@pytest.mark.parametrize("kind", ["bare_state_dict", "other_trainer", "nanogpt_args_other_weights"])
def test_foreign_checkpoint_gets_one_line_everywhere_and_nothing_is_written(
    kind, checkout, tmp_path, monkeypatch, capsys, cli
):
    state = torch.load(checkout[1] / "out-shakespeare-char" / "ckpt.pt", weights_only=True)["model"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    torch.save(foreign_checkpoints(state)[kind], out_dir / "ckpt.pt")
    before = listing(tmp_path)
    message = (
        "neither this project's checkpoint nor nanoGPT's"
        if kind != "nanogpt_args_other_weights"
        else "not its weights"
    )
    code, _, err = cli(sample.main, f"--out_dir={out_dir}", "--device=cpu")
    one_error_line(code, err, str(out_dir / "ckpt.pt"), message)
    data_dir = checkout[1] / "data" / "shakespeare_char"
    for extra in (
        ["--init_from=resume"],
        ["--eval_only=True"],
        ["--init_from=resume", "--block_size=16"],
    ):
        code, _, err = run_train_main(
            [f"--out_dir={out_dir}", f"--dataset={data_dir}", "--device=cpu", *extra],
            monkeypatch,
            capsys,
        )
        one_error_line(code, err, message)
    assert listing(tmp_path) == before


def bad_bins(data_dir):
    return {
        "odd_length": lambda: (data_dir / "val.bin").write_bytes(
            (data_dir / "val.bin").read_bytes() + b"\x00"
        ),
        "id_outside_vocab": lambda: np.array([1, 2, 70, 3] * 500, dtype=np.uint16).tofile(
            data_dir / "val.bin"
        ),
        "int64_ids": lambda: (
            np.array(np.fromfile(data_dir / "train.bin", dtype=np.uint16))
            .astype(np.int64)
            .tofile(data_dir / "train.bin")
        ),
    }


@pytest.mark.parametrize(
    "damage, message",
    [
        ("odd_length", "not a whole number of uint16 tokens"),
        ("id_outside_vocab", "holds token id 70, outside the vocabulary of 62"),
        ("int64_ids", "looks like ids wider than 16 bits"),
        ("malicious_meta_pkl", "holds more than plain"),
    ],
)
def test_foreign_data_folder_gets_one_line_and_nothing_is_written(
    damage, message, checkout, tmp_path, monkeypatch, capsys
):
    data_dir = tmp_path / "data"
    shutil.copytree(checkout[1] / "data" / "shakespeare_char", data_dir)
    marker = tmp_path / "code_ran"
    if damage == "malicious_meta_pkl":
        (data_dir / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": Payload(marker)}))
    else:
        bad_bins(data_dir)[damage]()
    before = listing(tmp_path)
    out_dir = tmp_path / "out"
    args = [
        f"--dataset={data_dir}",
        f"--out_dir={out_dir}",
        "--device=cpu",
        "--dtype=float32",
        "--block_size=16",
    ]
    code, _, err = run_train_main(args, monkeypatch, capsys)
    one_error_line(code, err, message)
    assert listing(tmp_path) == before and not out_dir.exists() and not marker.exists()


# --------------------------------------------------------------------------------------------------
# Config files: nanoGPT's own, as they are in its config/ folder

NANOGPT_CONFIGS = {
    "train_shakespeare_char.py": """\
# train a miniature character-level shakespeare model
# good for debugging and playing on macbooks and such

out_dir = 'out-shakespeare-char'
eval_interval = 250 # keep frequent because we'll overfit
eval_iters = 200
log_interval = 10 # don't print too too often

# we expect to overfit on this small dataset, so only save when val improves
always_save_checkpoint = False

wandb_log = False # override via command line if you like
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256 # context of up to 256 previous characters

# baby GPT model :)
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3 # with baby networks can afford to go a bit higher
max_iters = 5000
lr_decay_iters = 5000 # make equal to max_iters usually
min_lr = 1e-4 # learning_rate / 10 usually
beta2 = 0.99 # make a bit bigger because number of tokens per iter is small

warmup_iters = 100 # not super necessary potentially

# on macbook also add
# device = 'cpu'  # run on cpu only
# compile = False # do not torch compile the model
""",
    "train_gpt2.py": """\
# config for training GPT-2 (124M) down to very nice loss of ~2.85 on 1 node of 8X A100 40GB
# launch as the following (e.g. in a screen session) and wait ~5 days:
# $ torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

wandb_log = True
wandb_project = 'owt'
wandb_run_name='gpt2-124M'

# these make the total batch size be ~0.5M
# 12 batch size * 1024 block size * 5 gradaccum * 8 GPUs = 491,520
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

# this makes total number of tokens be 300B
max_iters = 600000
lr_decay_iters = 600000

# eval stuff
eval_interval = 1000
eval_iters = 200
log_interval = 10

# weight decay
weight_decay = 1e-1
""",
    "eval_gpt2.py": """\
# evaluate the base gpt2
# n_layer=12, n_head=12, n_embd=768
# 124M parameters
batch_size = 8
eval_iters = 500 # use more iterations to get good estimate
eval_only = True
wandb_log = False
init_from = 'gpt2'
""",
    "finetune_shakespeare.py": """\
import time

out_dir = 'out-shakespeare'
eval_interval = 5
eval_iters = 40
wandb_log = False # feel free to turn on
wandb_project = 'shakespeare'
wandb_run_name = 'ft-' + str(time.time())

dataset = 'shakespeare'
init_from = 'gpt2-xl' # this is the largest GPT-2 model

# only save checkpoints if the validation loss improves
always_save_checkpoint = False

# the number of examples per iter:
# 1 batch_size * 32 grad_accum * 1024 tokens = 32,768 tokens/iter
# shakespeare has 301,966 tokens, so 1 epoch ~= 9.2 iters
batch_size = 1
gradient_accumulation_steps = 32
max_iters = 20

# finetune at constant LR
learning_rate = 3e-5
decay_lr = False
""",
}
# eval_gpt2_{medium,large,xl}.py differ only in init_from (and comments)
for size in ("medium", "large", "xl"):
    NANOGPT_CONFIGS[f"eval_gpt2_{size}.py"] = NANOGPT_CONFIGS["eval_gpt2.py"].replace(
        "'gpt2'", f"'gpt2-{size}'"
    )


@pytest.mark.parametrize("name", [n for n in NANOGPT_CONFIGS if n != "finetune_shakespeare.py"])
def test_nanogpt_config_files_are_taken_as_they_are(name, tmp_path):
    """Each parses to what nanoGPT's exec of it sets (the test may run it: it is the test's own
    text)."""
    path = tmp_path / name
    path.write_text(NANOGPT_CONFIGS[name])
    executed = {}
    exec(NANOGPT_CONFIGS[name], {}, executed)
    assert parse_overrides(TrainConfig(), [str(path)]) == executed


def test_finetune_shakespeare_config_names_every_line_it_cannot_take(tmp_path, monkeypatch, capsys):
    path = tmp_path / "finetune_shakespeare.py"
    path.write_text(NANOGPT_CONFIGS["finetune_shakespeare.py"])
    with pytest.raises(ConfigError) as e:
        parse_overrides(TrainConfig(), [str(path)])
    assert str(e.value) == (
        f"{path}:1: a config file holds only `key = value` lines, got `import time`: "
        "delete it, a config file needs no modules; "
        f"{path}:8: only literals, arithmetic and names assigned above are allowed, "
        "got `str(time.time())`: calls are not run, "
        "write the value itself (a number or a 'string')"
    )
    code, _, err = run_train_main([path], monkeypatch, capsys)
    one_error_line(code, err, ":1:", ":8:")
    path.write_text(
        NANOGPT_CONFIGS["finetune_shakespeare.py"]
        .replace("import time\n", "")
        .replace("'ft-' + str(time.time())", "'ft'")
    )
    # with the two lines fixed, the rest is taken
    assert parse_overrides(TrainConfig(), [str(path)])["wandb_run_name"] == "ft"


def test_every_nanogpt_setting_is_carried_or_set_here():
    """nanoGPT's train.py keys: CARRIED on resume (ours, same type) or NOT_CARRIED (machine and
    command keys)."""
    ours = {f.name: type(f.default) for f in fields(TrainConfig)}
    assert set(NANOGPT_DEFAULTS) == set(nanogpt.CARRIED) | set(nanogpt.NOT_CARRIED)
    assert all(
        ours[key] is kind and type(NANOGPT_DEFAULTS[key]) is kind
        for key, kind in nanogpt.CARRIED.items()
    )
    assert set(nanogpt.NOT_CARRIED) <= set(ours)
