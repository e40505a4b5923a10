r"""
Generate text from a trained checkpoint, or from GPT-2's weights.

    python sample.py --out_dir=out-shakespeare-char --start="ROMEO:" --num_samples=2 \
        --max_new_tokens=200
    python sample.py --init_from=gpt2 --start="FILE:prompt.txt" --top_p=0.9 --stop="\n\n"
    python sample.py --out_dir=out-shakespeare-char --interactive   # type a prompt, Ctrl-D to quit
    python sample.py --init_from=path/to/hf_gpt2_dir --stream --output=samples.jsonl

The tokenizer is the one the model was trained with (out_dir/meta.json), or GPT-2's for GPT-2
weights. A nanoGPT out_dir has none: its dataset's meta.pkl is read (--meta_pkl=PATH, or found where
nanoGPT's sample.py looks), else GPT-2's.

Same seed and settings give the same text, streamed (--stream, the default on a terminal) or not.
--num_samples=N runs the N samples as one batch (the weights are read once per token for all of
them); sample i draws from its own generator seeded seed + i, so it is the same text as when sampled
alone. Only a single sample is streamed; a batch's samples are printed when the batch is done.

--quantize=int8 samples with int8 weights, --quantize=int4 with 4-bit ones
(decoding.prepare_for_decoding): fewer bytes to stream per token, more tokens/s on a CPU
(docs/performance.md). After the prompt each token runs gptkit.decode_step's step over a static KV
cache: model.py's numbers with fewer ops around the kernels. --compile=True (nanoGPT's key) captures
that step as one CUDA graph on a GPU; a CPU keeps it eager (compiled, it measured no faster there).

--output appends one JSON object per sample: prompt, text, tokens (the new token ids of text: see
text_tokens), settings, decoding (the kernel the model's Linears ran, read from the prepared model)
and tokens_per_s.
"""

import json
import sys
import time
from dataclasses import asdict, dataclass, replace

import torch

from gptkit import decode_step, hardware
from gptkit.base import UserError, checked
from gptkit.checkpoint import load_model
from gptkit.configurator import parse_args, run_cli
from gptkit.decoding import (
    Int4Linear,
    Int8Linear,
    PackedLinear,
    check_quantize,
    prepare_for_decoding,
)
from model import check_sampling


@dataclass(frozen=True)
class SampleConfig:
    # "resume" (from out_dir) | "gpt2" | "gpt2-medium" | ... | a Hugging Face GPT-2 directory
    init_from: str = "resume"
    out_dir: str = "out"
    start: str = "\n"  # the prompt, or "FILE:path" to read it from a file
    num_samples: int = 10
    max_new_tokens: int = 500
    temperature: float = 0.8  # 1.0 = the model's distribution, < 1 more conservative, 0 = greedy
    top_k: int = 200  # keep only the k most likely tokens
    # nucleus sampling: the smallest set of tokens holding this much probability; 1.0 = off
    top_p: float = 1.0
    # end a sample when this string appears (it is not printed); "\\n" means a newline
    stop: str = ""
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    stream: str = "auto"  # print tokens as they come: "auto" (on a terminal), "true" or "false"
    output: str = ""  # also write one JSON object per sample to this .jsonl file
    interactive: bool = False  # read prompts from stdin until Ctrl-D
    use_cache: bool = True  # the KV cache; False recomputes the whole context every token
    # "none" | "int8" | "int4": int8 or 4-bit weights for every Linear and the LM head, for speed
    quantize: str = "none"
    # a nanoGPT out_dir's tokenizer, its dataset's meta.pkl ("": where nanoGPT's sample.py looks)
    meta_pkl: str = ""
    # nanoGPT's key: on a GPU, capture the decode step as one CUDA graph (gptkit/decode_step.py);
    # a CPU keeps the eager step (compiled, it measured no faster: docs/performance.md)
    compile: bool = False


