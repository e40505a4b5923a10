"""
Speed and memory benchmarks. Every subcommand prints ONE JSON object on stdout (progress goes to
stderr).

    python bench.py train config/train_shakespeare_char_fast.py  # tok/s, ms/iter, MFU, peak RSS
    python bench.py train --batch_size=1 --block_size=1024       # the default GPT-2 124M, batch 1
    python bench.py sample --prompt_len=64 --new_tokens=512 --dtype=float32  # KV cache vs none
    python bench.py sample --quantize=int8,int4 --cache=on --repeats=3 --dtype=float32  # vs fp32
    python bench.py time_to_target --target=1.88 --configs=ref,fast --repeats=3
    python bench.py all                                          # all of the above, one JSON object

train: any train.py config file and --key=value apply (the model, its kind, batch, dtype, compile,
    optimizer...). Synthetic tokens (throughput does not depend on the text). Times --iters steps
    after --warmup steps (the warmup absorbs torch.compile); cpu_ms_per_iter is the process's CPU
    time per step, which other processes on a shared machine inflate far less than the wall time.
    MFU uses the PaLM formula (hardware.flops_per_token) against a peak measured on the spot by a
    large matmul in the same dtype (hardware.measure_peak_flops).
sample: a GPT-2-small-shaped model (GPTConfig defaults; --shape=gpt2-xl: 1.5B) with random weights,
    batch 1; --prompt_len random tokens, then --new_tokens greedy tokens per path: `cached` is
    sample.py's path (decoding.prepare_for_decoding in the decoding dtype), --quantize=int8,int4
    adds sample.py --quantize's, --plain=true model.generate on the unprepared model, and `uncached`
    is nanoGPT's generate on the plain model (recompute the whole cropped context, fp32 on CPUs as
    nanoGPT runs there; minutes on a 2-core CPU at 512 new tokens; --cache=on leaves it out,
    --cache=quantized times only the --quantize paths). Paths run interleaved --repeats times
    (medians reported). The read limit: read_gb_per_s is a sum over a 512 MiB buffer at the run's
    thread count (bytes read per second, best of 10), measured before the first path and after every
    path's run; <path>_weight_bytes_per_token is every weight byte a cached token reads (every
    Linear, LM head, norm, int8/int4 scales; not the embedding lookups), kv_bytes_per_token the mean
    keys and values it reads, and <path>_read_fraction = tok/s x (weight + KV bytes per token) / the
    read bandwidth measured right before or after that run (the higher), the median over repeats
    (_best: the highest). The split of a token: <path>_linears_ms_per_token is the Linears alone
    (every kernel module on one row, timed right after each run), <path>_else_fraction the rest of
    the token's time (each run against its own Linears, the median), <path>_top_ops_ms_per_token
    a decoded token's profile. --baseline=DIR, another checkout of this repository (git worktree add
    DIR COMMIT), adds <path>_baseline for each decoded path (its model.generate and decoding
    kernels, the same weights), interleaved with today's, and <path>_vs_baseline, the tok/s ratio:
        python bench.py sample --cache=on --quantize=int8,int4 --dtype=float32 --baseline=/tmp/base
    --compile=True (a GPU only) adds <path>_compiled, the captured decode step (one CUDA graph a
    token, gptkit/decode_step.py) on the same model, and <path>_compiled_speedup against the eager
    step (its first run pays the compile: read the median of --repeats=3):
        python bench.py sample --device=cuda --cache=on --compile=True --repeats=3
time_to_target: runs `python train.py <config>` exactly as a user would, in a subprocess, and times
    its whole wall clock (interpreter start, data, model build, compile, its own periodic evals and
    checkpoint writes). Then, untimed, it scores the run's checkpoint on the FULL val split
    (train.py --eval_only, i.e. train.evaluate_split) and reports whether that loss is <= --target.
    time_to_target_s is the wall time when the target was reached, null when it was not. Configs are
    run interleaved (ref, fast, ref, fast, ...) --repeats times so background load hits both alike;
    speedup is median(ref) / median(fast). Config names: "ref" (nanoGPT's README CPU command, with
    this repo's dtype/attention choices), "nanogpt" (the same command as nanoGPT's train.py runs it
    on a CPU: float32, SDPA), "fast" (config/train_shakespeare_char_fast.py), "fast_fp32"
    (config/train_shakespeare_char_fast_fp32.py, for CPUs without native bf16), a path to a config
    file, or "frontier": the speedrun configs (config/speedrun_*.py, 1 to 10 minutes) and "nanogpt"
    (~25 minutes in all). --plot=PNG draws each config's full-val loss against its wall minutes,
    with a line at nanoGPT's own GPU result, as docs/speedrun_frontier.png was drawn:
        python bench.py time_to_target --configs=frontier --plot=docs/speedrun_frontier.png
    --inductor_cache=cold (the default) gives every run an empty Inductor cache, so a run that
    compiles pays its cold compile in its wall time; =warm uses the user's own cache.
Peak RSS is the process's high-water mark (ru_maxrss); each subcommand of `all` runs in its own
process.
"""

