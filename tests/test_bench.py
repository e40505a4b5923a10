"""bench.py prints the JSON it promises, and Muon (gptkit/muon.py, train.py --optimizer=muon)
optimizes. No timings asserted."""

import json
import math

import pytest
import torch
from conftest import ROOT, TINY, run_script, train_args

from gptkit.configurator import parse_args
from gptkit.muon import MuonAdamW, configure_muon, zeropower_via_newtonschulz5
from gptkit.train_config import TrainConfig
from model import GPT, GPTConfig


def bench(*args):
    result = run_script("bench.py", *args)
    return json.loads(result.stdout)  # the whole stdout is one JSON object


def test_bench_train_reports_throughput_mfu_and_memory(char_data):
    out = bench(
        "train", f"--dataset={char_data}", *TINY, "--optimizer=muon", "--iters=2", "--warmup=1"
    )
    for key in (
        "tok_per_s",
        "ms_per_iter",
        "cpu_ms_per_iter",
        "mfu",
        "peak_tflops",
        "peak_rss_mib",
    ):
        assert out[key] > 0, (key, out)
    assert out["tokens_per_iter"] == 8 * 32
    assert out["optimizer"] == "muon" and out["params_M"] < 0.1
    choices = out["choices"]  # what was chosen for this machine, and why
    assert choices["dtype"] in ("float32", "bfloat16")
    assert choices["newton_schulz_dtype"] in ("float32", "bfloat16")
    assert set(choices["reasons"]) == {"dtype", "newton_schulz_dtype", "sdpa", "threads", "compile"}
    assert all(choices["reasons"].values())
    # sdpa=auto on CPU; OMP_NUM_THREADS=1
    assert choices["sdpa"] == (choices["dtype"] == "float32") and choices["threads"] == 1


