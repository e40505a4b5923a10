"""gptkit/decode_step.py: the decode step over a static KV cache computes model.py's logits bit for
bit (fp32 and the int8/int4 kernels, every model switch), so its greedy and sampled tokens are
model.generate's; sample.py runs it."""

import pytest
import torch
from conftest import SWITCHES, VOCAB, tiny_gpt

from gptkit.decode_step import DecodeStep, captured, generate, generate_stream
from gptkit.decoding import prepare_for_decoding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prepared(switch, quantize, seed=0):
    return prepare_for_decoding(tiny_gpt(seed, **SWITCHES[switch]).eval(), quantize)


@pytest.mark.parametrize("quantize", ["none", "int8", "int4"])
@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_step_computes_model_pys_cached_logits_bit_for_bit(switch, quantize):
    model = prepared(switch, quantize)
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    kv_caches, step = model.new_kv_caches(), DecodeStep(model, batch_size=2)
    assert torch.equal(step.prefill(idx[:, :3]), model.next_token_logits(idx[:, :3], kv_caches))
    for t in range(3, 12):  # up to a full context (block_size 12)
        expected = model.next_token_logits(idx[:, : t + 1], kv_caches)
        assert torch.equal(step.step(idx[:, t : t + 1]), expected), t
    # the static cache holds what model.py's KVCache holds
    for static, cache in zip(step.caches, kv_caches, strict=True):
        assert static.length == cache.length == 12
        assert torch.equal(static.k, cache.k) and torch.equal(static.v, cache.v)


@pytest.mark.parametrize("quantize", ["none", "int8", "int4"])
@pytest.mark.parametrize("switch", ["gpt2", "all"])
def test_generate_gives_model_generates_tokens_past_the_context(switch, quantize):
    model = prepared(switch, quantize)
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(4))
    # 20 new tokens: past block_size 12, where both recompute the last 12 tokens every step
    assert torch.equal(generate(model, prompt, 20, temperature=0), model.generate(prompt, 20, 0))

    def sampled(fn):
        generators = [torch.Generator().manual_seed(s) for s in (7, 8)]
        return fn(prompt, 20, temperature=1.0, top_k=10, top_p=0.9, generator=generators)

    expected = sampled(model.generate)
    assert torch.equal(sampled(lambda *a, **k: generate(model, *a, **k)), expected)


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_the_static_step_a_gpu_captures_computes_model_pys_logits(switch):
    # what a GPU runs under --compile=True, here eager on a CPU: a tensor position, keys written by
    # index_copy_, the whole cache attended with the future masked (its sums run over more zeros,
    # so close, not bit for bit)
    model = tiny_gpt(0, **SWITCHES[switch]).eval()
    idx = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    kv_caches, step = model.new_kv_caches(), DecodeStep(model, 2, max_length=12, static=True)
    torch.testing.assert_close(
        step.prefill(idx[:, :3]), model.next_token_logits(idx[:, :3], kv_caches)
    )
    for t in range(3, 12):
        expected = model.next_token_logits(idx[:, : t + 1], kv_caches)
        torch.testing.assert_close(step.step(idx[:, t : t + 1]), expected)


def test_the_captured_step_is_one_graph_for_every_position():
    # fullgraph=True raises on any graph break; dynamic=False would recompile for a new shape, so
    # one graph across 8 positions means every token replays the same capture
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = tiny_gpt(0, **SWITCHES["all"]).eval()
    idx = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(5))
    eager, traced = (DecodeStep(model, 1, max_length=12, static=True) for _ in range(2))
    forward = captured(traced, backend="eager")
    assert torch.equal(eager.prefill(idx[:, :4]), traced.prefill(idx[:, :4]))
    for t in range(4, 12):
        token = idx[:, t : t + 1]
        assert torch.equal(traced.step(token, forward), eager.step(token)), t
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert torch.equal(traced.caches[0].kv, eager.caches[0].kv)


def test_compile_leaves_a_cpu_on_the_eager_step():
    model = prepared("gpt2", "int8")
    prompt = torch.randint(0, VOCAB, (1, 4), generator=torch.Generator().manual_seed(6))
    expected = model.generate(prompt, 6, temperature=0)
    assert torch.equal(generate(model, prompt, 6, temperature=0, compile=True), expected)


def test_the_cache_holds_the_sample_not_the_whole_context(monkeypatch):
    from gptkit import decode_step

    decoders = []

    class Recorded(DecodeStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            decoders.append(self)

    monkeypatch.setattr(decode_step, "DecodeStep", Recorded)
    model = prepared("gpt2", "none")
    out = generate(model, torch.tensor([[1, 2, 3]]), 4, temperature=0)
    assert torch.equal(out, model.generate(torch.tensor([[1, 2, 3]]), 4, temperature=0))
    # 3 prompt tokens + 4 new ones, not block_size 12
    assert [d.caches[0].kv.shape[3] for d in decoders] == [7]


def test_a_step_allocates_no_cache_and_writes_its_token_in_place():
    model = prepared("gpt2", "none")
    step = DecodeStep(model, batch_size=1)
    pointers = [(c.k.data_ptr(), c.v.data_ptr()) for c in step.caches]
    step.prefill(torch.tensor([[1, 2, 3]]))
    for token in range(4):
        step.step(torch.tensor([[token]]))
    assert step.length == 7
    assert [(c.k.data_ptr(), c.v.data_ptr()) for c in step.caches] == pointers


def test_generate_stream_checks_its_settings_and_stops_when_asked():
    model = prepared("gpt2", "none")
    with pytest.raises(ValueError, match="temperature=-1"):
        next(generate_stream(model, torch.tensor([[1]]), 3, temperature=-1))
    assert list(generate_stream(model, torch.tensor([[1]]), 0)) == []


def test_sample_py_samples_with_the_decode_step(monkeypatch):
    import sample
    from gptkit import decode_step
    from gptkit.tokenizer import CharTokenizer

    model = prepared("gpt2", "int8")
    calls = []
    real = decode_step.generate_stream

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_step, "generate_stream", spy)
    cfg = sample.SampleConfig(max_new_tokens=8, temperature=0.0)
    chars = "".join(chr(ord("a") + i) for i in range(VOCAB))
    texts = sample.generate_texts(
        model, CharTokenizer(chars), [1, 2], cfg, [torch.Generator()], torch.no_grad()
    )
    assert calls == [model]
    greedy = model.generate(torch.tensor([[1, 2]]), 8, temperature=0)[0, 2:].tolist()
    assert texts[0][1] == greedy
