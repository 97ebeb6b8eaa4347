"""Results of RouteLab's analyses: each with its table(s) and figure(s)."""

import json

import numpy as np

from . import _routelab
from ._figure import Figure, Table


def _settings(**kwargs):
    """The job's settings as JSON, with what is left None taking the job's defaults."""
    return json.dumps({k: v for k, v in kwargs.items() if v is not None})


class _Figured:
    """A result shown as its main figure: its table's ``records`` and ``to_pandas()``, and its
    plot inline."""

    def _main(self):
        return self.figure

    @property
    def records(self):
        return self._main().records

    def to_pandas(self):
        return self._main().to_pandas()

    def _repr_png_(self):
        return self._main()._repr_png_()

    def _repr_svg_(self):
        return self._main()._repr_svg_()


class RetrievalScan(_Figured):
    """A retrieval-head scan: ``scores`` (numpy [layers, heads]), ``figure`` (the per-head
    score view; its ``records`` / ``to_pandas()`` are the table the CLI writes),
    ``accuracy`` (needle accuracy), ``heads(threshold)`` (retrieval heads, strongest first),
    ``trials`` (each trial's result), ``incomplete`` (cancelled before the end)."""

    THRESHOLD = 0.1

    def __init__(self, result, figure):
        self.result = result
        self.figure = Figure(figure)
        self.layers, self.num_heads = result["layers"], result["heads"]
        self.trials = result["trials"]
        self.incomplete = result["incomplete"]
        self.mode = result["mode"]
        # RouteLab's scores (the table's): mean over trials of the answer positions each head
        # copied, as a share of the answer's length.
        by_head = {(r["layer"], r["head"]): r["retrieval_score"] for r in self.figure.records}
        self.scores = np.array([[by_head[(l, h)] for h in range(self.num_heads)] for l in range(self.layers)], dtype=np.float64)
        self._head_scores = {"layers": self.layers, "heads": self.num_heads, "scores": self.scores.ravel().tolist()}

    @property
    def accuracy(self):
        return sum(t["correct"] for t in self.trials) / len(self.trials) if self.trials else 0.0

    def heads(self, threshold=THRESHOLD):
        """(layer, head, score) of the heads scoring above ``threshold``, strongest first."""
        cells = [(l, h, float(self.scores[l, h])) for l in range(self.layers) for h in range(self.num_heads)]
        above = [c for c in cells if c[2] > threshold]
        return sorted(above, key=lambda c: (-c[2], c[0], c[1]))

    def __repr__(self):
        return (
            f"<routelab.RetrievalScan {len(self.trials)} trials, accuracy {self.accuracy:.0%}, "
            f"{len(self.heads())} of {self.layers * self.num_heads} heads > {self.THRESHOLD}>"
        )


class Ablation(_Figured):
    """Needle accuracy with the top retrieval heads masked against random heads: ``baseline``,
    ``masked_retrieval``, ``random_draws``, ``random_mean``, ``figure``."""

    def __init__(self, result, figure):
        self.result = result
        self.figure = Figure(figure)
        self.baseline = result["baseline"]
        self.masked_retrieval = result["masked_retrieval"]
        self.retrieval_heads = [tuple(h) for h in result["retrieval_heads"]]
        self.random_draws = [([tuple(h) for h in heads], acc) for heads, acc in result["random_draws"]]

    @property
    def random_mean(self):
        return sum(a for _, a in self.random_draws) / len(self.random_draws) if self.random_draws else 0.0

    def __repr__(self):
        return (
            f"<routelab.Ablation baseline {self.baseline:.0%}, top-{len(self.retrieval_heads)} retrieval heads masked "
            f"{self.masked_retrieval:.0%}, random {self.random_mean:.0%}>"
        )