def test_bench_sample_reports_every_path_and_its_fraction_of_the_read_bandwidth():
    out = bench(
        "sample",
        "--prompt_len=4",
        "--new_tokens=3",
        "--device=cpu",
        "--dtype=float32",
        "--quantize=int8,int4",
        "--plain=true",
    )
    assert out["params_M"] > 100 and out["shape"] == "gpt2"  # GPT-2 small's shape
    for path in ("cached", "uncached", "int8", "int4", "generate"):
        assert out[f"{path}_tok_per_s"] > 0, path
    assert out["kv_cache_speedup"] == pytest.approx(
        out["cached_tok_per_s"] / out["uncached_tok_per_s"], rel=0.02
    )
    assert out["int8_speedup"] == pytest.approx(
        out["int8_tok_per_s"] / out["cached_tok_per_s"], rel=0.02
    )
    # the split: the Linears alone take part of a token
    for path in ("cached", "int8", "int4"):
        assert 0 < out[f"{path}_linears_ms_per_token"] and out[f"{path}_else_fraction"] < 1
    # a decoded token's top ops, the prompt's share subtracted: each path's kernel among them
    assert "mkldnn::_linear_pointwise" in out["cached_top_ops_ms_per_token"]
    assert "aten::_int_mm" in out["int8_top_ops_ms_per_token"]
    assert "aten::_weight_int4pack_mm_for_cpu" in out["int4_top_ops_ms_per_token"]
    # the same greedy tokens
    assert out["cached_equals_uncached"] is True
    assert out["generate_first_greedy_token_differing"] is None
    # fp32: 4 bytes a parameter, the tied head counted once, the position table (a lookup) not
    # at all
    fp32_bytes = 4 * (124_475_904 - 1024 * 768)
    assert (
        out["cached_weight_bytes_per_token"] == out["generate_weight_bytes_per_token"] == fp32_bytes
    )
    head_rows = -(-50304 // 16) * 16
    # every Linear's 4-bit weight...
    int4_weights = (fp32_bytes - 4 * 50304 * 768) // 8 + head_rows * 768 // 2
    # ...plus its scales and offsets, biases and norms
    assert out["int4_weight_bytes_per_token"] > int4_weights
    assert (
        out["int4_weight_bytes_per_token"]
        < out["int8_weight_bytes_per_token"] / 1.7
        < fp32_bytes / 3.5 / 1.7
    )
    # fp32 keys and values at the mean cache length
    assert out["kv_bytes_per_token"] == 2 * 12 * (4 + 3 / 2) * 768 * 4
    low, high = out["read_gb_per_s_min_max"]
    assert 0 < low <= out["read_gb_per_s"] <= high
    # each run divided by the bandwidth measured beside it
    for path in ("cached", "int8", "int4", "generate"):
        nbytes = out[f"{path}_weight_bytes_per_token"] + out["kv_bytes_per_token"]
        assert (
            low * 0.99
            <= out[f"{path}_tok_per_s"] * nbytes / out[f"{path}_read_fraction"] / 1e9
            <= high * 1.01
        )


def test_bench_sample_runs_another_checkout_beside_this_one():
    # this checkout as its own baseline: the same code, so the same greedy tokens
    out = bench(
        "sample",
        "--cache=quantized",
        "--quantize=int4",
        f"--baseline={ROOT}",
        "--prompt_len=3",
        "--new_tokens=3",
        "--profile_tokens=0",
        "--device=cpu",
    )
    assert out["int4_baseline_tok_per_s"] > 0
    assert out["int4_vs_baseline"] == pytest.approx(
        out["int4_tok_per_s"] / out["int4_baseline_tok_per_s"], rel=0.02
    )
    assert out["int4_baseline_first_greedy_token_differing"] is None


def test_the_frontier_is_every_speedrun_config_cheapest_first():
    from bench import FRONTIER, config_args

    assert sorted(FRONTIER) == sorted(
        f"config/{p.name}" for p in (ROOT / "config").glob("speedrun_*.py")
    )
    # named relative to the repository, wherever bench.py runs
    assert all(config_args(c) == [c] for c in FRONTIER)
    configs = [parse_args(TrainConfig(), [str(ROOT / c)]) for c in FRONTIER]
    # a step's matmul work grows with n_layer * n_embd^2
    work = [c.max_iters * c.n_layer * c.n_embd**2 for c in configs]
    assert work == sorted(work) and len(set(work)) == len(work), work


def test_bench_time_to_target_scores_the_full_val_split(char_data, tmp_path):
    config = tmp_path / "tiny.py"
    lines = [a[2:].replace("=", " = ") for a in TINY if not a.startswith("--device")]
    lines += [
        f"dataset = '{char_data}'",
        "max_iters = 30",
        "eval_interval = 30",
        "eval_iters = 2",
        "learning_rate = 3e-3",
    ]
    config.write_text("\n".join(lines) + "\ndevice = 'cpu'\n")
    reached = bench(
        "time_to_target",
        f"--configs={config}",
        "--target=10.0",
        f"--plot={tmp_path / 'frontier.png'}",
    )
    run = reached["configs"][str(config)]
    import matplotlib.image

    # loss against minutes, for docs/speedrun_frontier.png
    image = matplotlib.image.imread(tmp_path / "frontier.png")
    assert image.shape[:2] == (400, 600) and image.std() > 0
    # learned something
    assert len(run["runs"]) == 1 and 0 < run["runs"][0]["val_loss"] < math.log(65)
    assert run["time_to_target_s"] == run["median_wall_s"] > 0
    # train.py's choices.json
    choices = run["runs"][0]["choices"]
    assert choices["threads"] >= 1 and "sdpa" in choices["reasons"]
    missed = bench("time_to_target", f"--configs={config}", "--target=0.1")
    assert missed["configs"][str(config)]["time_to_target_s"] is None


@pytest.mark.parametrize(
    "args",
    [
        ["nope"],
        ["sample", "--cache=maybe"],
        ["sample", "--baseline=tests"],  # a directory, not a checkout
        ["sample", "--compile=True", "--device=cpu"],  # the captured step is a GPU's
        ["time_to_target", "--configs=no_such_config"],
        ["time_to_target", "--inductor_cache=hot"],
        ["train", "--compile=auto"],
    ],
)
def test_bench_bad_input_is_one_clear_line(args):
    result = run_script("bench.py", *args, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


# --------------------------------------------------------------------------------------------------
# Muon


@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_newton_schulz_orthogonalizes(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    X = zeropower_via_newtonschulz5(G).float()
    singular = torch.linalg.svdvals(X)
    assert X.shape == G.shape
    # all directions move about equally
    assert singular.min() > 0.5 and singular.max() < 1.3, singular
    # same singular vectors as G: X is U V^T, so G^T X = V S V^T is symmetric positive definite
    gx = G.T @ X if shape[0] >= shape[1] else G @ X.T
    torch.testing.assert_close(gx, gx.T, atol=0.1 * gx.abs().max().item(), rtol=0)
    assert torch.linalg.eigvalsh((gx + gx.T) / 2).min() > 0


def test_newton_schulz_runs_in_the_dtype_it_is_given():
    # a stack of tall matrices
    G = torch.randn(4, 48, 16, generator=torch.Generator().manual_seed(0))
    exact = zeropower_via_newtonschulz5(G.double(), dtype=torch.float64)
    fp32, bf16 = (zeropower_via_newtonschulz5(G, dtype=d) for d in (torch.float32, torch.bfloat16))
    assert fp32.dtype == bf16.dtype == torch.float32  # returned in G's dtype either way
    torch.testing.assert_close(fp32, exact.float(), atol=1e-4, rtol=0)
    assert (bf16 - exact).abs().max() > 1e-3  # bf16 really rounds: the dtype is not ignored


def test_build_optimizer_passes_the_newton_schulz_dtype():
    from gptkit.train_config import TrainConfig, build_optimizer

    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16))
    for name in ("float32", "bfloat16"):
        optimizer = build_optimizer(model, TrainConfig(optimizer="muon"), "cpu", name)
        assert optimizer.ns_dtype == getattr(torch, name)


def test_configure_muon_puts_block_matrices_on_muon_and_the_rest_on_adamw():
    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=True))
    optimizer = configure_muon(
        model, learning_rate=1e-3, muon_lr=0.02, weight_decay=0.1, betas=(0.9, 0.95)
    )
    names = {id(p): n for n, p in model.named_parameters()}
    muon_group = [g for g in optimizer.param_groups if g["use_muon"]]
    assert len(muon_group) == 1 and muon_group[0]["lr_scale"] == pytest.approx(20)
    on_muon = {names[id(p)] for p in muon_group[0]["params"]}
    assert on_muon == {
        f"transformer.h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    every = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    assert sorted(every) == sorted(names.values())  # each parameter exactly once
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([dict(params=[torch.nn.Parameter(torch.zeros(3))], use_muon=True)])
    # without embedding_lr the token embedding shares a group
    assert not any(g["params"] == [model.transformer.wte.weight] for g in optimizer.param_groups)


def test_embedding_lr_gives_the_token_embedding_its_own_group():
    model = GPT(
        GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=16, tie_weights=False)
    )
    optimizer = configure_muon(
        model,
        learning_rate=1e-3,
        muon_lr=0.02,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        embedding_lr=0.3,
    )
    (group,) = [
        g
        for g in optimizer.param_groups
        if any(p is model.transformer.wte.weight for p in g["params"])
    ]
    assert (
        len(group["params"]) == 1
        and group["lr_scale"] == pytest.approx(300)
        and not group.get("use_muon")
    )
    every = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())
    # the untied head stays at learning_rate
    assert any(
        p is model.lm_head.weight
        for g in optimizer.param_groups
        if g["lr_scale"] == 1.0
        for p in g["params"]
    )
    # a tied head, and value embeddings: they join the token embedding's group
    model = GPT(
        GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=16, value_embeds=True)
    )
    optimizer = configure_muon(
        model,
        learning_rate=1e-3,
        muon_lr=0.02,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        embedding_lr=0.3,
    )
    (group,) = [g for g in optimizer.param_groups if g["lr_scale"] == pytest.approx(300)]
    assert {id(p) for p in group["params"]} == {
        id(model.transformer.wte.weight),
        *(id(t.weight) for t in model.transformer.ve),
    }


