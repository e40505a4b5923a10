"""Every flag a user passes is shown to arrive: sample.py's sampling flags against the model's own
draws (computed here from the checkpoint), --use_cache by what the model is fed, --quantize by the
kernels that ran, --stop with the tokens it reports; attention_maps.py's --text, --query, --format
and --save_dir; bench.py sample's --cache."""

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import SHAKESPEARE, run_script

import attention_maps as attention
import sample
from gptkit.checkpoint import load_model
from gptkit.tokenizer import CharTokenizer, GPT2Tokenizer
from model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT, NEW = "ROMEO:", 20
SEP = "---------------"


@pytest.fixture(scope="module")
def sharp(tmp_path_factory):
    """An out_dir with a char model whose matrices are 4x GPT-2's init: logits far from uniform, so
    greedy picks and top-k sets are clear, not decided by the last bits the decoding kernels round
    differently from the plain model."""
    out = tmp_path_factory.mktemp("sharp")
    tokenizer = CharTokenizer.from_text(SHAKESPEARE.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    config = GPTConfig(
        block_size=32, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32
    )
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0 if p.dim() >= 2 else 1.0)
    torch.save(
        {"model": model.state_dict(), "model_args": asdict(config), "iter_num": 0}, out / "ckpt.pt"
    )
    (out / "meta.json").write_text(json.dumps(tokenizer.meta()))
    return out


def run_sample(cli, out_dir, output, *flags):
    """sample.py in this process: (its --output records, stdout)."""
    args = [
        f"--out_dir={out_dir}",
        "--device=cpu",
        "--dtype=float32",
        f"--start={PROMPT}",
        f"--max_new_tokens={NEW}",
        "--stream=false",
        f"--output={output}",
        *flags,
    ]
    code, stdout, err = cli(sample.main, *args)
    assert code == 0, err
    return [json.loads(line) for line in output.read_text().splitlines()], stdout


def reference(out_dir, num_samples=1, temperature=0.8, top_k=200, top_p=1.0, seed=1337):
    """The new token ids the plain model (no decoding kernels) draws with these settings, sample i
    from seed + i."""
    model, tokenizer = load_model("resume", str(out_dir), "cpu")
    idx = torch.tensor([tokenizer.encode(PROMPT)] * num_samples)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(num_samples)]
    top_p = top_p if top_p < 1 else None
    out = model.generate(
        idx, NEW, temperature=temperature, top_k=top_k, top_p=top_p, generator=generators
    )
    return out[:, idx.shape[1] :].tolist()


SETTINGS = {
    # temperature 0.8, top_k 200 (more than the 65 characters), top_p 1.0, seed 1337
    "defaults": {},
    "temperature": {"temperature": 1.5},
    "top_k": {"temperature": 1.5, "top_k": 3},
    "top_p": {"temperature": 1.5, "top_p": 0.6},
    "seed": {"seed": 5},
}


def test_each_sampling_flag_draws_what_the_model_draws_with_it(sharp, cli, tmp_path):
    texts = {}
    for name, settings in SETTINGS.items():
        flags = [f"--{key}={value}" for key, value in settings.items()]
        records, stdout = run_sample(
            cli, sharp, tmp_path / f"{name}.jsonl", "--num_samples=2", *flags
        )
        assert len(records) == 2 and stdout.count(SEP) == 2  # --num_samples
        assert [r["tokens"] for r in records] == reference(sharp, 2, **settings), name
        texts[name] = [r["text"] for r in records]
    # every flag changed the draws, so none of the equalities above is the defaults' twice
    assert all(texts[name] != texts["defaults"] for name in SETTINGS if name != "defaults")
    assert texts["top_k"] != texts["temperature"] and texts["top_p"] != texts["temperature"]


@pytest.mark.parametrize(
    "flag", ["--temperature=0", "--top_k=1", "--top_p=1e-6", "--temperature=1e-4"]
)
def test_greedy_flags_give_the_models_greedy_continuation(sharp, cli, tmp_path, flag):
    (greedy,) = reference(sharp, temperature=0)
    assert reference(sharp)[0] != greedy  # the default settings draw something else
    records, _ = run_sample(cli, sharp, tmp_path / "out.jsonl", "--num_samples=2", flag)
    # two seeds, one continuation: nothing was drawn
    assert [r["tokens"] for r in records] == [greedy, greedy]


def test_use_cache_false_recomputes_the_context_and_gives_the_same_text(sharp, cli, tmp_path):
    lengths = []

    def record(module, args):
        # the token embedding gets (B, T)
        if isinstance(module, torch.nn.Embedding) and args[0].dim() == 2:
            lengths.append(args[0].shape[1])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        cached, _ = run_sample(
            cli, sharp, tmp_path / "cached.jsonl", "--num_samples=1", "--use_cache=True"
        )
        cached_lengths = lengths.copy()
        lengths.clear()
        uncached, _ = run_sample(
            cli, sharp, tmp_path / "uncached.jsonl", "--num_samples=1", "--use_cache=False"
        )
    finally:
        handle.remove()
    # the prompt once, then one new token per step
    assert cached_lengths == [len(PROMPT)] + [1] * (NEW - 1)
    assert lengths == list(range(len(PROMPT), len(PROMPT) + NEW))  # the whole context every step
    assert uncached[0]["text"] == cached[0]["text"] and uncached[0]["tokens"] == cached[0]["tokens"]


