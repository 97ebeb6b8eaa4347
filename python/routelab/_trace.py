"""Traces: a run's captures as numpy arrays under the trace file's names (hook names)."""

import json

from . import _routelab
from ._figure import Figure


class Trace:
    """A run's record, the same as a ``routelab-trace/2`` file.

    - ``tokens`` (uint32 [T]), ``text``, ``token_text``, ``metadata`` (dict), ``generated_from``;
    - ``tensors()``: every tensor by its name in the file; ``trace["layers.3.router.experts"]``;
    - one accessor per captured quantity, named after its hook with ``_`` for ``.``:
      ``router_logits(l)``, ``router_experts(l)``, ``router_weights(l)``, ``router_margin(l)``,
      ``attn_entropy(l)``, ``attn_argmax(l)``, ``attn_sink(l)``, ``attn_span(l)``,
      ``attn_probs(l)`` ([H, T, T]), ``hidden(l)`` (the residual stream after layer l),
      ``moe_routed_norm(l)``, ``moe_shared_norm(l)``, ``moe_dense_norm(l)``; and ``logits``;
    - ``view(name)``: a figure (``expert-load``, ``routing``, ``margin``, ``heads``, ``coactivation``,
      ``router-entropy``, ``contributions``, ``diff-routing``/``diff-kl`` with ``against=``);
    - ``save(path)``.

    Arrays are read-only views of the trace's memory (no copy), except ``attn_probs``, which
    is laid out from the per-query rows RouteLab keeps. ``np.array(a)`` gives a writable copy.
    """

    def __init__(self, inner):
        self._inner = inner
        self._metadata = None

    def __len__(self):
        return len(self._inner)

    @property
    def num_layers(self):
        return self._inner.num_layers

    @property
    def tokens(self):
        return self._inner.array("tokens")

    @property
    def text(self):
        """The generated text (for a trace read from a file, the generated tokens' texts)."""
        return self._inner.text

    @property
    def token_text(self):
        return self._inner.token_text

    @property
    def prompt(self):
        """The prompt as the run was given it."""
        return self.metadata["prompt"]

    @property
    def generated(self):
        """The generated token ids (uint32)."""
        return self.tokens[self.generated_from :]

    @property
    def generated_from(self):
        """The first generated position: the prompt's length."""
        return self._inner.generated_from

    @property
    def stop(self):
        """How the run ended; None for a trace read from a file."""
        return self._inner.stop

    @property
    def prefill_seconds(self):
        return self._inner.prefill_seconds

    @property
    def decode_seconds(self):
        return self._inner.decode_seconds

    @property
    def metadata(self):
        """The file's metadata, its JSON fields decoded."""
        if self._metadata is None:
            self._metadata = json.loads(self._inner.metadata_json())
        return self._metadata

    @property
    def interventions(self):
        """The run's interventions as ``HOOK:METHOD`` strings."""
        return self._inner.interventions

    def names(self):
        """Every tensor's name, as in the file."""
        return self._inner.names()

    def tensors(self):
        """Every tensor, by its name in the file."""
        return {n: self._inner.array(n) for n in self._inner.names()}

    def __getitem__(self, name):
        return self._inner.array(name)

    def __contains__(self, name):
        return name in self._inner.names()

    @property
    def moe_layers(self):
        """The layers with routing recorded."""
        names = set(self._inner.names())
        return [l for l in range(self.num_layers) if f"layers.{l}.router.experts" in names]

    @property
    def logits(self):
        return self._inner.array("logits")

    def view(self, name, layer=None, against=None):
        """A figure of this trace; ``against`` the second trace of the ``diff-`` views."""
        return Figure(self._inner.view(name, layer, None if against is None else against._inner))

    def save(self, path):
        """Writes the trace file (atomically)."""
        self._inner.save(str(path))

    def __repr__(self):
        return f"<routelab.Trace {self.metadata['model']}: {len(self)} positions, {len(self.names())} tensors>"


def _accessor(hook, shape, meaning, elem):
    def get(self, layer):
        return self._inner.array(f"layers.{layer}.{hook}")

    get.__name__ = hook.replace(".", "_")
    get.__doc__ = f"``layers.{{layer}}.{hook}``: {meaning}; {elem} {shape}."
    return get


# One accessor per row of RouteLab's hook table, so a new quantity needs no change here.
for _hook, _elem, _shape, _meaning in _routelab.quantities():
    setattr(Trace, _hook.replace(".", "_"), _accessor(_hook, _shape, _meaning, _elem))


def open_trace(path):
    """Reads a trace written by ``routelab run --trace``, ``routelab forward``, the GUI or
    ``Trace.save``."""
    return Trace(_routelab.open_trace(str(path)))