import copy
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields

import torch

from gptkit import decode_step, hardware
from gptkit.base import UserError, save_figure
from gptkit.configurator import ConfigError, parse_args, run_cli
from gptkit.decoding import check_quantize, prepare_for_decoding
from gptkit.loader import data_dir_for, load_meta
from gptkit.train_config import TrainConfig, build_optimizer, new_model, validate
from model import GPT, Block, GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))

# nanoGPT's README command for a CPU (the reference): 2000 iterations, 0.8M parameters
REFERENCE = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=100",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
    "--eval_interval=500",
]
# what nanoGPT's own train.py computes for that command on a CPU: float32 (its autocast is for
# CUDA only) and F.scaled_dot_product_attention; "ref" instead runs the command with this repo's
# machine-aware choices
NANOGPT = [*REFERENCE, "--dtype=float32", "--sdpa=true"]
NAMED_CONFIGS = {
    "ref": REFERENCE,
    "nanogpt": NANOGPT,
    # CPUs with native bf16
    "fast": ["config/train_shakespeare_char_fast.py"],
    # CPUs that train in float32 (AVX2)
    "fast_fp32": ["config/train_shakespeare_char_fast_fp32.py"],
}
# the speedrun frontier: the lowest full-val loss in 1, 1.5, 2, 5 and 10 minutes on a 2-core CPU
# (docs/training.md)
FRONTIER = [f"config/speedrun_{budget}.py" for budget in ("1min", "90s", "2min", "5min", "10min")]
# --configs=frontier also runs nanoGPT's CPU command (one point), and the plot draws a line at
# nanoGPT's own GPU result: its README's val loss for train_shakespeare_char.py on an A100
NANOGPT_GPU_VAL_LOSS = 1.4697


@dataclass(frozen=True)
class BenchConfig:
    iters: int = 20  # timed training steps
    warmup: int = 3  # untimed steps first (torch.compile compiles in the first one)
    prompt_len: int = 64  # sample: prompt tokens
    new_tokens: int = 512  # sample: tokens to generate, per path
    cache: str = "both"  # sample: "both" | "on" | "off" | "quantized" (only the --quantize paths)
    quantize: str = "none"  # sample: "none", or int8, int4 or "int8,int4": adds those cached paths
    # sample: adds model.generate on the unprepared model (the cache, plain nn.Linear)
    plain: bool = False
    # sample: adds <path>_loop, model.generate on each prepared model (the notes' loop around the
    # same kernels, what sample.py ran before gptkit.decode_step)
    loop: bool = False
    # sample: decoded tokens per path under torch.profiler (the prompt's share subtracted), for the
    # top ops
    profile_tokens: int = 16
    # sample: another checkout of this repository (`git worktree add /tmp/base d580eb3`) adds
    # <path>_baseline for each decoded path: its model.generate and its decoding kernels on the same
    # weights, interleaved with today's, and <path>_vs_baseline, the tok/s ratio
    baseline: str = ""
    # sample: build the one --quantize path's random model a block at a time, each block quantized
    # before the next is built, so the fp32 model is never whole (GPT-2 XL's peak RSS)
    layerwise: bool = False
    # sample: "gpt2" (124M) | "gpt2-xl" (1.5B: 48 layers, 1600 wide, 25 heads), random weights
    shape: str = "gpt2"
    target: float = 1.88  # time_to_target: full-val-split loss to reach
    configs: str = "ref,fast"  # time_to_target: comma-separated names or config file paths
    repeats: int = 1  # time_to_target: interleaved runs of each config
    # time_to_target: also draw each config's full-val loss against its wall minutes into this PNG
    plot: str = ""
    # time_to_target: "cold" gives each run an empty Inductor cache (a first compile, counted in
    # its wall time, as published); "warm" the user's own cache (run twice: the second is warm)
    inductor_cache: str = "cold"
    seed: int = 1337


