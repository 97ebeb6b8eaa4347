"""Bad input raises `routelab` exceptions with the message the CLI prints for it; nothing
panics across the boundary."""

import pytest

import routelab
from conftest import cli_error, cli_hint


def test_a_missing_model_is_a_model_error_with_the_cli_message(tmp_path):
    missing = tmp_path / "no-such-model"
    want = cli_error("run", "-m", missing, "-p", "x")
    with pytest.raises(routelab.ModelError) as e:
        routelab.load(missing)
    assert str(e.value) == want
    assert isinstance(e.value, routelab.Error)


def test_a_truncated_checkpoint_is_a_file_error_naming_it(tmp_path):
    import shutil

    from conftest import REPO

    model = tmp_path / "broken"
    shutil.copytree(REPO / "assets" / "models" / "tiny-moe", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    want = cli_error("run", "-m", model, "-p", "x")
    with pytest.raises(routelab.FileError) as e:
        routelab.load(model)
    assert str(e.value) == want
    assert "model.safetensors" in str(e.value)
    # What to do next, as the CLI's `hint:` line says it.
    assert e.value.hint == cli_hint("run", "-m", model, "-p", "x")
    assert "download them again" in e.value.hint


def test_an_unknown_architecture_is_a_model_error(tmp_path):
    import json
    import shutil

    from conftest import REPO

    model = tmp_path / "unknown"
    shutil.copytree(REPO / "assets" / "models" / "tiny-dense", model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "nonesuch"
    (model / "config.json").write_text(json.dumps(config))
    want = cli_error("run", "-m", model, "-p", "x")
    with pytest.raises(routelab.ModelError) as e:
        routelab.load(model)
    assert str(e.value) == want and "nonesuch" in str(e.value)


@pytest.mark.parametrize(
    "intervention",
    ["layers.9.experts.1:drop", "layers.1.experts.99:reroute", "layers.1.experts.1:explode", "experts.1:drop", "layers.0.attn.head.99:zero"],
)
def test_bad_interventions_give_the_cli_message(moe, intervention):
    want = cli_error("run", "-m", "tiny-moe", "-p", "x", "--intervene", intervention)
    with pytest.raises(routelab.InvalidArgument) as e:
        moe.generate("x", interventions=[intervention], progress=False)
    assert str(e.value) == want


@pytest.mark.parametrize("capture", ["layers.*.nonesuch", "probs:x", "span:9-2", "everything"])
def test_bad_capture_specs_give_the_cli_message(moe, capture):
    want = cli_error("run", "-m", "tiny-moe", "-p", "x", "--capture", capture)
    with pytest.raises(routelab.InvalidArgument) as e:
        moe.generate("x", capture=capture, progress=False)
    assert str(e.value) == want


def test_a_prompt_past_the_context_window_is_refused(moe):
    with pytest.raises(routelab.InvalidArgument, match="context window"):
        moe.forward(list(range(100)) * 11)


def test_a_corrupt_trace_is_a_file_error_naming_it(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    want = cli_error("export", bad, "--view", "expert-load", "--out", tmp_path / "x.csv")
    with pytest.raises(routelab.FileError) as e:
        routelab.open_trace(bad)
    assert str(e.value) == want and str(bad) in str(e.value)
    with pytest.raises(routelab.FileError, match="No such file|no such file"):
        routelab.open_trace(tmp_path / "missing.safetensors")


def test_views_that_do_not_fit_the_trace_are_refused(dense):
    trace = dense.generate("The passkey is", max_new_tokens=2, progress=False)
    with pytest.raises(routelab.InvalidArgument, match="no routing"):
        trace.view("expert-load")
    with pytest.raises(routelab.InvalidArgument, match="expected expert-load"):
        trace.view("nonesuch")
    with pytest.raises(routelab.InvalidArgument, match="compares two traces"):
        trace.view("diff-kl")


def test_a_figure_refuses_an_unknown_extension(moe, tmp_path):
    figure = moe.generate("x", max_new_tokens=2, progress=False).view("expert-load")
    with pytest.raises(routelab.InvalidArgument, match=r"\.png, \.svg or \.csv"):
        figure.save(tmp_path / "plot.jpg")


def test_a_device_that_is_not_there_is_refused():
    with pytest.raises(routelab.Error):
        routelab.load("tiny-moe", device="tpu")
