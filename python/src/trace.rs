//! `routelab.Trace`: a run's captures as numpy arrays under the trace file's names, with its
//! metadata; the same record the CLI and the GUI write (`routelab-trace/2`).

use numpy::ndarray::{ArrayView, IxDyn};
use numpy::{PyArray, PyArrayMethods, PyUntypedArray};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use routelab_model::hooks::{HookPoint, Quantity, QUANTITIES};
use routelab_model::store::Values;
use routelab_probes::export::views;
use routelab_probes::trace::{Trace as CoreTrace, FORMAT};

use crate::errors::{invalid, to_py};
use crate::figure::Figure;

/// How a run made in this session ended (absent for traces read from files).
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub text: String,
    pub stop: String,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

#[pyclass(frozen, module = "routelab._routelab")]
pub struct Trace {
    pub core: CoreTrace,
    run: Option<RunInfo>,
}

impl Trace {
    pub fn new(core: CoreTrace, run: Option<RunInfo>) -> Self {
        Trace { core, run }
    }
}

/// Each per-layer quantity of the hook table: (name after `layers.{l}.`, element type, shape,
/// meaning).
#[pyfunction]
pub fn quantities() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    QUANTITIES
        .iter()
        .map(|q| (q.name, if matches!(q.elem, routelab_model::hooks::Elem::U32) { "uint32" } else { "float32" }, q.shape, q.meaning))
        .collect()
}

/// Reads a trace written by the CLI, the GUI or `Trace.save`.
#[pyfunction]
pub fn open_trace(path: std::path::PathBuf) -> PyResult<Trace> {
    Ok(Trace::new(CoreTrace::read(&path).map_err(|e| to_py(e, None))?, None))
}

/// A read-only numpy array over `values` in place, kept alive by `owner`.
fn borrowed<'py, T: numpy::Element>(owner: &Bound<'py, Trace>, shape: &[usize], values: &[T]) -> PyResult<Bound<'py, PyUntypedArray>> {
    let view = ArrayView::from_shape(IxDyn(shape), values).map_err(|e| invalid(format!("shape {shape:?}: {e}")))?;
    // SAFETY: the values belong to the frozen `Trace` that `owner` is, which nothing mutates,
    // and the array holds a reference to it, so they outlive the array.
    let array = unsafe { PyArray::borrow_from_array(&view, owner.clone().into_any()) };
    Ok(array.readwrite().make_nonwriteable().as_untyped().clone())
}

#[pymethods]
impl Trace {
    /// Number of positions (prompt then generated).
    fn __len__(&self) -> usize {
        self.core.len()
    }

    #[getter]
    fn num_layers(&self) -> usize {
        self.core.num_layers()
    }

    /// The first generated position (= the prompt's length).
    #[getter]
    fn generated_from(&self) -> usize {
        self.core.meta.generated_from
    }

    /// Each token's text.
    #[getter]
    fn token_text(&self) -> Vec<String> {
        self.core.pieces.clone()
    }

    /// The generated text as the run produced it (special tokens kept); for a trace read from
    /// a file, the generated tokens' texts joined.
    #[getter]
    fn text(&self) -> String {
        match &self.run {
            Some(r) => r.text.clone(),
            None => self.core.pieces.get(self.core.meta.generated_from..).unwrap_or_default().concat(),
        }
    }

    /// How the run ended (`max tokens`, `end of sequence`, `context window full`); None for a
    /// trace read from a file.
    #[getter]
    fn stop(&self) -> Option<String> {
        self.run.as_ref().map(|r| r.stop.clone())
    }

    #[getter]
    fn prefill_seconds(&self) -> Option<f64> {
        self.run.as_ref().map(|r| r.prefill_seconds)
    }

    #[getter]
    fn decode_seconds(&self) -> Option<f64> {
        self.run.as_ref().map(|r| r.decode_seconds)
    }

