"""GPT-2 weights in and out of model.py, checked against transformers' GPT2LMHeadModel (offline,
random weights)."""

import json
import shutil

import pytest
import torch
from conftest import run_script
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from gptkit.pretrained import from_pretrained, save_pretrained
from model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# small and odd on purpose: 3 heads of 16, a vocabulary and context that are not powers of two
HF_CONFIG = dict(
    n_layer=3, n_head=3, n_embd=48, vocab_size=101, n_positions=37, bos_token_id=0, eos_token_id=0
)


def randomize_(model, seed):
    """Every parameter random, biases and norm gains included, so a tensor loaded wrongly always
    shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, 101, (2, 37), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory):
    """(transformers model, the directory it saved itself to)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = randomize_(GPT2LMHeadModel(GPT2Config(**HF_CONFIG)), seed=1).eval()
    directory = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(directory)
    return model, directory


def our_logits(model, idx):
    return model(idx, targets=idx)[0]


def test_transformers_checkpoint_loads_with_identical_logits(hf_model_dir, idx):
    hf, directory = hf_model_dir
    # transformers 5 keeps the prefix
    assert "transformer.h.0.attn.c_attn.weight" in load_file(directory / "model.safetensors")
    ours = from_pretrained(str(directory)).eval()
    assert ours.config == GPTConfig(
        block_size=37, vocab_size=101, n_layer=3, n_head=3, n_embd=48, dropout=0.0, bias=True
    )
    with torch.no_grad():
        expected = hf(idx).logits
    assert (our_logits(ours, idx) - expected).abs().max().item() < 1e-4
    assert torch.equal(
        ours.generate(idx[:, :5], 8, temperature=0),
        hf.generate(idx[:, :5], max_new_tokens=8, do_sample=False),
    )


@pytest.mark.parametrize("variant", [{}, dict(bias=False), dict(tie_weights=False)])
def test_our_save_pretrained_loads_in_transformers(variant, idx, tmp_path):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    ours = randomize_(
        GPT(GPTConfig(block_size=37, vocab_size=101, n_layer=3, n_head=3, n_embd=48, **variant)),
        seed=2,
    ).eval()
    save_pretrained(ours, tmp_path)
    # no temp files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    hf, info = GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        assert (hf.eval()(idx).logits - our_logits(ours, idx)).abs().max().item() < 1e-4
    # and back again: our own format round-trips exactly
    again = from_pretrained(str(tmp_path)).eval()
    assert_close(our_logits(again, idx), our_logits(ours, idx), rtol=0, atol=0)
    assert again.config.tie_weights == ours.config.tie_weights


def test_hub_name_loads_from_the_hugging_face_cache_offline(hf_model_dir, idx, tmp_path):
    """from_pretrained("gpt2") runs the real huggingface_hub.snapshot_download against a cache laid
    out as the hub does it, holding a tiny model in the hub file's own key naming (no "transformer."
    prefix, mask buffers)."""
    hf, directory = hf_model_dir
    cache = tmp_path / "hub"
    repo = cache / "models--openai-community--gpt2"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copy(directory / "config.json", snapshot / "config.json")
    tensors = {
        k.removeprefix("transformer."): v
        for k, v in load_file(directory / "model.safetensors").items()
    }
    for i in range(3):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(37, 37)).view(1, 1, 37, 37)
    save_file(tensors, snapshot / "model.safetensors")
    save_file({"idx": idx}, tmp_path / "idx.safetensors")
    code = (
        "import sys\n"
        "from safetensors.torch import load_file, save_file\n"
        "from gptkit.base import UserError\n"
        "from gptkit.pretrained import from_pretrained\n"
        "idx = load_file(sys.argv[1])['idx']\n"
        "save_file({'logits': from_pretrained('gpt2').eval()(idx, idx)[0]}, sys.argv[2])\n"
        "try:\n"
        "    from_pretrained('gpt2-medium')\n"
        "except UserError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = run_script(
        "-c", code, tmp_path / "idx.safetensors", tmp_path / "logits.safetensors", env=env
    )
    with torch.no_grad():
        expected = hf(idx).logits
    logits = load_file(tmp_path / "logits.safetensors")["logits"]
    assert (logits - expected).abs().max().item() < 1e-4
    # a model that is not in the cache, offline: a UserError (one line from the CLIs) saying
    # what happened
    assert result.stdout.startswith(
        "UserError cannot get openai-community/gpt2-medium from the Hugging Face hub: "
    )
    assert "HF_HUB_OFFLINE" in result.stdout and len(result.stdout.strip().splitlines()) == 1


def test_dropout_override_and_nothing_else(hf_model_dir):
    _, directory = hf_model_dir
    assert from_pretrained(str(directory), dict(dropout=0.2)).config.dropout == 0.2
    with pytest.raises(ValueError, match="only dropout"):
        from_pretrained(str(directory), dict(n_layer=2))


def test_unknown_name_is_a_value_error():
    with pytest.raises(ValueError, match="neither a directory nor one of gpt2, gpt2-medium"):
        from_pretrained("gpt3")


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_directory_without_a_file_names_it(hf_model_dir, tmp_path, missing):
    _, directory = hf_model_dir
    for name in {"config.json", "model.safetensors"} - {missing}:
        shutil.copy(directory / name, tmp_path / name)
    with pytest.raises(ValueError, match=f"has no {missing}"):
        from_pretrained(str(tmp_path))


def test_checkpoints_we_cannot_compute_are_rejected(hf_model_dir, tmp_path):
    _, directory = hf_model_dir
    shutil.copy(directory / "config.json", tmp_path / "config.json")
    tensors = load_file(directory / "model.safetensors")
    save_file(
        {k: v for k, v in tensors.items() if k != "transformer.ln_f.bias"},
        tmp_path / "model.safetensors",
    )
    with pytest.raises(ValueError, match="no tensor ln_f.bias"):
        from_pretrained(str(tmp_path))
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function='relu' is not supported"):
        from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "n_embd"})
    )
    with pytest.raises(ValueError, match="has no n_embd"):
        from_pretrained(str(tmp_path))


def test_only_the_gpt2_layout_can_be_saved_in_its_format(tmp_path):
    # GPT2LMHeadModel would load them and compute another function
    for switch in (
        dict(pos="rope"),
        dict(logit_softcap=30.0),
        dict(value_embeds=True),
        dict(unet=True),
    ):
        model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8, **switch))
        with pytest.raises(ValueError, match="GPT-2 layout"):
            save_pretrained(model, tmp_path)
        assert not any(tmp_path.iterdir())
