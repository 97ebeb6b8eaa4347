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