def split_args(argv):
    """Bench flags go to BenchConfig, config files and everything else to TrainConfig; both are
    type-checked."""
    bench_keys = {f.name for f in fields(BenchConfig)}
    bench_argv = [a for a in argv if a.startswith("--") and a[2:].partition("=")[0] in bench_keys]
    train_argv = [a for a in argv if a not in bench_argv]
    bench = parse_args(BenchConfig(), bench_argv)
    if (
        bench.iters < 1
        or bench.warmup < 0
        or bench.repeats < 1
        or bench.prompt_len < 1
        or bench.new_tokens < 1
    ):
        raise UserError("iters, repeats, prompt_len and new_tokens must be >= 1, warmup >= 0")
    if bench.cache not in ("both", "on", "off", "quantized"):
        raise UserError(f"--cache={bench.cache} must be both, on, off or quantized")
    if bench.shape not in SHAPES:
        raise UserError(f"--shape={bench.shape} must be one of {', '.join(SHAPES)}")
    for quantize in bench.quantize.split(","):
        check_quantize(quantize)
    return bench, train_argv


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# --------------------------------------------------------------------------------------------------
# Training throughput


def bench_train(bench, train_argv):
    cfg = parse_args(TrainConfig(), train_argv)
    validate(cfg)
    if cfg.compile == "auto":
        raise UserError("bench.py train times one kind of step: give --compile=True or False")
    # what train.py would choose, and why
    choices = hardware.training_choices(cfg.device, cfg.dtype, cfg.sdpa, cfg.n_embd)
    # bench steps skip the GradScaler (float16 only; bf16 and fp32 need none)
    hw = hardware.setup(cfg.device, choices.dtype)
    device, dtype = hw.device, hw.dtype
    # the dataset's vocabulary if it is prepared, else GPT-2's: the tokens themselves are synthetic
    try:
        vocab_size = load_meta(data_dir_for(cfg.dataset))["vocab_size"]
    except UserError:
        vocab_size = GPTConfig.vocab_size
    torch.manual_seed(bench.seed)
    # --model_type=gru: the recurrent baseline's step
    model = new_model(cfg, vocab_size, choices.sdpa).to(device)
    optimizer = build_optimizer(model, cfg, hw.device_type, choices.newton_schulz_dtype)
    step_model = torch.compile(model, dynamic=False) if cfg.compile else model
    generator = torch.Generator().manual_seed(bench.seed)
    shape = (cfg.batch_size, cfg.block_size + 1)

    def step():
        for _ in range(cfg.gradient_accumulation_steps):
            tokens = torch.randint(vocab_size, shape, generator=generator).to(device)
            with hw.ctx:
                _, loss = step_model(tokens[:, :-1], tokens[:, 1:])
            (loss / cfg.gradient_accumulation_steps).backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(bench.warmup):
        step()
    hardware.sync(device)
    warmup_s = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(bench.iters):
        t0, cpu0 = time.perf_counter(), time.process_time()
        step()
        hardware.sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - cpu0)
    dt = statistics.median(times)
    peak = hardware.measure_peak_flops(device, getattr(torch, dtype))
    tokens_per_iter = cfg.batch_size * cfg.block_size * cfg.gradient_accumulation_steps
    mfu = hardware.estimate_mfu(model, cfg.batch_size * cfg.gradient_accumulation_steps, dt, peak)
    return {
        "params_M": round(model.get_num_params() / 1e6, 3),
        "device": device,
        "dtype": dtype,
        "compile": cfg.compile,
        "optimizer": cfg.optimizer,
        "threads": torch.get_num_threads(),
        "tokens_per_iter": tokens_per_iter,
        "ms_per_iter": round(dt * 1000, 2),
        "tok_per_s": round(tokens_per_iter / dt),
        # this process's CPU time: what a busy machine does not add
        "cpu_ms_per_iter": round(statistics.median(cpu_times) * 1000, 2),
        "warmup_s": round(warmup_s, 2),
        "peak_tflops": round(peak / 1e12, 3),
        "mfu": round(mfu, 4),
        "peak_rss_mib": round(peak_rss_mib()),
        "choices": asdict(choices),
    }