def test_quantize_int8_and_int4_reach_the_model(sharp, cli, tmp_path):
    int8, _ = run_sample(cli, sharp, tmp_path / "int8.jsonl", "--num_samples=1", "--quantize=int8")
    int4, _ = run_sample(cli, sharp, tmp_path / "int4.jsonl", "--num_samples=1", "--quantize=int4")
    plain, _ = run_sample(cli, sharp, tmp_path / "plain.jsonl", "--num_samples=1")
    # read from the prepared model's modules, not from the setting
    assert int8[0]["decoding"] == "Int8Linear"
    assert int4[0]["decoding"] == "Int4Linear"
    assert plain[0]["decoding"] == (
        "PackedLinear(float32)" if torch.backends.mkldnn.is_available() else "Linear"
    )


def test_tokens_are_the_ids_of_the_text_when_a_stop_string_cuts_it(sharp, cli, tmp_path):
    (full,), _ = run_sample(cli, sharp, tmp_path / "full.jsonl", "--num_samples=1", "--seed=3")
    stop = full["text"][8:10]
    (cut,), stdout = run_sample(
        cli, sharp, tmp_path / "cut.jsonl", "--num_samples=1", "--seed=3", f"--stop={stop}"
    )
    text = full["text"][: full["text"].index(stop)]
    assert cut["text"] == text and stdout == f"{PROMPT}{text}\n{SEP}\n"
    chars = json.loads((sharp / "meta.json").read_text())["chars"]
    # the stop string's ids are not in tokens
    assert "".join(chars[i] for i in cut["tokens"]) == text
    assert cut["tokens"] == full["tokens"][: len(text)]


def test_text_tokens_keeps_a_token_that_straddles_the_stop_string():
    tokenizer = GPT2Tokenizer()
    ids = tokenizer.encode(" Hello world")
    assert [tokenizer.decode([i]) for i in ids] == [" Hello", " world"]
    assert sample.text_tokens(tokenizer, ids, " Hello world") == ids  # no stop string: every id
    assert sample.text_tokens(tokenizer, ids, " Hello") == ids[:1]  # --stop=" world"
    # --stop="lo": " Hello" holds both, and is kept
    assert sample.text_tokens(tokenizer, ids, " Hel") == ids[:1]
    assert sample.text_tokens(tokenizer, ids, "") == []  # --stop=" Hel"


# --------------------------------------------------------------------------------------------------
# attention_maps.py and bench.py


def test_attention_query_format_and_save_dir_flags(char_checkpoint, tmp_path, cli):
    out = tmp_path / "run"
    shutil.copytree(char_checkpoint, out)
    # no --save_dir: out_dir. The notes' sentence is cropped to the 32-character context:
    # "was next to the dog, jumped"
    code, stdout, err = cli(attention.main, f"--out_dir={out}", "--format=json", "--query=dog")
    assert code == 0, err
    assert stdout == f"wrote {out / 'attention.json'}\n"
    dog = json.loads((out / "attention.json").read_text())
    # the default query, "jumped"
    code, _, err = cli(attention.main, f"--out_dir={out}", "--format=json")
    jumped = json.loads((out / "attention.json").read_text())
    assert dog["words"] == jumped["words"] == ["was", "next", "to", "the", "dog", ",", "jumped"]
    assert (dog["query"], dog["query_index"]) == ("dog", 4)
    assert (jumped["query"], jumped["query_index"]) == ("jumped", 6)
    assert dog["attention"] == jumped["attention"]  # one forward pass; the query picks its row
    weights = np.array(dog["attention"])
    np.testing.assert_allclose(dog["query_attention"], weights[:, :, 4].mean(1), atol=1e-5)
    np.testing.assert_allclose(jumped["query_attention"], weights[:, :, 6].mean(1), atol=1e-5)
    # png into --save_dir, the query naming the second picture; nothing more in out_dir
    pictures = tmp_path / "pictures"
    code, stdout, err = cli(
        attention.main,
        f"--out_dir={out}",
        f"--save_dir={pictures}",
        "--query=dog",
        "--text=the dog sat",
    )
    assert code == 0, err
    assert stdout.splitlines() == [
        f"wrote {pictures / 'attention_heads.png'}",
        f"wrote {pictures / 'attention_dog.png'}",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["attention.json", "ckpt.pt", "meta.json"]


def test_bench_sample_cache_flag_chooses_the_paths():
    """--cache=off: only the uncached path (the default runs both, tests/test_bench.py), in the
    --dtype given."""
    result = run_script(
        "bench.py",
        "sample",
        "--prompt_len=2",
        "--new_tokens=2",
        "--device=cpu",
        "--dtype=float32",
        "--cache=off",
    )
    out = json.loads(result.stdout)
    assert out["dtype"] == "float32" and (out["prompt_len"], out["new_tokens"]) == (2, 2)
    paths = {key.removesuffix("_tok_per_s") for key in out if key.endswith("_tok_per_s")}
    assert paths == {"uncached"}
    assert not {"kv_cache_speedup", "int8_speedup", "cached_equals_uncached"} & set(out)