    /// The file's `__metadata__`, JSON fields decoded, as a JSON object.
    fn metadata_json(&self) -> PyResult<String> {
        let m = &self.core.meta;
        let mut v = serde_json::json!({
            "format": FORMAT,
            "model": m.model,
            "architecture": m.architecture,
            "config": m.config,
            "prompt": m.prompt,
            "generated_from": m.generated_from,
            "interventions": m.interventions,
            "capture": m.capture,
            "sampling": m.sampling,
            "routelab_version": m.routelab_version,
            "token_text": self.core.pieces,
        });
        // Present in the file only for runs that replayed routing.
        if let Some(r) = &m.replay {
            v["replay"] = serde_json::to_value(r).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(v.to_string())
    }

    /// The interventions of the run, as `HOOK:METHOD` strings.
    #[getter]
    fn interventions(&self) -> Vec<String> {
        self.core.meta.interventions.items.iter().map(|i| i.to_string()).collect()
    }

    /// Every tensor's name, as in the file (`tokens`, `logits`, then per layer).
    fn names(&self) -> Vec<String> {
        self.core.store.iter().map(|(h, _)| h.to_string()).collect()
    }

    /// The tensor `name` (a hook name) as a numpy array, without a copy (read-only); attention
    /// probabilities are laid out `[H, T, T]` as in the file, which takes a copy.
    fn array<'py>(slf: &Bound<'py, Self>, name: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
        let this = slf.get();
        let t = this.core.len();
        if name == "tokens" {
            return borrowed(slf, &[t], this.core.tokens());
        }
        let hook: HookPoint = name.parse().map_err(|e: String| invalid(e))?;
        if hook.layer_index().is_some_and(|l| l >= this.core.num_layers()) {
            return Err(pyo3::exceptions::PyKeyError::new_err(format!("{name}: the trace has {} layers", this.core.num_layers())));
        }
        let Some(stored) = this.core.store.get(&hook) else {
            return Err(pyo3::exceptions::PyKeyError::new_err(format!("{name} is not in this trace: {}", missing_hint(&hook))));
        };
        if let HookPoint::Layer { layer, quantity: Quantity::AttnProbs } = hook {
            let p = this.core.probs(layer).ok_or_else(|| invalid(format!("{name}: not f32")))?;
            let dense = PyArray::from_vec(slf.py(), p.to_dense());
            let array = dense.reshape(vec![p.heads, t, t])?;
            return Ok(array.readwrite().make_nonwriteable().as_untyped().clone());
        }
        let shape = [&[t][..], &stored.row_shape].concat();
        match &stored.values {
            Values::F32(v) => borrowed(slf, &shape, v),
            Values::U32(v) => borrowed(slf, &shape, v),
        }
    }

    /// A view of this trace (the names `routelab export --view` takes), `against` a second
    /// trace for the `diff-` views.
    #[pyo3(signature = (name, layer=None, against=None))]
    fn view(&self, name: &str, layer: Option<usize>, against: Option<PyRef<'_, Trace>>) -> PyResult<Figure> {
        let v = views::trace_view(name, &self.core, layer, against.as_ref().map(|a| &a.core)).map_err(|e| to_py(e, None))?;
        Ok(Figure::new(v))
    }

    /// Writes the trace (`routelab-trace/2`, atomically).
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        self.core.write(&path).map_err(|e| to_py(e, Some(&format!("writing trace {}", path.display()))))
    }

    /// The trace file's bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.core.to_bytes().map_err(|e| to_py(e, None))?))
    }
}

/// Why a hook may be absent, and the capture item that records it.
fn missing_hint(hook: &HookPoint) -> String {
    match hook {
        HookPoint::Layer { layer, quantity } => {
            let item = match quantity {
                Quantity::AttnProbs => format!("probs:{layer}"),
                Quantity::Hidden => format!("hidden:{layer}"),
                Quantity::RouterMargin => "margin".into(),
                Quantity::AttnSpan => "span:A-B".into(),
                Quantity::RoutedNorm | Quantity::SharedNorm | Quantity::DenseNorm => "contributions".into(),
                Quantity::RouterLogits | Quantity::RouterExperts | Quantity::RouterWeights => "router".into(),
                Quantity::AttnEntropy | Quantity::AttnArgmax | Quantity::AttnSink => "stats".into(),
                Quantity::AttnZ | Quantity::AttnOut | Quantity::MlpOut | Quantity::ExpertOut | Quantity::SharedOut | Quantity::DenseOut => {
                    format!("outputs:{layer}")
                }
            };
            format!("not captured, or the layer has no such part (capture it with capture={item:?})")
        }
        HookPoint::Logits => "not captured (capture it with capture=\"logits\")".into(),
        _ => "not a captured quantity".into(),
    }
}