# --------------------------------------------------------------------------------------------------
# Sampling throughput: KV cache against recomputing the context every token


def read_bandwidth(device, mib=512, repeats=10):
    """Bytes read per second by the best of `repeats` sums over a mib-MiB fp32 buffer, at torch's
    thread count: a read-only stream, as a batch-1 token streams its weights (llama.cpp's and
    gpt-fast's numbers are fractions of this kind of figure, not of a copy's read + written bytes).
    Written once first, so no page is the zero page."""
    buffer = torch.ones(mib * 2**18, device=device)
    buffer.sum()  # fault the pages in, wake the threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        buffer.sum()
        hardware.sync(device)
        best = min(best, time.perf_counter() - t0)
    return buffer.numel() * buffer.element_size() / best


def weight_bytes_per_token(model):
    """Bytes of weights one cached token reads: every parameter and buffer (int8/int4 weights, their
    scales and offsets included) but the embedding tables (a lookup reads one row of each),
    attention masks and rotary tables (rows again); a tied LM head counts once, as the head."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = getattr(model.lm_head, "weight", None)
    tables = {id(getattr(model, name, None)) for name in ("rope_cos", "rope_sin")}
    tensors = {
        id(t): t
        for t in [*model.parameters(), *model.buffers()]
        if t.dtype != torch.bool and id(t) not in tables
    }
    return sum(
        t.numel() * t.element_size() for i, t in tensors.items() if i not in embeddings or t is head
    )


def kv_bytes_per_token(config, prompt_len, new_tokens):
    """Mean bytes of cached keys and values a token reads (fp32 cache, batch 1): every layer's keys
    and values at the step's cache length, prompt_len + new_tokens / 2 on average."""
    return 2 * config.n_layer * (prompt_len + new_tokens / 2) * config.n_embd * 4


# 124M and 1.5B, random weights
SHAPES = {
    "gpt2": GPTConfig(),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
}


def layerwise_model(config, quantize, device):
    """A random GPT with GPT's own initialization, each block built and quantized before the next:
    at most one block in fp32 at a time (GPT-2 XL: 6.2 GB in fp32 whole, ~1 GB in int4). Its
    weights are not the whole-built model's (another draw of the RNG)."""
    with torch.device("meta"):  # shapes only
        model = GPT(config)
    for i in range(config.n_layer):
        block = Block(config).to(device)
        block.apply(model._init_weights)
        for name, p in block.named_parameters():  # GPT-2's scaled residual init, as GPT.__init__
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        model.transformer.h[i] = prepare_for_decoding(block.eval(), quantize)
    t = model.transformer
    for module in (t.wte, t.wpe, t.ln_f):
        module.to_empty(device=device)
        module.reset_parameters() if module is t.ln_f else model._init_weights(module)
    model.lm_head = torch.nn.Linear(config.n_embd, config.vocab_size, bias=False, device=device)
    if config.tie_weights:
        model.lm_head.weight = t.wte.weight
    else:
        model._init_weights(model.lm_head)
    return prepare_for_decoding(model.eval(), quantize)


def baseline_files(directory):
    """--baseline's model.py and decoding module (gptkit/decoding.py, or a top-level decoding.py as
    before gptkit/), or a UserError naming what is missing."""
    found = []
    for candidates in (["model.py"], ["gptkit/decoding.py", "decoding.py"]):
        paths = [p for p in (os.path.join(directory, c) for c in candidates) if os.path.exists(p)]
        if not paths:
            raise UserError(
                f"--baseline={directory} has no {' or '.join(candidates)}: give a checkout of this "
                "repository (git worktree add DIR COMMIT)"
            )
        found.append(paths[0])
    return found


def baseline_modules(directory):
    """(model, decoding): another checkout's model.py and decoding module, each imported under a
    name of its own with the checkout first on sys.path, so that its own imports resolve inside
    it."""
    import importlib.util

    modules = []
    for name, path in zip(("model", "decoding"), baseline_files(directory), strict=True):
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, directory)
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(directory)
        modules.append(module)
    return modules


def baseline_path(modules, plain, quantize, dtype):
    """(model, generate) of --baseline's checkout (its baseline_modules): its GPT with plain's
    weights, prepared by its own prepare_for_decoding, sampled by its own model.generate."""
    model_module, decoding = modules
    c = plain.config
    shape = dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, vocab_size=c.vocab_size)
    model = model_module.GPT(model_module.GPTConfig(**shape, block_size=c.block_size))
    model.load_state_dict(plain.state_dict())
    model = decoding.prepare_for_decoding(model.eval(), quantize, dtype)
    return model, lambda m, *a, **k: m.generate(*a, **k)


