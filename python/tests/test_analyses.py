"""The analyses and views from Python against the CLI's files of the same work: identical
tables, figures that render, records and DataFrames that hold the table."""

import numpy as np
import pytest

import routelab
from conftest import cli

NEEDLE = dict(lengths=[256], depths=[0.0, 1.0], per_cell=1, seed=3)
NEEDLE_ARGS = ["--lengths", "256", "--depths", "0,1", "--per-cell", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def scan(dense):
    return dense.scan_retrieval(mode="teacher-forced", **NEEDLE, progress=False)


def test_retrieval_scan_equals_the_cli(scan, tmp_path):
    out = tmp_path / "heads.csv"
    cli("scan", "retrieval", "-m", "tiny-dense", *NEEDLE_ARGS, "--mode", "teacher-forced", "--out", out)
    assert scan.figure.csv() == out.read_text()
    assert len(scan.trials) == 2 and not scan.incomplete
    # The scores, recomputed from the trials' hits: the mean share of answer positions copied.
    hits = np.mean([np.asarray(t["hits"]).reshape(scan.layers, scan.num_heads) / t["answer_len"] for t in scan.trials], axis=0)
    assert np.allclose(scan.scores, hits, atol=1e-6)
    table = {(r["layer"], r["head"]): r["retrieval_score"] for r in scan.records}
    assert [(l, h) for l, h, _ in scan.heads()] == [(l, h) for (l, h), s in sorted(table.items(), key=lambda x: (-x[1], x[0])) if s > 0.1]


def test_ablation_equals_the_cli(dense, scan, tmp_path):
    heads = tmp_path / "heads.csv"
    scan.figure.save(heads)
    out = tmp_path / "ablation"
    cli("analyze", "ablation", "-m", "tiny-dense", "--heads", heads, "--top", 3, "--draws", 2, *NEEDLE_ARGS, "--out", out)
    from_scan = dense.ablation(scan, top=3, draws=2, **NEEDLE, progress=False)
    from_csv = dense.ablation(heads, top=3, draws=2, **NEEDLE, progress=False)
    assert from_scan.figure.csv() == from_csv.figure.csv() == (out / "retrieval_ablation.csv").read_text()
    assert 0.0 <= from_scan.baseline <= 1.0 and len(from_scan.random_draws) == 2


def test_heads_experts_equals_the_cli(moe, tmp_path):
    # tiny-moe has few retrieval heads: name them, as the CLI's --heads does.
    heads = [(l, h) for l in range(moe.info["layers"]) for h in range(moe.info["heads"])]
    out = tmp_path / "hx"
    cli("analyze", "heads-experts", "-m", "tiny-moe", "--heads", "all", "--mode", "teacher-forced", *NEEDLE_ARGS, "--out", out)
    result = moe.heads_experts(heads, mode="teacher-forced", **NEEDLE, progress=False)
    assert result.figure.csv() == (out / "heads_experts.csv").read_text()
    assert moe.heads_experts("all", mode="teacher-forced", **NEEDLE, progress=False).figure.csv() == result.figure.csv()
    # The table's counts hold the report's: each layer's selections at copy steps sum to k per step.
    k = moe.info["top_k"]
    for layer, experts in result.layers.items():
        assert sum(e["at_copy"] for e in experts) == k * result.copy_positions, layer
        assert sum(e["elsewhere"] for e in experts) == k * (result.positions - result.copy_positions), layer
    # Teacher-forced: one decoding step per answer token of each trial.
    assert result.positions == sum(t["answer_len"] for t in result.scan["trials"])
    assert result.copy_positions > 0, "the comparison needs copy steps"


def test_specialization_equals_the_cli(moe, tmp_path):
    corpus = tmp_path / "corpus"
    texts = {
        "code": ["fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }", "impl Foo for Bar { fn go(&self) -> u32 { 7 } }"],
        "prose": ["The river ran quietly past the old mill at dawn.", "She wrote letters every evening to her brother."],
    }
    for domain, docs in texts.items():
        (corpus / domain).mkdir(parents=True)
        for i, d in enumerate(docs):
            (corpus / domain / f"{i}.txt").write_text(d * 4)
    out = tmp_path / "spec"
    cli("analyze", "specialization", "-m", "tiny-moe", "--corpus", corpus, "--out", out, "--chunk-tokens", 64)
    result = moe.specialization(corpus, chunk_tokens=64, progress=False)
    written = sorted(p.stem for p in out.glob("*.csv"))
    assert sorted(result.results) == written
    for stem, item in result.results.items():
        assert item.csv() == (out / f"{stem}.csv").read_text(), stem
    import json

    assert result.report == json.loads((out / "report.json").read_text())
    assert result.summary.png()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(moe, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    args = ["-m", "tiny-moe", "-p", "fn main() {", "--max-new-tokens", 12, "--capture", "default,logits"]
    cli("run", *args, "--trace", d / "a.safetensors")
    cli("run", *args, "--intervene", "layers.2.experts.3:reroute", "--trace", d / "b.safetensors")
    return d, routelab.open_trace(d / "a.safetensors"), routelab.open_trace(d / "b.safetensors")


@pytest.mark.parametrize("view", ["expert-load", "routing", "heads", "coactivation", "router-entropy", "contributions"])
def test_trace_views_equal_cli_export(runs, view):
    d, a, _ = runs
    out = d / f"{view}.csv"
    cli("export", d / "a.safetensors", "--view", view, "--out", out)
    figure = a.view(view)
    assert figure.csv() == out.read_text()
    assert figure.png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.svg().lstrip().startswith("<svg")
    assert figure.title


def test_the_margin_view_equals_the_cli_and_holds_the_captured_margins(tmp_path):
    trace = tmp_path / "m.safetensors"
    cli("run", "-m", "tiny-moe", "-p", "Once upon a time", "--max-new-tokens", 8, "--capture", "router,margin", "--trace", trace)
    out = tmp_path / "margin.csv"
    cli("export", trace, "--view", "margin", "--out", out)
    t = routelab.open_trace(trace)
    figure = t.view("margin")
    assert figure.csv() == out.read_text()
    for r in figure.records:
        assert r["margin"] == pytest.approx(float(t.router_margin(r["layer"])[r["position"]]), rel=1e-5)


def test_diff_views_and_numbers_equal_the_cli(runs):
    d, a, b = runs
    for view in ["diff-routing", "diff-kl"]:
        out = d / f"{view}.csv"
        cli("export", d / "a.safetensors", "--view", view, "--against", d / "b.safetensors", "--out", out)
        assert a.view(view, against=b).csv() == out.read_text()
    result = routelab.diff(a, b)
    assert sorted(result.figures) == ["diff-kl", "diff-routing"]
    # Independent check: the flips from the two traces' expert sets.
    for l, flips in result.routing_flips.items():
        n = min(len(a), len(b))
        want = [set(a.router_experts(l)[p]) != set(b.router_experts(l)[p]) for p in range(n)]
        assert list(flips) == want
    assert result.routing_flips[2].any()


def test_compare_is_teacher_forced_on_the_first_run(moe, runs):
    _, a, b = runs
    result = moe.compare(a, b, progress=False)
    kl = result.kl_teacher_forced
    assert len(kl) == len(a) and np.all(kl >= -1e-9) and kl.max() > 0
    # Teacher-forced, the KL at each position is that of a's own context: recomputed here from
    # a forward pass over a's tokens with and without b's interventions.
    plain = moe.forward(a.tokens, capture="logits")
    masked = moe.forward(a.tokens, capture="logits", interventions=b.interventions)

    def log_softmax(x):
        x = x.astype(np.float64)
        m = x.max(axis=-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))

    lp, lq = log_softmax(plain.logits), log_softmax(masked.logits)
    want = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    assert np.allclose(kl, want, atol=1e-5)
    # Routing flips over a's tokens too: from the two forward passes' expert sets.
    plain = moe.forward(a.tokens, capture="router")
    masked = moe.forward(a.tokens, capture="router", interventions=b.interventions)
    for l in plain.moe_layers:
        flips = [set(plain.router_experts(l)[p]) != set(masked.router_experts(l)[p]) for p in range(len(a))]
        assert result.flip_rates_teacher_forced[l] == pytest.approx(np.mean(flips))
    # Causal: b rerouted an expert of layer 2, so layers 0 and 1 never change over a's tokens.
    assert result.flip_rates_teacher_forced[0] == result.flip_rates_teacher_forced[1] == 0
    assert result.flip_rates_teacher_forced[2] > 0


def test_figures_save_png_svg_and_csv_and_show_inline(runs, tmp_path):
    _, a, _ = runs
    figure = a.view("expert-load")
    for ext in ["png", "svg", "csv"]:
        figure.save(tmp_path / f"load.{ext}")
    assert (tmp_path / "load.png").read_bytes() == figure.png()
    assert (tmp_path / "load.csv").read_text() == figure.csv()
    assert figure._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n" and figure._repr_svg_() is None
    routelab.inline_format = "svg"
    try:
        assert figure._repr_png_() is None and figure._repr_svg_() == figure.svg()
    finally:
        routelab.inline_format = "png"
    records = figure.records
    assert records[0].keys() == {"layer", "expert", "selections", "share", "weight_mass"}
    assert isinstance(records[0]["selections"], int) and isinstance(records[0]["share"], float)
    # Each layer's shares sum to 1.
    for l in a.moe_layers:
        assert sum(r["share"] for r in records if r["layer"] == l) == pytest.approx(1.0, abs=1e-4)
    pandas = pytest.importorskip("pandas")
    frame = figure.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and list(frame.columns) == figure.header and len(frame) == len(records)


def test_routing_fidelity_equals_the_cli(moe, tmp_path):
    prompts = ["Once upon a time", "fn main() {", "The capital of France is"]
    bf16 = routelab.load("tiny-moe", dtype="bf16", progress=False)
    result = routelab.routing_fidelity(moe, bf16, prompts, max_new_tokens=64, names=("cpu f32", "cpu bf16"), progress=False)
    out = tmp_path / "fidelity"
    args = [a for p in prompts for a in ("-p", p)]
    cli("analyze", "routing-fidelity", "-m", "tiny-moe", "--against-dtype", "bf16", *args, "--max-new-tokens", 64, "--out", out)
    assert result.figure.csv() == (out / "routing_fidelity.csv").read_text()
    import json

    assert result.report == json.loads((out / "report.json").read_text())
    assert sum(l["flips"] for l in result.layers.values()) == sum(
        b["flips"] for l in result.report["layers"] for b in l["bins"]
    )
    # The same session twice: nothing flips.
    same = routelab.routing_fidelity(moe, moe, prompts[:1], max_new_tokens=16, progress=False)
    assert all(l["flips"] == 0 for l in same.layers.values())



PASSKEY = (
    "<|endoftext|>Welcome to The Rust Programming Language, an introductory book about Rust. "
    "The passkey is 48213. Remember it. 48213 is the passkey. Rust challenges that conflict.\n"
    "What is the passkey? The passkey is "
)


def test_patching_equals_the_cli_and_finds_the_answer_in_the_last_layer(dense, tmp_path):
    corrupt = PASSKEY.replace("48213", "71596")
    result = dense.patch(PASSKEY, corrupt, site="head", metric="logit-diff:4,7", progress=False)
    out = tmp_path / "patch"
    cli("patch", "-m", "tiny-dense", "--clean", PASSKEY, "--corrupt", corrupt, "--site", "head",
        "--metric", "logit-diff:4,7", "--out", out)
    assert result.figure.csv() == (out / "patching.csv").read_text()
    import json

    assert result.result == json.loads((out / "patching.json").read_text())
    assert result.recovered.shape == (6, 8)
    assert result.clean_metric > 0 > result.corrupt_metric
    # tiny-dense's retrieval heads sit in its last layer (assets/README.md).
    best_layer, _ = np.unravel_index(np.nanargmax(result.recovered), result.recovered.shape)
    assert result.layers[best_layer] == 5


def test_attribution_equals_the_cli_and_sums_to_the_logit(moe, tmp_path):
    prompt = "The capital of France is"
    a = moe.attribute(prompt)
    out = tmp_path / "attribution"
    cli("attribute", "-m", "tiny-moe", "-p", prompt, "--out", out)
    assert a.figure.csv() == (out / "attribution.csv").read_text()
    assert a.lens_figure.csv() == (out / "logit_lens.csv").read_text()
    assert abs(sum(v for _, v in a.components) - a.logit) < 1e-3 * (1 + abs(a.logit))
    # Every MoE layer's two selected experts promote tokens; the last lens row is the model's own.
    assert len(a.promotions) == 6 * 2
    assert a.lens[-1]["target_rank"] == 0