def test_muon_weight_decay_shrinks_the_block_matrices_by_lr_times_it():
    """With zero gradients Muon's update is zero: what is left of a step is its decay, lr x
    muon_weight_decay on the blocks' matrices (weight_decay stays AdamW's, on the rest)."""

    def one_step(muon_weight_decay):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
        optimizer = configure_muon(
            model, 1e-3, 0.05, 0.0, (0.9, 0.95), muon_weight_decay=muon_weight_decay
        )
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
        return before, dict(model.named_parameters())

    before, after = one_step(0.5)
    matrix = "transformer.h.0.mlp.c_fc.weight"
    torch.testing.assert_close(after[matrix], before[matrix] * (1 - 0.05 * 0.5))
    torch.testing.assert_close(after["transformer.wte.weight"], before["transformer.wte.weight"])
    before, after = one_step(0.0)
    torch.testing.assert_close(after[matrix], before[matrix])


def test_muon_fits_a_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=False))
    optimizer = configure_muon(
        model, learning_rate=1e-2, muon_lr=0.05, weight_decay=0.0, betas=(0.9, 0.95)
    )
    x = torch.randint(32, (4, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(30):
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_muon_never_imports_the_compiler():
    """torch.optim.Optimizer's methods import torch._dynamo on first call (start-up time a short
    CPU run feels); MuonAdamW's do not."""
    code = (
        "import sys, torch; from model import GPT, GPTConfig\n"
        "from gptkit.muon import configure_muon\n"
        "model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))\n"
        "opt = configure_muon(model, 1e-3, 0.05, 0.1, (0.9, 0.95), embedding_lr=0.1)\n"
        "x = torch.randint(32, (2, 8)); model(x, x)[1].backward()\n"
        "opt.step(); opt.zero_grad(set_to_none=True)\n"
        "opt.load_state_dict(opt.state_dict()); assert opt.param_groups[1]['lr'] == 0.1\n"
        "print('torch._dynamo' in sys.modules)"
    )
    assert run_script("-c", code).stdout.strip() == "False"


def test_train_with_muon_learns_and_resumes(char_data, tmp_path):
    args = [
        "--optimizer=muon",
        "--muon_lr=0.05",
        "--learning_rate=3e-3",
        "--max_iters=30",
        "--sdpa=False",
        "--eval_interval=10",
        "--eval_iters=3",
        "--warmup_iters=3",
        "--lr_decay_iters=40",
        "--dtype=float32",
        "--embedding_lr=0.1",
        "--tie_weights=False",
    ]
    run_script(*train_args(char_data, tmp_path, *args))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"] - 0.5, metrics
    choices = json.loads((tmp_path / "choices.json").read_text())
    assert (choices["dtype"], choices["sdpa"]) == ("float32", False)
    assert choices["reasons"]["sdpa"] == "set by sdpa"
    # the optimizer state (momentum buffers, Adam moments) round-trips through a weights_only
    # checkpoint
    run_script(
        *train_args(
            char_data, tmp_path, *args[:3], "--max_iters=40", *args[4:], "--init_from=resume"
        )
    )
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["iter"] == 40
    # the embedding's group is part of the optimizer state: its lr cannot change on resume
    refused = run_script(
        *train_args(char_data, tmp_path, *args, "--embedding_lr=0.2", "--init_from=resume"),
        check=False,
    )
    assert refused.returncode == 2 and "embedding_lr: checkpoint 0.1 vs given 0.2" in refused.stderr


def test_unknown_optimizer_is_one_clear_line(char_data, tmp_path):
    result = run_script(*train_args(char_data, tmp_path, "--optimizer=sgd"), check=False)
    assert result.returncode == 2 and "optimizer='sgd' must be adamw or muon" in result.stderr
    result = run_script(*train_args(char_data, tmp_path, "--embedding_lr=0.3"), check=False)
    assert (
        result.returncode == 2
        and "embedding_lr=0.3 must be >= 0, and is for optimizer=muon" in result.stderr
    )