def sample_paths(bench, plain, dtype, compiled=False):
    """name -> (model, generate). `cached` is sample.py's path in the decoding dtype (the prepared
    model's Linears under gptkit.decode_step), `int8`/`int4` its --quantize ones, `<name>_loop` the
    same prepared model in model.generate (--loop=true), `generate` the plain model's model.generate
    with the cache (what a Python caller gets without prepare_for_decoding), `uncached` nanoGPT's
    generate. A single path is prepared in place, not on a copy: GPT-2 XL in fp32 is 6.2 GB."""
    names = {
        "both": ["uncached", "cached"],
        "on": ["cached"],
        "off": ["uncached"],
        "quantized": [],
    }[bench.cache]
    names += [q for q in bench.quantize.split(",") if q != "none"]
    if bench.plain:
        names.append("generate")
    if not names:
        raise UserError(
            "--cache=quantized times only the --quantize paths: give --quantize=int8 or int4"
        )
    paths = {}
    if bench.baseline:  # built first, from the plain weights, before a path prepares them in place
        modules = baseline_modules(bench.baseline)
        for name in [n for n in names if n not in ("uncached", "generate")]:
            quantize = "none" if name == "cached" else name
            baseline = baseline_path(modules, plain, quantize, getattr(torch, dtype))
            paths[f"{name}_baseline"] = baseline
    for name in names:
        model = plain if len(names) == 1 and not paths else copy.deepcopy(plain)
        if name in ("uncached", "generate"):
            use_cache = name == "generate"
            paths[name] = (model, lambda m, *a, c=use_cache, **k: m.generate(*a, use_cache=c, **k))
            continue
        quantize = "none" if name == "cached" else name
        model = prepare_for_decoding(model, quantize, getattr(torch, dtype))
        paths[name] = (model, decode_step.generate)
        if compiled:  # the captured step (a GPU's CUDA graph) on the same prepared model
            paths[f"{name}_compiled"] = (
                model,
                functools.partial(decode_step.generate, compile=True),
            )
        if bench.loop:
            paths[f"{name}_loop"] = (model, lambda m, *a, **k: m.generate(*a, **k))
    return paths


def kernel_modules(model):
    """The model's Linears as prepared (PackedLinear, Int8Linear, Int4Linear or nn.Linear), in
    order: the matrices a token streams."""
    return [m for m in model.modules() if hasattr(m, "in_features") and hasattr(m, "out_features")]


@torch.no_grad()
def linears_s_per_token(model, device, repeats=5):
    """Seconds one token spends in the model's Linears alone: each kernel module's forward (its own
    casts, quantization and padding included; called as the decode step calls it, without
    nn.Module.__call__) on one (1, 1, in) row, all of them in turn, best of `repeats` after a warm
    pass."""
    modules = kernel_modules(model)
    rows = [torch.randn(1, 1, m.in_features, device=device) for m in modules]
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for module, row in zip(modules, rows, strict=True):
            module.forward(row)
        hardware.sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def top_ops(generate, model, prompt, tokens, n=8):
    """{op: ms per token} for the n ops with the most self CPU time in a decoded token
    (torch.profiler): `generate` making `tokens` + 1 greedy tokens, less the same call making one
    (the prompt's forward and the first token), over `tokens`. Without the subtraction a 64-token
    prompt would weigh in as several tokens' worth of kernel time."""
    from torch.profiler import ProfilerActivity, profile

    def self_ms(new_tokens):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generate(model, prompt, new_tokens, temperature=0)
        return {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}

    prefill, whole = self_ms(1), self_ms(tokens + 1)
    per_token = {op: (ms - prefill.get(op, 0.0)) / tokens for op, ms in whole.items()}
    top = sorted(per_token.items(), key=lambda item: item[1], reverse=True)[:n]
    return {op: round(ms, 3) for op, ms in top}