def validate(cfg):
    checked(check_sampling, cfg.temperature, cfg.top_k, cfg.top_p, flag="--")
    if cfg.num_samples < 1 or cfg.max_new_tokens < 0:
        raise UserError("--num_samples must be >= 1 and --max_new_tokens >= 0")
    if cfg.stream.lower() not in ("auto", "true", "false"):
        raise UserError(f"--stream={cfg.stream} must be auto, true or false")
    check_quantize(cfg.quantize, hardware.kind(hardware.pick_device(cfg.device)))
    if cfg.dtype not in hardware.DTYPES:
        raise UserError(f"--dtype={cfg.dtype} must be {', '.join(hardware.DTYPES)}")


def read_prompt(start):
    if start.startswith("FILE:"):
        path = start[len("FILE:") :]
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise UserError(f"cannot read the prompt file {path}: {e.strerror}") from None
    return start


def unescape(text):
    """`\\n` and `\\t` typed on a command line or at the prompt stand for a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def encode_prompt(tokenizer, prompt, block_size):
    ids = tokenizer.encode(prompt)
    if not ids:
        if tokenizer.eot is None:
            raise UserError("the prompt is empty; give --start=TEXT")
        ids = [tokenizer.eot]  # GPT-2 style: an empty prompt starts a new document
    if len(ids) > block_size:
        print(
            f"warning: the prompt has {len(ids)} tokens, more than the context of {block_size}; "
            f"keeping the last {block_size}",
            file=sys.stderr,
        )
        ids = ids[-block_size:]
    return ids


def generate_texts(model, tokenizer, ids, cfg, generators, ctx, on_text=None):
    """
    [(text, new token ids)], one per generator: len(generators) continuations of ids, run as one
    batch. Each row ends at its own stop string; with one generator, on_text gets text pieces as
    they are decided.
    """
    assert on_text is None or len(generators) == 1, "only a single sample is streamed"
    device = next(model.parameters()).device
    idx = torch.tensor([ids] * len(generators), dtype=torch.long, device=device)  # (N, T)
    new_ids, done, shown = [[] for _ in generators], [False] * len(generators), ""
    settings = dict(
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p if cfg.top_p < 1 else None,
        generator=list(generators),
    )
    # a GPT's KV cache: gptkit.decode_step's static one, the same tokens as model.generate_stream's;
    # the GRU carries its own state (recurrent.py)
    if cfg.use_cache and model.has_attention:
        stream = decode_step.generate_stream(
            model, idx, cfg.max_new_tokens, **settings, compile=cfg.compile
        )
    else:
        stream = model.generate_stream(idx, cfg.max_new_tokens, use_cache=cfg.use_cache, **settings)
    with ctx:
        for tokens in stream:  # (N, 1)
            for row, token in enumerate(tokens[:, 0].tolist()):
                if done[row]:
                    continue
                new_ids[row].append(token)
                if not cfg.stop and not on_text:
                    continue  # nothing to check: decode once at the end
                text = tokenizer.decode(new_ids[row])
                if cfg.stop and cfg.stop in text:
                    done[row] = True
                # a text ending in U+FFFD waits for the rest of a split UTF-8 character
                elif on_text and not text.endswith("\ufffd"):
                    # hold back a possible start of the stop string, so it is never printed
                    safe = len(text) - max(
                        (k for k in range(len(cfg.stop)) if k and text.endswith(cfg.stop[:k])),
                        default=0,
                    )
                    on_text(text[len(shown) : safe])
                    shown = text[:safe]
            if all(done):
                break
    results = []
    for ids_row in new_ids:
        text = tokenizer.decode(ids_row)
        if cfg.stop and cfg.stop in text:
            text = text[: text.index(cfg.stop)]
        results.append((text, ids_row))
    if on_text:
        on_text(results[0][0][len(shown) :])
    return results


def text_tokens(tokenizer, ids, text):
    """
    The new token ids of a sample's text (its --output "tokens"): all of them when no stop string
    cut the text; when one did, the fewest leading ids whose decoding starts with the text, so the
    stop string's own ids are left out (a single id holding both the end of the text and the start
    of the stop string is kept).
    """
    if tokenizer.decode(ids) == text:
        return ids
    n = len(ids)
    while n > 0 and tokenizer.decode(ids[: n - 1]).startswith(text):
        n -= 1
    return ids[:n]


def decoding_path(model):
    """What the model's Linears are once prepared for decoding, read from its modules (not from the
    flags that asked for it): "Int8Linear", "Int4Linear", "PackedLinear(bfloat16)",
    "PackedLinear(float32)", or "Linear" (on a GPU, or without oneDNN)."""
    kinds = set()
    for module in model.modules():
        if isinstance(module, PackedLinear):
            kinds.add(f"PackedLinear({str(module.dtype).removeprefix('torch.')})")
        elif isinstance(module, (Int8Linear, Int4Linear, torch.nn.Linear)):
            kinds.add(type(module).__name__)
    return ", ".join(sorted(kinds))


def generate_text(model, tokenizer, ids, cfg, generator, ctx, on_text=None):
    """(text, new token ids): one sample, reporting text pieces to on_text as they are decided."""
    return generate_texts(model, tokenizer, ids, cfg, [generator], ctx, on_text)[0]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # a bare --stream means --stream=true (the key is a string so that its default can be "auto")
    argv = ["--stream=true" if arg == "--stream" else arg for arg in argv]
    cfg = parse_args(SampleConfig(), argv)
    validate(cfg)
    cfg = replace(cfg, stop=unescape(cfg.stop))
    hw = hardware.setup_for_sampling(cfg.device, cfg.dtype)
    model, tokenizer = load_model(cfg.init_from, cfg.out_dir, hw.device, cfg.meta_pkl)
    model = prepare_for_decoding(model, cfg.quantize, getattr(torch, hw.dtype))
    decoding = decoding_path(model)
    if cfg.compile and hardware.kind(hw.device) != "cuda":
        print(f"--compile=True: {hw.device} keeps the eager decode step", file=sys.stderr)
    stream = cfg.stream.lower() == "true" or (cfg.stream.lower() == "auto" and sys.stdout.isatty())
    try:
        output = open(cfg.output, "a", encoding="utf-8") if cfg.output else None
    except OSError as e:
        raise UserError(
            f"cannot open --output={cfg.output} ({e.strerror}); choose another file"
        ) from None

    def emit(piece):
        sys.stdout.write(piece)
        sys.stdout.flush()

    def run(prompt, num_samples, echo):
        """num_samples continuations of prompt on stdout (after the prompt itself when echo)."""
        ids = encode_prompt(tokenizer, prompt, model.config.block_size)
        # sample i has its own generator seeded seed + i: the same text in a batch as alone
        generators = [
            torch.Generator(device=hw.device).manual_seed(cfg.seed + i) for i in range(num_samples)
        ]
        streamed = stream and num_samples == 1
        if streamed and echo:
            emit(prompt)
        t0 = time.perf_counter()
        samples = generate_texts(
            model, tokenizer, ids, cfg, generators, hw.ctx, emit if streamed else None
        )
        seconds = time.perf_counter() - t0
        for text, new_ids in samples:
            # streamed text is already out
            print("" if streamed else (prompt if echo else "") + text)
            print("---------------")
            if output:
                record = {
                    "prompt": prompt,
                    "text": text,
                    "tokens": text_tokens(tokenizer, new_ids, text),
                    "settings": asdict(cfg),
                    "decoding": decoding,
                    "tokens_per_s": len(new_ids) / max(seconds, 1e-9),
                }
                output.write(json.dumps(record) + "\n")
                output.flush()
        n_tokens = sum(len(new_ids) for _, new_ids in samples)
        print(
            f"{n_tokens} tokens in {seconds:.2f} s: {n_tokens / max(seconds, 1e-9):.1f} tokens/s",
            file=sys.stderr,
        )

    try:
        if cfg.interactive:
            # one prompt per line; piped prompts get no ">>> " mixed into the continuations
            while True:
                try:
                    prompt = input(">>> " if sys.stdin.isatty() else "")
                except EOFError:  # Ctrl-D
                    if sys.stdin.isatty():
                        print()
                    break
                try:
                    run(unescape(prompt) or "\n", 1, echo=False)
                except UserError as e:
                    # e.g. a character the model has never seen: say so, ask again
                    print(f"error: {e}", file=sys.stderr)
        else:
            run(read_prompt(cfg.start), cfg.num_samples, echo=True)
    finally:
        if output:
            output.close()


if __name__ == "__main__":
    run_cli(main)
