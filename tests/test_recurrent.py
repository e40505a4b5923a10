"""recurrent.py: the GRU baseline itself (shapes, causality, state-carrying generation), and that
train.py, sample.py and checkpoints take it as they take the GPT (model_type="gru"), an exact resume
included."""

import json
import shutil
import signal
from dataclasses import fields

import pytest
import torch
from conftest import (
    ROOT,
    TINY,
    read_jsonl,
    run_script,
    run_train_main,
    start_until,
    train,
    train_args,
)

import attention_maps as attention
import sample
from gptkit import checkpoint
from gptkit.base import UserError, checked
from gptkit.configurator import parse_args
from gptkit.train_config import TrainConfig, model_config, new_model
from model import GPT, GPTConfig
from recurrent import GRULM, GRUConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # in-process tiny models

V = 23


def tiny_gru(seed=0, **overrides):
    torch.manual_seed(seed)
    return GRULM(
        GRUConfig(**{"block_size": 16, "vocab_size": V, "n_layer": 2, "n_embd": 12, **overrides})
    ).eval()


# --------------------------------------------------------------------------------------------------
# The model


@pytest.mark.parametrize("n_layer, tie_weights", [(1, True), (2, False)])
def test_forward_shapes_and_loss(n_layer, tie_weights):
    model = tiny_gru(n_layer=n_layer, tie_weights=tie_weights)
    idx = torch.randint(V, (3, 10))
    logits, loss = model(idx, idx)
    assert (
        logits.shape == (3, 10, V)
        and loss.shape == ()
        and loss.item() == pytest.approx(torch.log(torch.tensor(V)).item(), rel=0.1)
    )
    last, no_loss = model(idx)
    assert last.shape == (3, 1, V) and no_loss is None
    torch.testing.assert_close(last, logits[:, -1:])
    assert (model.lm_head.weight is model.wte.weight) == tie_weights
    assert model.get_num_params() == sum(p.numel() for p in model.parameters())


def test_a_gru_reads_past_block_size():
    """block_size is the training windows' length: unlike the GPT's context, no limit on what the
    GRU reads."""
    model = tiny_gru()
    assert model(torch.randint(V, (1, 3 * model.config.block_size)))[0].shape == (1, 1, V)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_causality_a_later_token_never_changes_earlier_logits(seed):
    model = tiny_gru(seed)
    idx = torch.randint(V, (2, 12), generator=torch.Generator().manual_seed(seed))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % V
    before, _ = model(idx, idx)
    after, _ = model(changed, changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], rtol=0, atol=0)
    assert not torch.allclose(after[:, 7:], before[:, 7:])


