"""Sessions: a loaded model and what runs on it."""

import json

from . import _routelab
from ._routelab import InvalidArgument
from ._analyses import Ablation, Attribution, HeadsExperts, Patching, RetrievalScan, Specialization, _compare, _settings
from ._progress import reporting
from ._trace import Trace


def _items(x):
    if x is None:
        return None
    if isinstance(x, str):
        return [x]
    return [str(i) for i in x]


def _teacher_forced(mode):
    """A needle analysis's ``mode``: ``generate`` (False) or ``teacher-forced`` (True)."""
    if mode not in ("generate", "teacher-forced", "teacher_forced"):
        raise InvalidArgument(f"mode {mode!r}: expected generate or teacher-forced")
    return mode != "generate"


def _needle(lengths, depths, per_cell, seed, haystack, needle, question, digits):
    """The needle-trial settings a scan and an ablation share (``NeedleSettings``)."""
    return dict(
        lengths=lengths,
        depths=depths,
        per_cell=per_cell,
        seed=seed,
        haystack=None if haystack is None else str(haystack),
        needle=needle,
        question=question,
        digits=digits,
    )


def load(model, device="cpu", dtype=None, progress=None):
    """Loads ``model``: anything the CLI's ``--model`` takes (a bundled name such as
    ``tiny-moe``, a Hugging Face directory, a ``.gguf`` file or any shard of one, a Hugging Face
    repo id ``owner/name[@revision]``, or one quant of a GGUF repo ``owner/name:Q4_K_M``).

    ``device``: ``cpu``, ``cuda`` or ``cuda:N``; ``dtype``: ``f32`` or ``bf16`` (default: as
    stored on the CPU, bf16 on a GPU). ``progress`` as in :meth:`Session.generate`.
    """
    with reporting(progress) as report:
        return Session(_routelab.load(str(model), device, dtype, report))