class HeadsExperts(_Figured):
    """The experts each MoE layer selects at the decoding steps where the chosen heads copy the
    needle, against the other steps: ``heads`` ((layer, head) pairs), ``trials``, ``positions``
    (decoding steps), ``copy_positions``, ``copy_events``, ``layers`` ({layer: [per expert
    {"expert", "at_copy", "elsewhere", "share_copy", "share_elsewhere", "enrichment", "z",
    "p_value", "log_odds", "log_odds_se"}]}; undefined values None), ``scan`` (the same trials'
    retrieval scan) and ``figure`` (the layer × expert log odds ratio; its table is the CLI's
    ``heads_experts.csv``)."""

    def __init__(self, result, figure):
        self.result = result
        self.figure = Figure(figure)
        report = result["report"]
        self.heads = [tuple(h) for h in report["heads"]]
        self.trials = report["trials"]
        self.positions = report["positions"]
        self.copy_positions = report["copy_positions"]
        self.copy_events = report["copy_events"]
        self.layers = {l["layer"]: l["experts"] for l in report["layers"]}
        self.scan = result["scan"]

    def __repr__(self):
        return (
            f"<routelab.HeadsExperts {len(self.heads)} heads, {self.copy_positions} copy steps of {self.positions}, "
            f"{len(self.layers)} MoE layers>"
        )


class Specialization(_Figured):
    """Expert specialization over a corpus: ``report`` (``report.json``'s content),
    ``results`` (every figure and table by the file stem the CLI writes: ``summary``, ``load``,
    ``domains_layer{l}``, ``top_tokens_layer{l}``, ``coactivation_layer{l}``), ``summary`` and
    ``load`` figures, ``skipped`` corpus files."""

    def __init__(self, report, results, skipped):
        self.report = report
        self.results = {
            stem: Figure(obj) if isinstance(obj, _routelab.Figure) else Table(obj) for stem, obj in results
        }
        self.skipped = [str(p) for p in skipped]
        self.layers = report["layers"]

    @property
    def summary(self):
        return self.results["summary"]

    @property
    def load(self):
        return self.results["load"]

    def _main(self):
        return self.summary

    def __repr__(self):
        return f"<routelab.Specialization {self.report['tokens']} tokens, {len(self.layers)} MoE layers>"


class RunDiff:
    """What changed between two traces of the same prompt: ``first_divergence``,
    ``routing_flips`` ({layer: bool per position}), ``flip_rates`` ({layer: share}), ``kl``
    (next-token KL per position along each run's own tokens, when both have logits),
    ``top1_changed``; ``figures`` (``diff-routing``, and ``diff-kl`` with logits). From
    :meth:`Session.compare`, also what a compare cell shows, teacher-forced on the first run's
    tokens so that only the second run's interventions cause it: ``kl_teacher_forced`` (the
    next-token KL per position) and ``flip_rates_teacher_forced`` ({layer: share of positions
    whose top-k set changed}; zero before the first intervened layer)."""

    def __init__(self, result, a, b, kl_teacher_forced=None, flip_rates_teacher_forced=None):
        self.result = result
        self.positions = result["positions"]
        self.first_divergence = result.get("first_divergence")
        self.routing_flips = {l: np.asarray(f, dtype=bool) for l, f in result["routing_flips"]}
        self.flip_rates = {l: float(f.mean()) if len(f) else 0.0 for l, f in self.routing_flips.items()}
        self.kl = None if result.get("kl") is None else np.asarray(result["kl"])
        self.kl_teacher_forced = None if kl_teacher_forced is None else np.asarray(kl_teacher_forced)
        self.flip_rates_teacher_forced = None if flip_rates_teacher_forced is None else dict(flip_rates_teacher_forced)
        self.top1_changed = None if result.get("top1_changed") is None else np.asarray(result["top1_changed"], dtype=bool)
        self._a, self._b = a, b

    @property
    def figures(self):
        out = {}
        for name in ("diff-routing", "diff-kl"):
            try:
                out[name] = self._a.view(name, against=self._b)
            except _routelab.InvalidArgument:
                pass
        return out

    def _repr_png_(self):
        figures = self.figures
        return next(iter(figures.values()))._repr_png_() if figures else None

    def __repr__(self):
        return f"<routelab.RunDiff {self.positions} positions, first divergence {self.first_divergence}>"


def diff(a, b):
    """What changed between traces ``a`` and ``b`` of the same prompt."""
    return RunDiff(json.loads(_routelab.diff(a._inner, b._inner)), a, b)