def test_the_hidden_state_carries_everything_read():
    """next_token_logits from a saved state equals reading the whole prefix at once."""
    model = tiny_gru()
    idx = torch.randint(V, (2, 9))
    whole, _ = model.next_token_logits(idx)
    _, state = model.next_token_logits(idx[:, :5])
    carried, _ = model.next_token_logits(idx[:, 5:], state)
    torch.testing.assert_close(carried, whole)
    torch.testing.assert_close(whole, model(idx)[0][:, -1].float())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generate_with_the_state_equals_recomputing_from_scratch(seed):
    model = tiny_gru(seed)
    idx = torch.randint(V, (3, 4), generator=torch.Generator().manual_seed(seed))
    cached = model.generate(idx, 30, temperature=0)  # 30 new tokens: past block_size (16) too
    assert cached.shape == (3, 34) and torch.equal(cached[:, :4], idx)
    assert torch.equal(cached, model.generate(idx, 30, temperature=0, use_cache=False))
    # greedy by hand: the argmax of the whole prefix's forward at every step
    by_hand = idx
    for _ in range(30):
        by_hand = torch.cat([by_hand, model(by_hand)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, by_hand)


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_generation_equals_uncached_token_for_token(attention, seed):
    """Both GRUs, as tests/test_model.py checks the GPT's KV cache: the carried state (with
    attention, the keys and values of every past state too) gives the tokens that reading the
    whole prefix again gives, greedy and sampled, past block_size."""
    model = tiny_gru(seed, attention=attention)
    idx = torch.randint(V, (3, 5), generator=torch.Generator().manual_seed(seed))
    for options in ({"temperature": 0}, {"temperature": 1.0, "top_k": 8}):
        draws = [
            model.generate(idx, 25, generator=torch.Generator().manual_seed(seed), **options)
            for _ in range(2)
        ]
        uncached = model.generate(
            idx, 25, use_cache=False, generator=torch.Generator().manual_seed(seed), **options
        )
        assert torch.equal(draws[0], uncached) and torch.equal(draws[0], draws[1])


def test_attention_reads_the_past_and_only_the_past():
    """attention=True: a later token never changes earlier logits; each row of the head's weights
    is a distribution over the past; the carried keys and values give the whole prefix's logits."""
    model = tiny_gru(attention=True, n_layer=1)
    assert model.attn is not None and tiny_gru().attn is None
    idx = torch.randint(V, (2, 12), generator=torch.Generator().manual_seed(3))
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % V
    before, after = model(idx, idx)[0], model(changed, changed)[0]
    torch.testing.assert_close(after[:, :7], before[:, :7], rtol=0, atol=0)
    assert not torch.allclose(after[:, 7:], before[:, 7:])
    hidden, _ = model.rnn(model.wte(idx))
    _, (keys, _), weights = model.look_back(hidden)
    assert keys.shape == (2, 1, 12, 12) and weights.shape == (2, 1, 12, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 1, 12))
    assert (weights.triu(1) == 0).all() and (weights[..., 0] > 0).all()
    _, state = model.next_token_logits(idx[:, :5])
    carried, _ = model.next_token_logits(idx[:, 5:], state)
    torch.testing.assert_close(carried, model(idx)[0][:, -1].float())


def test_sampling_is_seeded_and_each_row_draws_as_if_alone():
    model = tiny_gru()
    idx = torch.randint(V, (1, 3))
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = model.generate(idx.repeat(2, 1), 20, temperature=1.0, top_k=10, generator=gens(5, 6))
    assert torch.equal(
        batch[0], model.generate(idx, 20, temperature=1.0, top_k=10, generator=gens(5))[0]
    )
    assert torch.equal(
        batch[1], model.generate(idx, 20, temperature=1.0, top_k=10, generator=gens(6))[0]
    )
    assert not torch.equal(batch[0], batch[1])
    stream = list(model.generate_stream(idx, 5, temperature=1.0, top_p=0.9, generator=gens(5)))
    assert len(stream) == 5 and all(t.shape == (1, 1) for t in stream)


@pytest.mark.parametrize("bad", [{"n_embd": 0}, {"n_layer": 0}, {"dropout": 1.0}])
def test_config_checks(bad):
    # recurrent.py, as model.py, raises ValueError; checked() turns it into the UserError a script
    # prints in one line
    with pytest.raises(ValueError):
        GRUConfig(**{"vocab_size": V, **bad})
    with pytest.raises(UserError):
        checked(GRUConfig, **{"vocab_size": V, **bad})
    with pytest.raises(ValueError, match="temperature"):
        next(tiny_gru().generate_stream(torch.zeros(1, 1, dtype=torch.long), 1, temperature=-1))


def test_train_config_builds_a_gru_from_the_same_keys():
    cfg = TrainConfig(model_type="gru", n_layer=2, n_embd=24, bias=True, dropout=0.1, block_size=32)
    assert model_config(cfg, vocab_size=65, sdpa=True) == GRUConfig(
        block_size=32, vocab_size=65, n_layer=2, n_embd=24, dropout=0.1
    )
    # no key of its own to drift
    assert {f.name for f in fields(GRUConfig)} <= {f.name for f in fields(TrainConfig)}
    # the default is the GPT
    assert isinstance(model_config(TrainConfig(n_layer=2), vocab_size=65, sdpa=False), GPTConfig)