def bench_sample(bench, train_argv):
    cfg = parse_args(TrainConfig(), train_argv)  # only device and dtype are used
    if bench.baseline:
        baseline_files(bench.baseline)  # a wrong directory is said before any model is built
    on_gpu = hardware.kind(hardware.pick_device(cfg.device)) == "cuda"
    if cfg.compile not in (False, True) or (cfg.compile and not on_gpu):
        raise UserError(
            f"bench.py sample --compile={cfg.compile}: True times the captured decode step, on a "
            "GPU only (a CPU keeps the eager step: docs/sampling.md)"
        )
    hw = hardware.setup_for_sampling(cfg.device, cfg.dtype)
    device, dtype = hw.device, hw.dtype
    torch.manual_seed(bench.seed)
    with torch.device("meta"):  # counted on shapes: a layerwise model's int4 weights are buffers
        n_params = GPT(SHAPES[bench.shape]).get_num_params()
    # GPT-2 small (12 layers, 768 wide) or XL; 1024 context
    if bench.layerwise:
        quantize = bench.quantize.split(",")
        if bench.cache != "quantized" or len(quantize) != 1 or quantize[0] == "none":
            raise UserError(
                "--layerwise=true builds one path: give --cache=quantized --quantize=int4"
            )
        plain = layerwise_model(SHAPES[bench.shape], quantize[0], device)
    else:
        plain = GPT(SHAPES[bench.shape]).to(device).eval()
    if bench.prompt_len + bench.new_tokens > plain.config.block_size:
        raise UserError(
            f"prompt_len + new_tokens must be <= {plain.config.block_size}, the model's context"
        )
    prompt = torch.randint(
        plain.config.vocab_size,
        (1, bench.prompt_len),
        generator=torch.Generator().manual_seed(bench.seed),
    )
    result = {
        "shape": bench.shape,
        "params_M": round(n_params / 1e6, 3),
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "prompt_len": bench.prompt_len,
        "new_tokens": bench.new_tokens,
        "greedy": True,
        "load_avg_1_5_15_before": [round(x, 2) for x in os.getloadavg()],
    }
    paths = sample_paths(bench, plain, dtype, compiled=cfg.compile is True)
    kv_bytes = kv_bytes_per_token(plain.config, bench.prompt_len, bench.new_tokens)
    times = {name: [] for name in paths}
    fractions = {name: [] for name in paths}
    linears, else_fractions = {name: [] for name in paths}, {name: [] for name in paths}
    outputs = {}
    bandwidths = [read_bandwidth(device)]
    for r in range(bench.repeats):  # interleaved, so background load hits every path alike
        for name, (model, generate) in paths.items():
            print(f"run {r}: {name}, {bench.new_tokens} tokens...", file=sys.stderr)
            t0 = time.perf_counter()
            with hw.ctx:
                outputs[name] = generate(model, prompt.to(device), bench.new_tokens, temperature=0)
            hardware.sync(device)
            times[name].append(time.perf_counter() - t0)
            expected = (1, bench.prompt_len + bench.new_tokens)
            assert outputs[name].shape == expected, outputs[name].shape
            # the read limit right beside this decode: measured before and after it, the higher
            bandwidths.append(read_bandwidth(device))
            tok_per_s = bench.new_tokens / times[name][-1]
            bytes_per_s = tok_per_s * (weight_bytes_per_token(model) + kv_bytes)
            fractions[name].append(bytes_per_s / max(bandwidths[-2:]))
            if name != "uncached":  # the Linears alone, timed right beside the run they split
                linears[name].append(linears_s_per_token(model, device, repeats=3))
                else_fractions[name].append(1 - linears[name][-1] * tok_per_s)
    result["read_gb_per_s"] = round(statistics.median(bandwidths) / 1e9, 2)
    result["read_gb_per_s_min_max"] = [
        round(min(bandwidths) / 1e9, 2),
        round(max(bandwidths) / 1e9, 2),
    ]
    result["kv_bytes_per_token"] = round(kv_bytes)
    for name, (model, _) in paths.items():
        dt = statistics.median(times[name])
        result[f"{name}_s"] = round(dt, 3)
        result[f"{name}_tok_per_s"] = round(bench.new_tokens / dt, 2)
        if name != "uncached":
            result[f"{name}_weight_bytes_per_token"] = weight_bytes_per_token(model)
            # the fraction of the read limit this path reached
            result[f"{name}_read_fraction"] = round(statistics.median(fractions[name]), 3)
            result[f"{name}_read_fraction_best"] = round(max(fractions[name]), 3)
            # the split of a token's time: the Linears alone, and everything else (each run's
            # fraction against the Linears timed right after it, the median: a shared machine's
            # speed moves between a path's runs)
            result[f"{name}_ms_per_token"] = round(1e3 * dt / bench.new_tokens, 3)
            linears_ms = 1e3 * statistics.median(linears[name])
            result[f"{name}_linears_ms_per_token"] = round(linears_ms, 3)
            result[f"{name}_else_fraction"] = round(statistics.median(else_fractions[name]), 3)
            if bench.profile_tokens:
                with hw.ctx:
                    result[f"{name}_top_ops_ms_per_token"] = top_ops(
                        paths[name][1],
                        model,
                        prompt.to(device),
                        min(bench.profile_tokens, bench.new_tokens),
                    )
    if "cached" in paths and "uncached" in paths:
        result["kv_cache_speedup"] = round(
            result["cached_tok_per_s"] / result["uncached_tok_per_s"], 2
        )
        # whether the two paths picked the same greedy tokens
        result["cached_equals_uncached"] = torch.equal(outputs["cached"], outputs["uncached"])
    # (ratio key, path, reference, differing key): int8, int4 and generate against sample.py's fp32
    # path, each <path>_loop against its <path>, and with --baseline each path against the other
    # checkout's
    comparisons = [(f"{n}_speedup", n, "cached", n) for n in ("int8", "int4", "generate")]
    comparisons += [
        (f"{n}_speedup", n, n.removesuffix("_loop"), n) for n in paths if n.endswith("_loop")
    ]
    comparisons += [(f"{n}_vs_baseline", n, f"{n}_baseline", f"{n}_baseline") for n in paths]
    comparisons += [(f"{n}_compiled_speedup", f"{n}_compiled", n, f"{n}_compiled") for n in paths]
    for ratio_key, name, reference, differing_key in comparisons:
        if name in paths and reference in paths:
            result[ratio_key] = round(
                result[f"{name}_tok_per_s"] / result[f"{reference}_tok_per_s"], 2
            )
            differs = (outputs[name] != outputs[reference])[0, bench.prompt_len :].nonzero()
            # null when every greedy token equals the reference's
            result[f"{differing_key}_first_greedy_token_differing"] = (
                differs[0].item() if len(differs) else None
            )
    result["load_avg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    result["peak_rss_mib"] = round(peak_rss_mib())
    return result


# --------------------------------------------------------------------------------------------------
# Time to target: the user's command, timed whole, scored on the full val split


def config_args(name):
    if name in NAMED_CONFIGS:
        return NAMED_CONFIGS[name]
    if os.path.isfile(name) or os.path.isfile(os.path.join(ROOT, name)):  # train.py runs in ROOT
        return [name]
    raise UserError(
        f"unknown config {name!r}: use {', '.join(NAMED_CONFIGS)}, frontier "
        "or a path to a config file"
    )


def run_train(args, out_dir, inductor_cache="cold"):
    """Run train.py with args into out_dir; (wall seconds, full-val-split loss of its checkpoint,
    its choices). inductor_cache="cold": the run compiles (if it does) into an empty cache."""
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        *args,
        f"--out_dir={out_dir}",
        "--progress=False",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    if inductor_cache == "cold":
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(out_dir, "inductor-cache")
    t0 = time.perf_counter()
    trained = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if trained.returncode != 0:
        raise UserError(f"{' '.join(args)} failed:\n{trained.stderr.strip()[-2000:]}")
    scored = subprocess.run(
        [*cmd, "--eval_only=True"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if scored.returncode != 0:
        raise UserError(f"evaluating {' '.join(args)} failed:\n{scored.stderr.strip()[-2000:]}")
    with open(os.path.join(out_dir, "eval.json")) as f:
        loss = json.load(f)["loss"]
    with open(os.path.join(out_dir, "choices.json")) as f:
        return wall, loss, json.load(f)


def bench_time_to_target(bench, train_argv):
    names = [
        config
        for n in bench.configs.split(",")
        if n
        for config in ([*FRONTIER, "nanogpt"] if n == "frontier" else [n])
    ]
    if bench.inductor_cache not in ("cold", "warm"):
        raise UserError(f"inductor_cache={bench.inductor_cache!r} must be cold or warm")
    runs = {name: [] for name in names}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-ttt-") as tmp:
        for r in range(bench.repeats):
            for name in names:  # interleaved, so a burst of background load hits every config alike
                wall, loss, choices = run_train(
                    [*config_args(name), *train_argv],
                    os.path.join(tmp, f"{name.replace('/', '_')}-{r}"),
                    bench.inductor_cache,
                )
                print(
                    f"{name} run {r}: {wall:.1f} s wall, full val loss {loss:.4f}", file=sys.stderr
                )
                runs[name].append(
                    {"wall_s": round(wall, 2), "val_loss": round(loss, 4), "choices": choices}
                )
    result = {
        "target": bench.target,
        "definition": (
            "wall time of `python train.py <config>` (all of it), "
            "scored untimed on the full val split; null when its loss is above target"
        ),
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "inductor_cache": bench.inductor_cache,
        "configs": {},
    }
    for name, rs in runs.items():
        reached = all(r["val_loss"] <= bench.target for r in rs)
        median = statistics.median(r["wall_s"] for r in rs)
        result["configs"][name] = {
            "args": " ".join(config_args(name)),
            "runs": rs,
            "median_wall_s": median,
            "time_to_target_s": median if reached else None,
        }
    if len(names) == 2:
        a, b = (result["configs"][n] for n in names)
        result[f"speedup_{names[1]}_vs_{names[0]}"] = round(
            a["median_wall_s"] / b["median_wall_s"], 2
        )
    if bench.plot:
        plot_frontier(result["configs"], bench.target, bench.plot)
    return result


def plot_frontier(configs, target, path):
    """Full-val loss against wall minutes, one labelled point per config (its median run), the
    speedrun configs joined by a line, nanoGPT's CPU command apart, and a line at nanoGPT's GPU
    result: docs/speedrun_frontier.png."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    points = sorted(
        (c["median_wall_s"] / 60, statistics.median(r["val_loss"] for r in c["runs"]), name)
        for name, c in configs.items()
    )
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    ours = [p for p in points if p[2] in FRONTIER] or points
    ax.plot([p[0] for p in ours], [p[1] for p in ours], marker="o", label="speedrun configs")
    for minutes, loss, name in points:
        if name == "nanogpt":
            ax.plot([minutes], [loss], marker="s", color="black", linestyle="none")
            label = f"nanoGPT's CPU command: {loss:.3f}"
        else:
            label = f"{os.path.basename(name).removesuffix('.py')}: {loss:.3f}"
        ax.annotate(label, (minutes, loss), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.axhline(target, color="gray", linestyle="--", linewidth=1, label=f"target {target}")
    ax.axhline(
        NANOGPT_GPU_VAL_LOSS,
        color="tab:red",
        linestyle=":",
        linewidth=1,
        label=f"nanoGPT on an A100 ({NANOGPT_GPU_VAL_LOSS})",
    )
    losses = [p[1] for p in points] + [target, NANOGPT_GPU_VAL_LOSS]
    ax.set_ylim(min(losses) - 0.03, max(losses) + 0.03)
    ax.set_xlim(0, max(p[0] for p in points) * 1.3)  # room for the last label
    ax.set_xlabel("wall time of python train.py <config> (minutes)")
    ax.set_ylabel("loss on the whole val split")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------------


def bench_all(bench, train_argv):
    """Each part in its own process, so each peak RSS is its own."""

    def sub(*args):
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise UserError(f"bench.py {' '.join(args)} failed:\n{out.stderr.strip()[-2000:]}")
        return json.loads(out.stdout)

    flags = [f"--{f.name}={getattr(bench, f.name)}" for f in fields(bench)]
    return {
        "train_ref": sub("train", *REFERENCE, *flags),
        "train_fast": sub("train", *NAMED_CONFIGS["fast"], *flags),
        "train_gpt2_124m_block1024_batch1": sub(
            "train", "--batch_size=1", "--gradient_accumulation_steps=1", "--iters=2", "--warmup=1"
        ),
        "sample": sub("sample", *flags),
        "time_to_target": sub("time_to_target", *flags),
    }


COMMANDS = {
    "train": bench_train,
    "sample": bench_sample,
    "time_to_target": bench_time_to_target,
    "all": bench_all,
}


def main():
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    if argv[0] not in COMMANDS:
        raise ConfigError(f"unknown subcommand {argv[0]!r}: use one of {', '.join(COMMANDS)}")
    bench, train_argv = split_args(argv[1:])
    print(json.dumps(COMMANDS[argv[0]](bench, train_argv), indent=1))


if __name__ == "__main__":
    run_cli(main)