class Session:
    """A loaded model. ``info`` holds its architecture (``routelab info``'s fields)."""

    def __init__(self, inner):
        self._inner = inner
        self.info = json.loads(inner.info_json())

    @property
    def name(self):
        return self._inner.name

    def __repr__(self):
        return f"<routelab.Session {self.name}: {self.info['summary']}>"

    def encode(self, prompt, chat=False, system=None):
        """The prompt's token ids (with ``chat`` or ``system``, in the model's chat template)."""
        return self._inner.encode(prompt, chat, system)

    def decode(self, tokens):
        return self._inner.decode([int(t) for t in tokens])

    def token_text(self, tokens):
        """Each token's text, as traces label tokens."""
        return self._inner.token_text([int(t) for t in tokens])

    def cancel(self):
        """Stops this session's calls in progress (from another thread); each raises
        :class:`routelab.Cancelled`."""
        self._inner.cancel()

    def generate(
        self,
        prompt,
        max_new_tokens=None,
        capture=None,
        interventions=None,
        chat=False,
        system=None,
        temperature=None,
        top_p=None,
        top_k=None,
        seed=None,
        stop_at_eos=None,
        progress=None,
        on_token=None,
        replay=None,
        replay_layers=None,
        replay_positions=None,
        replay_weights=False,
    ):
        """Generates from ``prompt`` and returns the run's :class:`Trace`.

        ``capture``: what to record, as the CLI's ``--capture`` takes it (``"default"``,
        ``"all"``, ``"router,stats"``, ``"probs:3"``, ``"layers.*.router.margin"``, or a list).
        ``interventions``: ``HOOK:METHOD`` strings as ``--intervene`` takes them
        (``"layers.3.experts.5:drop"``, ``"layers.0.attn.head.2:uniform"``,
        ``"layers.4.shared_expert:mute"``). ``chat``/``system`` wrap the prompt in the chat
        template. Settings left None take ``routelab run``'s defaults (48 new tokens, greedy,
        seed 0, stop at end of sequence). ``progress``: None (a tqdm bar when tqdm is installed
        and the output is a notebook or terminal), True, False, or a callable
        ``(what, done, total)``; ``on_token(text)`` gets each token as it is generated.
        The GIL is released while the model runs; Ctrl-C stops it at the next token.

        ``replay``: a :class:`Trace` whose recorded routing the MoE layers take instead of
        their routers' selection (``replay_layers``: a list, default every layer it routed;
        ``replay_positions``: ``(start, stop)``, default all it recorded; ``replay_weights``:
        take its combine weights too, else they come from this run's router scores), as
        ``routelab run --replay-routing`` does. A trace's own prompt replays its run exactly.
        """
        with reporting(progress, on_token) as report:
            return Trace(
                self._inner.run(
                    prompt=str(prompt),
                    chat=chat,
                    system=system,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=top_k,
                    seed=seed,
                    stop_at_eos=stop_at_eos,
                    capture=_items(capture),
                    interventions=_items(interventions),
                    progress=report,
                    **_replay(replay, replay_layers, replay_positions, replay_weights),
                )
            )

    def forward(
        self,
        prompt_or_token_ids,
        capture=None,
        interventions=None,
        chat=False,
        replay=None,
        replay_layers=None,
        replay_positions=None,
        replay_weights=False,
    ):
        """One forward pass over a prompt (text) or token ids (as ``routelab forward``; logits
        are always recorded); ``replay`` as in :meth:`generate`."""
        if isinstance(prompt_or_token_ids, str):
            kwargs = dict(prompt=prompt_or_token_ids, chat=chat)
        else:
            kwargs = dict(tokens=[int(t) for t in prompt_or_token_ids])
        # Logits are what a forward pass is for: always recorded, as `routelab forward` does.
        capture = (_items(capture) or ["default"]) + ["logits"]
        return Trace(
            self._inner.run(
                max_new_tokens=0,
                capture=capture,
                interventions=_items(interventions),
                **kwargs,
                **_replay(replay, replay_layers, replay_positions, replay_weights),
            )
        )

    def scan_retrieval(
        self,
        lengths=None,
        depths=None,
        per_cell=None,
        seed=None,
        haystack=None,
        needle=None,
        question=None,
        digits=None,
        mode="generate",
        interventions=None,
        state=None,
        progress=None,
    ):
        """The retrieval-head scan (``routelab scan retrieval``; Wu et al. 2024): needle
        trials over context ``lengths`` × needle ``depths`` (0 = start, 1 = end), ``per_cell``
        trials each; ``mode`` ``generate`` (the paper's) or ``teacher-forced``. ``state``: a
        file that keeps finished trials so an interrupted scan resumes. Settings left None
        take the CLI's defaults."""
        settings = _settings(
            **_needle(lengths, depths, per_cell, seed, haystack, needle, question, digits),
            teacher_forced=_teacher_forced(mode),
        )
        with reporting(progress) as report:
            result, figure = _routelab.scan_retrieval(
                self._inner, settings, _items(interventions), None if state is None else str(state), report
            )
        return RetrievalScan(json.loads(result), figure)

    def ablation(
        self,
        heads,
        top=None,
        draws=None,
        method="uniform",
        lengths=None,
        depths=None,
        per_cell=None,
        seed=None,
        haystack=None,
        needle=None,
        question=None,
        digits=None,
        progress=None,
    ):
        """Needle accuracy with the ``top`` retrieval heads masked against ``top`` random other
        heads, ``draws`` times (``routelab analyze ablation``). ``heads``: a
        :class:`RetrievalScan` or the path of the CSV a scan wrote; ``method`` ``uniform`` (the
        paper's) or ``zero``."""
        settings = _settings(top=top, draws=draws, **_needle(lengths, depths, per_cell, seed, haystack, needle, question, digits))
        if isinstance(heads, RetrievalScan):
            scores, csv = json.dumps(heads._head_scores), None
        else:
            scores, csv = None, str(heads)
        with reporting(progress) as report:
            result, figure = _routelab.ablation(self._inner, settings, method, scores, csv, report)
        return Ablation(json.loads(result), figure)

    def patch(self, clean, corrupt, site="resid", metric="kl", layers=None, positions=None, progress=None):
        """Activation patching (``routelab patch``): for each cell, one forward of ``corrupt``
        with ``clean``'s activation copied in. ``site``: ``resid``, ``attn``, ``mlp``,
        ``shared``, ``dense`` (cells layer × position) or ``head``, ``expert`` (layer × head or
        expert, patched at ``positions`` together); ``metric``: ``"logit-diff: A, B"``,
        ``"prob: A"`` or ``"kl"`` on the last position's next-token logits. The two prompts
        must be the same number of tokens."""
        with reporting(progress) as report:
            result, figure = _routelab.patch(
                self._inner,
                clean,
                corrupt,
                site,
                metric,
                None if layers is None else [int(l) for l in layers],
                None if positions is None else [int(p) for p in positions],
                report,
            )
        return Patching(json.loads(result), figure)

    def attribute(self, prompt, position=None, target=None, top=None, plot_top=20):
        """Direct logit attribution over heads and experts, the logit lens and what each
        selected expert promotes, at ``position`` (default the last) for token ``target``
        (text, leading space included; default the model's prediction) (``routelab
        attribute``)."""
        result, figure, lens = _routelab.attribute(
            self._inner, prompt, _settings(position=position, target=target, top=top), plot_top
        )
        return Attribution(json.loads(result), figure, lens)

    def heads_experts(
        self,
        heads=None,
        threshold=None,
        mode="generate",
        lengths=None,
        depths=None,
        per_cell=None,
        seed=None,
        haystack=None,
        needle=None,
        question=None,
        digits=None,
        progress=None,
    ):
        """Which experts each MoE layer selects at the needle trials' decoding steps where
        ``heads`` copy the answer (the retrieval scan's copy rule), against the other steps
        (``routelab analyze heads-experts``). ``heads``: (layer, head) pairs, ``"all"``, a
        :class:`RetrievalScan` or the path of the CSV a scan wrote (then the heads above
        ``threshold``), or None for the heads above ``threshold`` in a scan of the same trials.
        ``mode`` ``generate`` or ``teacher-forced``."""
        settings = _settings(
            threshold=threshold,
            teacher_forced=_teacher_forced(mode),
            **_needle(lengths, depths, per_cell, seed, haystack, needle, question, digits),
        )
        pairs, scores, csv = None, None, None
        if isinstance(heads, RetrievalScan):
            scores = json.dumps(heads._head_scores)
        elif isinstance(heads, str) and heads == "all":
            layers, per_layer = self.info["layers"], self.info["heads"]
            pairs = [(l, h) for l in range(layers) for h in range(per_layer)]
        elif isinstance(heads, (str, bytes)) or hasattr(heads, "__fspath__"):
            csv = str(heads)
        elif heads is not None:
            pairs = [(int(l), int(h)) for l, h in heads]
        with reporting(progress) as report:
            result, figure = _routelab.heads_experts(self._inner, settings, pairs, scores, csv, report)
        return HeadsExperts(json.loads(result), figure)

    def specialization(self, corpus, chunk_tokens=None, max_tokens=None, code_domains=None, progress=None):
        """Expert specialization over a labelled corpus (one subdirectory of text files per
        domain; ``routelab analyze specialization``)."""
        settings = _settings(
            corpus=str(corpus),
            chunk_tokens=chunk_tokens,
            max_tokens=max_tokens,
            code_domains=None if code_domains is None else list(code_domains),
        )
        with reporting(progress) as report:
            report_json, results, skipped = _routelab.specialization(self._inner, settings, report)
        return Specialization(json.loads(report_json), results, skipped)

    def compare(self, a, b, progress=None):
        """How ``b`` (a run with interventions) differs from ``a`` (the same prompt without):
        :func:`routelab.diff` plus the next-token KL with ``b``'s interventions teacher-forced
        on ``a``'s tokens, as a compare cell shows it."""
        with reporting(progress) as report:
            return _compare(self._inner, a, b, report)


def _replay(trace, layers, positions, weights):
    if trace is None:
        return {}
    return dict(
        replay=trace._inner,
        replay_layers=None if layers is None else [int(l) for l in layers],
        replay_positions=None if positions is None else (int(positions[0]), int(positions[1])),
        replay_weights=bool(weights),
    )