def test_the_shipped_gru_config_has_about_the_gpts_parameter_count():
    """config/train_long_range_gru.py against config/train_long_range.py without its value
    embeddings (the GPT that docs/attention.md's comparison measured; the shipped one adds them),
    on the long-range corpus's 489 tokens."""
    gpt, shipped_gpt, gru = (
        new_model(parse_args(TrainConfig(), [str(ROOT / "config" / name), *extra]), 489, False)
        for name, extra in (
            ("train_long_range.py", ["--value_embeds=False"]),
            ("train_long_range.py", []),
            ("train_long_range_gru.py", []),
        )
    )
    assert (
        type(gru) is GRULM and gru.get_num_params() == 130_704 and gpt.get_num_params() == 129_920
    )
    assert shipped_gpt.config.value_embeds and shipped_gpt.get_num_params() == 192_512


def test_a_checkpoint_without_model_type_is_a_gpt_and_model_type_picks_the_class():
    gpt_config = GPTConfig(block_size=8, vocab_size=V, n_layer=1, n_head=1, n_embd=8)
    old = {
        "model": GPT(gpt_config).state_dict(),
        "model_args": {f.name: getattr(gpt_config, f.name) for f in fields(GPTConfig)},
    }
    assert type(checkpoint.model_from_checkpoint(old, sdpa=False)) is GPT
    gru = tiny_gru()
    saved = {
        "model": gru.state_dict(),
        "model_args": {
            "model_type": "gru",
            **{f.name: getattr(gru.config, f.name) for f in fields(GRUConfig)},
        },
    }
    loaded = checkpoint.model_from_checkpoint(
        saved, sdpa=True, dropout=0.2
    ).eval()  # sdpa: an attention kernel, not the GRU's
    assert type(loaded) is GRULM and loaded.config.dropout == 0.2
    idx = torch.randint(V, (1, 6))
    assert torch.equal(loaded(idx)[0], gru(idx)[0])


# --------------------------------------------------------------------------------------------------
# train.py, checkpoints, sample.py, attention_maps.py

GRU = ["--model_type=gru", "--bias=True"]
# as tests/test_resume.py: dropout > 0 (two layers: the GRU's own dropout between them too) so the
# RNG state must be restored, 2 micro-steps so accumulation resumes, keep_last so ckpt_000020.pt
# marks a complete iter-20 checkpoint
RESUME = [
    "--max_iters=50",
    "--eval_interval=10",
    "--eval_iters=4",
    "--log_interval=10",
    "--learning_rate=3e-3",
    "--warmup_iters=5",
    "--lr_decay_iters=50",
    "--dropout=0.1",
    "--gradient_accumulation_steps=2",
    "--keep_last=20",
]
COMPARED = ("iter", "train_loss", "val_loss", "lr", "tokens")


@pytest.fixture(scope="module")
def gru_run(char_data, tmp_path_factory):
    """An uninterrupted tiny GRU run: its out_dir."""
    out = tmp_path_factory.mktemp("gru_run")
    train(char_data, out, *GRU, *RESUME)
    return out


def metrics(out_dir):
    return [{k: m[k] for k in COMPARED} for m in read_jsonl(out_dir / "metrics.jsonl")]


def test_train_py_trains_a_gru_and_its_checkpoint_says_so(gru_run):
    losses = [m["val_loss"] for m in metrics(gru_run)]
    assert losses[-1] < losses[0] - 0.5, losses  # from ~ln(65) on Tiny Shakespeare characters
    ckpt = torch.load(gru_run / "ckpt.pt", weights_only=True)
    assert ckpt["model_args"]["model_type"] == "gru" and ckpt["config"]["model_type"] == "gru"
    assert {"wte.weight", "rnn.weight_hh_l1", "rnn.bias_ih_l0"} <= set(ckpt["model"])
    assert json.loads((gru_run / "config.json").read_text())["model_type"] == "gru"