def _compare(session, a, b, report):
    summary = json.loads(_routelab.compare(session, a._inner, b._inner, report))
    return RunDiff(
        json.loads(_routelab.diff(a._inner, b._inner)),
        a,
        b,
        kl_teacher_forced=summary["kl"],
        flip_rates_teacher_forced={l: r for l, r in summary["flip_rates"]},
    )


class RoutingFidelity(_Figured):
    """The same prompts in two settings: ``layers`` ({layer: {"flip_rate", "positions", "flips",
    "bins": [{"from", "to", "positions", "flips"}]}}, flips of the second setting's top-k set
    teacher-forced on the first's tokens, by the first's routing margin), ``prompts`` (each
    with ``texts_part_at``, ``a_text``, ``b_text``), ``report`` (the CLI's ``report.json``) and
    ``figure`` (the heat map)."""

    def __init__(self, report, figure):
        self.report = report
        self.figure = Figure(figure)
        self.prompts = report["prompts"]
        self.layers = {
            l["layer"]: dict(l, flip_rate=l["flips"] / max(l["positions"], 1)) for l in report["layers"]
        }

    def __repr__(self):
        flips = sum(l["flips"] for l in self.layers.values())
        return f"<routelab.RoutingFidelity {self.report['b']} against {self.report['a']}: {flips} flips>"


def routing_fidelity(a, b, prompts, max_new_tokens=64, names=None, progress=None):
    """Routing of session ``b`` against session ``a`` (the same model in another dtype, on
    another device, or a GGUF quant of it) on ``prompts`` (a string or a list): per MoE layer,
    how often ``b`` selects other experts, teacher-forced on ``a``'s tokens, by ``a``'s routing
    margin, and where the two greedy texts part (``routelab analyze routing-fidelity``).
    ``names``: what to call the two settings (default: their device and dtype)."""
    from ._progress import reporting

    if isinstance(prompts, str):
        prompts = [prompts]
    with reporting(progress) as report:
        result, figure = _routelab.routing_fidelity(
            a._inner, b._inner, list(prompts), max_new_tokens, None if names is None else tuple(names), report
        )
    return RoutingFidelity(json.loads(result), figure)



class Patching(_Figured):
    """An activation-patching sweep: ``recovered`` (numpy [layers, columns], the share of the
    clean − corrupted gap each cell recovers; NaN where a layer lacks the site), ``values``
    (the metric per cell), ``layers``, ``columns`` and ``column_labels``, ``clean_metric``,
    ``corrupt_metric``, ``result`` (the CLI's ``patching.json``) and ``figure`` (the heat
    map)."""

    def __init__(self, result, figure):
        self.result = result
        self.figure = Figure(figure)
        nan = float("nan")
        as_array = lambda rows: np.array([[nan if v is None else v for v in r] for r in rows], dtype=np.float64)
        self.recovered = as_array(result["recovered"])
        self.values = as_array(result["values"])
        self.layers = result["layers"]
        self.columns = result["columns"]
        self.column_labels = result["column_labels"]
        self.clean_metric = result["clean_metric"]
        self.corrupt_metric = result["corrupt_metric"]

    def __repr__(self):
        return f"<routelab.Patching {self.result['site']}: {len(self.layers)} layers × {len(self.columns)}>"


class Attribution(_Figured):
    """Direct logit attribution of ``target`` at ``position``: ``components`` (a list of
    (label, contribution), e.g. ``("layers.3.experts.5", 0.42)``; they sum to ``logit`` up to
    float rounding, ``residual``), ``lens`` (per layer: the target's rank and probability and
    the top tokens), ``promotions`` (per selected expert: the tokens its output promotes),
    ``figure`` (the largest contributions) and ``lens_figure`` (the logit lens over every
    position); ``result`` is the CLI's ``attribution.json``."""

    def __init__(self, result, figure, lens_figure):
        self.result = result
        self.figure = Figure(figure)
        self.lens_figure = Figure(lens_figure)
        self.position = result["position"]
        self.target = result["target_text"]
        self.logit = result["logit"]
        self.residual = result["residual"]
        self.components = [(c["label"], c["value"]) for c in result["components"]]
        self.lens = result["lens"]
        self.promotions = result["promotions"]

    def __repr__(self):
        return f"<routelab.Attribution {self.target!r} at {self.position}: logit {self.logit:.4f}>"

