"""Interventions from Python give the CLI's tokens and routing, for every method, on the
bundled models and on fixtures with shared experts and a dense residual."""

import numpy as np
import pytest
from safetensors.numpy import load_file

import routelab
from conftest import FIXTURES, cli

CASES = [
    ("tiny-moe", "fn main() {", ["layers.2.experts.5:drop"]),
    ("tiny-moe", "fn main() {", ["layers.0.experts.1:reroute", "layers.3.experts.4:reroute"]),
    ("tiny-moe", "The river", ["layers.1.attn.head.3:zero", "layers.4.attn.head.0:scale(0.5)"]),
    ("tiny-dense", "The passkey is", ["layers.0.attn.head.2:uniform", "layers.2.attn.head.1:mean"]),
    (FIXTURES / "qwen2_moe", "hello world", ["layers.0.shared_expert:mute"]),
    (FIXTURES / "arctic", "hello world", ["layers.1.dense_residual:mute", "layers.0.experts.2:drop"]),
]


@pytest.mark.parametrize("model,prompt,interventions", CASES, ids=[" ".join(c[2]) for c in CASES])
def test_interventions_give_the_cli_run(model, prompt, interventions, tmp_path):
    path = tmp_path / "run.safetensors"
    flags = [x for i in interventions for x in ("--intervene", i)]
    cli("run", "-m", model, "-p", prompt, "--max-new-tokens", 10, "--ignore-eos", *flags, "--trace", path)
    session = routelab.load(model, progress=False)
    trace = session.generate(prompt, max_new_tokens=10, stop_at_eos=False, interventions=interventions, progress=False)
    reference = load_file(str(path))
    assert np.array_equal(trace.tokens, reference["tokens"])
    for name, want in reference.items():
        assert np.array_equal(trace[name], want), name
    assert trace.metadata["interventions"] == routelab.open_trace(path).metadata["interventions"]
    # The run records what it applied, in the form it was given.
    assert [i.replace("scale(0.5)", "scale=0.5") for i in trace.interventions] == [
        i.replace("scale(0.5)", "scale=0.5") for i in interventions
    ]


def test_an_intervention_changes_the_run(moe):
    plain = moe.generate("fn main() {", max_new_tokens=10, progress=False)
    layer = 2
    experts = plain.router_experts(layer)
    top = int(np.bincount(experts.ravel(), minlength=8).argmax())
    masked = moe.generate("fn main() {", max_new_tokens=10, interventions=[f"layers.{layer}.experts.{top}:reroute"], progress=False)
    assert top not in masked.router_experts(layer)
    assert top in experts


def test_routing_replay_reproduces_a_run_and_swaps_layers(moe, tmp_path):
    a = moe.generate("Once upon a time", max_new_tokens=12, capture="all", progress=False)
    again = moe.generate("Once upon a time", max_new_tokens=12, capture="all", replay=a, progress=False)
    assert again.tokens.tolist() == a.tokens.tolist()
    for name, value in a.tensors().items():
        assert np.array_equal(again[name], value), name
    # Another prompt with a's routing in layers 2-3: those select a's experts, 0-1 their own.
    plain = moe.forward("fn main() {", capture="router")
    swapped = moe.forward("fn main() {", capture="router", replay=a, replay_layers=[2, 3])
    n = len(plain)
    for l in (0, 1):
        assert np.array_equal(swapped.router_experts(l), plain.router_experts(l))
    for l in (2, 3):
        assert np.array_equal(swapped.router_experts(l), a.router_experts(l)[:n])
    # As the CLI does it.
    a.save(tmp_path / "a.safetensors")
    out = tmp_path / "s.safetensors"
    cli("forward", "-m", "tiny-moe", "--prompt", "fn main() {", "--capture", "router", "--replay-routing", tmp_path / "a.safetensors",
        "--replay-layers", "2-3", "--out", out)
    cli_trace = routelab.open_trace(out)
    for name, value in swapped.tensors().items():
        assert np.array_equal(cli_trace[name], value), name
    assert swapped.metadata["replay"]["layers"] == [2, 3]
    with pytest.raises(routelab.InvalidArgument, match="no routing for layer 9"):
        moe.forward("x", replay=a, replay_layers=[9])