def test_sigkill_then_resume_matches_the_uninterrupted_gru_run_bit_for_bit(
    char_data, gru_run, tmp_path
):
    proc = start_until(
        tmp_path / "ckpt_000020.pt",
        *train_args(char_data, tmp_path, "--dtype=float32", *GRU, *RESUME),
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    checkpoint_iter = torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"]
    assert 20 <= checkpoint_iter < 50, (
        f"the interruption came too late (checkpoint at {checkpoint_iter})"
    )
    # no --model_type: the checkpoint's own
    train(char_data, tmp_path, *RESUME, "--init_from=resume")
    # == on floats: bit for bit, before and after the kill
    assert metrics(tmp_path) == metrics(gru_run)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gru"


def test_resume_refuses_another_model_type(
    char_data, gru_run, char_checkpoint, tmp_path, monkeypatch, capsys
):
    """char_checkpoint: a GPT's, from before model_type was recorded. Copies: a resume takes
    out_dir's lock first."""
    for run, saved, given in ((gru_run, "gru", "gpt"), (char_checkpoint, "gpt", "gru")):
        out_dir = shutil.copytree(run, tmp_path / saved)
        argv = train_args(char_data, out_dir, "--init_from=resume", f"--model_type={given}")[1:]
        code, _, err = run_train_main(argv, monkeypatch, capsys)
        assert (
            code == 2
            and len(err) == 1
            and f"model_type: checkpoint {saved!r} vs given {given!r}" in err[0]
        ), err


@pytest.mark.parametrize("bad", [["--optimizer=muon"], ["--init_from=gpt2"]])
def test_what_only_a_gpt_has_is_refused_in_one_line(char_data, tmp_path, bad, monkeypatch, capsys):
    code, _, err = run_train_main(
        train_args(char_data, tmp_path / "out", *GRU, *bad)[1:], monkeypatch, capsys
    )
    assert code == 2 and err == [
        "error: model_type=gru trains with optimizer=adamw, from scratch or resume, without fsdp "
        "(those are the GPT's)"
    ]
    assert not (tmp_path / "out").exists()


def test_sample_py_samples_a_gru(gru_run, cli):
    args = [
        f"--out_dir={gru_run}",
        "--device=cpu",
        "--dtype=float32",
        "--start=ROMEO:",
        "--max_new_tokens=40",
        "--stream=false",
    ]
    code, first, err = cli(sample.main, *args, "--num_samples=2", "--seed=7")
    assert code == 0 and err.startswith("80 tokens in "), err
    assert cli(sample.main, *args, "--num_samples=2", "--seed=7")[1] == first  # seeded
    texts = [block.removeprefix("ROMEO:") for block in first.split("---------------\n")[:2]]
    assert texts[0] != texts[1] and all(len(t) > 20 for t in texts)
    greedy = [
        cli(sample.main, *args, "--temperature=0", f"--use_cache={cache}")[1]
        for cache in (True, False)
    ]
    assert greedy[0] == greedy[1]  # the carried hidden state gives what reading it all again gives
    # the decoding kernels take the GRU's Linears (its head)
    code, _, err = cli(sample.main, *args, "--quantize=int8")
    assert code == 0, err


def test_bench_py_times_a_gru_step(char_data):
    result = run_script(
        "bench.py", "train", f"--dataset={char_data}", *TINY, *GRU, "--iters=2", "--warmup=1"
    )
    out = json.loads(result.stdout)
    expected = GRULM(
        GRUConfig(block_size=32, vocab_size=65, n_layer=2, n_embd=32)
    ).get_num_params()  # Tiny Shakespeare: 65 characters
    assert (
        out["params_M"] == round(expected / 1e6, 3)
        and out["cpu_ms_per_iter"] > 0
        and out["optimizer"] == "adamw"
    )


def test_attention_py_says_a_gru_has_no_attention(gru_run, cli):
    code, _, err = cli(attention.main, f"--out_dir={gru_run}", "--format=json")
    assert (
        code == 2
        and err.strip()
        == f"error: {gru_run} holds a recurrent model (GRULM): it has no attention to show"
    )
