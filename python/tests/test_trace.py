"""Every trace accessor against the CLI's trace of the same run: identical arrays, the same
metadata, and no copies."""

import numpy as np
import pytest
from safetensors.numpy import load_file

import routelab
from conftest import cli

PROMPT = "fn main() {"


@pytest.fixture(scope="module")
def pair(moe, tmp_path_factory):
    """The same run from the CLI (written as a trace) and from Python."""
    path = tmp_path_factory.mktemp("cli") / "run.safetensors"
    cli("run", "-m", "tiny-moe", "-p", PROMPT, "--max-new-tokens", 12, "--capture", "all", "--trace", path)
    trace = moe.generate(PROMPT, max_new_tokens=12, capture="all", progress=False)
    return path, trace


def test_every_tensor_equals_the_cli_trace(pair):
    path, trace = pair
    reference = load_file(str(path))
    tensors = trace.tensors()
    assert sorted(tensors) == sorted(reference)
    for name, want in reference.items():
        got = tensors[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.array_equal(got, want), name


def test_typed_accessors_are_the_hook_tensors(pair):
    path, trace = pair
    reference = load_file(str(path))
    assert np.array_equal(trace.tokens, reference["tokens"])
    assert np.array_equal(trace.logits, reference["logits"])
    assert trace.moe_layers == list(range(6))
    for l in range(trace.num_layers):
        for accessor, hook in [
            (trace.router_logits, "router.logits"),
            (trace.router_experts, "router.experts"),
            (trace.router_weights, "router.weights"),
            (trace.router_margin, "router.margin"),
            (trace.attn_entropy, "attn.entropy"),
            (trace.attn_argmax, "attn.argmax"),
            (trace.attn_sink, "attn.sink"),
            (trace.attn_probs, "attn.probs"),
            (trace.hidden, "hidden"),
            (trace.moe_routed_norm, "moe.routed_norm"),
        ]:
            name = f"layers.{l}.{hook}"
            assert np.array_equal(accessor(l), reference[name]), name
            assert np.array_equal(trace[name], reference[name]), name
    assert trace.router_experts(0).dtype == np.uint32 and trace.router_experts(0).shape == (len(trace), 2)
    assert trace.attn_probs(0).shape == (8, len(trace), len(trace))


def test_metadata_and_text_equal_the_cli_trace(pair):
    path, trace = pair
    from_file = routelab.open_trace(path)
    assert trace.metadata == from_file.metadata
    assert trace.token_text == from_file.token_text == from_file.metadata["token_text"]
    assert trace.generated_from == from_file.generated_from == len(trace) - 12
    assert trace.metadata["format"] == "routelab-trace/2"
    assert trace.metadata["model"] == "tiny-moe" and trace.metadata["prompt"] == PROMPT
    assert trace.stop == "max tokens" and from_file.stop is None
    # The run's own text is the decoded generation; a file's is its tokens' texts joined.
    assert "".join(trace.token_text[trace.generated_from :]) == from_file.text
    assert trace.text.strip() and from_file.text.strip()


def test_a_saved_trace_reads_back_identical(pair, tmp_path):
    _, trace = pair
    trace.save(tmp_path / "again.safetensors")
    back = routelab.open_trace(tmp_path / "again.safetensors")
    assert back.metadata == trace.metadata
    for name, a in trace.tensors().items():
        assert np.array_equal(back[name], a), name
    # And safetensors reads what Python wrote.
    assert sorted(load_file(str(tmp_path / "again.safetensors"))) == sorted(trace.names())


def test_arrays_are_read_only_views_of_the_trace(pair):
    _, trace = pair
    a, b = trace.router_logits(3), trace.router_logits(3)
    # Two calls see the same memory: neither copied it.
    assert np.shares_memory(a, b)
    assert not a.flags.writeable and not a.flags.owndata
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    with pytest.raises(ValueError):
        a.setflags(write=True)
    # The arrays keep the trace alive.
    experts = routelab.open_trace(pair[0]).router_experts(0)
    import gc

    gc.collect()
    assert np.array_equal(experts, trace.router_experts(0))


def test_forward_on_token_ids_equals_cli_forward(moe, tmp_path):
    ids = moe.encode("The quick brown fox")
    path = tmp_path / "fwd.safetensors"
    cli("forward", "-m", "tiny-moe", "--tokens", ",".join(map(str, ids)), "--capture", "router,hidden:2", "--out", path)
    trace = moe.forward(ids, capture="router,hidden:2")
    reference = load_file(str(path))
    assert sorted(trace.names()) == sorted(reference)
    for name, want in reference.items():
        assert np.array_equal(trace[name], want), name
    # A prompt string tokenises as the ids.
    assert np.array_equal(moe.forward("The quick brown fox", capture="none").tokens, np.asarray(ids, dtype=np.uint32))


def test_a_missing_tensor_is_a_key_error_naming_the_capture(pair):
    _, trace = pair
    plain = routelab.open_trace(pair[0])
    with pytest.raises(KeyError, match="not in this trace"):
        trace["layers.2.attn.span"]
    with pytest.raises(KeyError, match="6 layers"):
        plain.hidden(6)
    with pytest.raises(routelab.InvalidArgument):
        trace["layers.x.hidden"]


def test_sampled_generation_equals_the_cli(moe, tmp_path):
    path = tmp_path / "sampled.safetensors"
    args = ["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]
    cli("run", "-m", "tiny-moe", "-p", PROMPT, "--max-new-tokens", 16, *args, "--trace", path)
    trace = moe.generate(PROMPT, max_new_tokens=16, temperature=0.8, top_p=0.9, seed=7, progress=False)
    assert np.array_equal(trace.tokens, load_file(str(path))["tokens"])
