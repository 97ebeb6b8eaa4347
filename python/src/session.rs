//! `routelab.load` and the session: a loaded model and the calls that run it.

use std::sync::Mutex;

use pyo3::prelude::*;
use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::{Intervention, Interventions};
use routelab_model::replay::RoutingReplay;
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{LoadOptions, Prompt, RunEvent, Session as CoreSession};
use routelab_model::source::{LoadProgress, ModelSource};
use routelab_probes::jobs::run::{GenerationSettings, RunJob};
use routelab_probes::jobs::Job;

use crate::call::{detached, Calls, Report};
use crate::errors::{invalid, to_py};
use crate::trace::{RunInfo, Trace};

/// A loaded model. Calls on one session run one at a time (a second waits for the first);
/// `cancel()` stops those in progress from any thread.
#[pyclass(frozen, module = "routelab._routelab")]
pub struct Session {
    pub core: CoreSession,
    pub calls: Calls,
    /// Held by the call that runs the model.
    pub busy: Mutex<()>,
}

/// Loads `model` (anything the CLI's `--model` takes) on `device`; `dtype` as `--dtype`.
#[pyfunction]
#[pyo3(signature = (model, device="cpu", dtype=None, progress=None))]
pub fn load(py: Python<'_>, model: &str, device: &str, dtype: Option<&str>, progress: Option<&Bound<'_, PyAny>>) -> PyResult<Session> {
    // As the CLI: the source and options are checked before anything loads, without context.
    let source = ModelSource::parse(model).map_err(|e| to_py(e, None))?;
    let options = LoadOptions::parse(device, dtype).map_err(|e| to_py(e, None))?;
    let calls = Calls::default();
    let context = format!("loading model {model}");
    let name = source.display_name();
    let core = detached(py, &calls, progress, Some(&context), |cancel, report| {
        let loaded = CoreSession::load_cancellable(&source, &options, &mut |p| {
            match p {
                LoadProgress::Download { file, done, total } => {
                    report(Report { what: &format!("downloading {file}"), done: done as usize, total: total as usize, text: None })
                }
                LoadProgress::Layers { done, total } => report(Report { what: &format!("loading {name}"), done, total, text: None }),
            }
            !cancel.is_cancelled()
        });
        Ok(loaded?)
    })?;
    Ok(Session { core, calls, busy: Mutex::new(()) })
}

/// Capture items as the CLI's `--capture` takes them (a string or a list of them), or the
/// default.
pub fn capture_spec(capture: Option<Vec<String>>, default: CaptureSpec) -> PyResult<CaptureSpec> {
    match capture {
        None => Ok(default),
        Some(items) => CaptureSpec::parse_items(&items).map_err(invalid),
    }
}

/// Interventions as `HOOK:METHOD` strings (the CLI's `--intervene`), checked against the model.
pub fn interventions(session: &CoreSession, items: Option<Vec<String>>) -> PyResult<Interventions> {
    let mut set = Interventions::default();
    for s in items.unwrap_or_default() {
        set.push(s.parse::<Intervention>().map_err(invalid)?);
    }
    set.validate(session.config()).map_err(|e| to_py(e, None))?;
    Ok(set)
}

#[pymethods]
impl Session {
    /// The name the model was loaded by.
    #[getter]
    fn name(&self) -> String {
        self.core.name.clone()
    }

    /// The model's architecture facts as JSON (`routelab info`'s fields).
    fn info_json(&self) -> PyResult<String> {
        let mut info = serde_json::to_value(self.core.info()).map_err(|e| invalid(e.to_string()))?;
        info["chat_template"] = self.core.chat_template.is_some().into();
        Ok(info.to_string())
    }

    /// Each token's text.
    fn token_text(&self, tokens: Vec<u32>) -> Vec<String> {
        tokens.iter().map(|&t| self.core.tokenizer.piece(t)).collect()
    }

    /// The prompt's token ids (the chat template applied with `chat` or `system`).
    #[pyo3(signature = (prompt, chat=false, system=None))]
    fn encode(&self, prompt: &str, chat: bool, system: Option<&str>) -> PyResult<Vec<u32>> {
        self.core.encode(&Prompt::of(prompt, chat, system)).map_err(|e| to_py(e, None))
    }

    fn decode(&self, tokens: Vec<u32>) -> PyResult<String> {
        self.core.tokenizer.decode(&tokens, false).map_err(|e| to_py(e, None))
    }

    /// Stops every call of this session in progress at its next step; each raises
    /// `routelab.Cancelled`.
    fn cancel(&self) {
        self.calls.cancel_all();
    }

    /// Runs the prompt (text, or token ids) and generates `max_new_tokens` (0: one forward pass).
    /// Settings left `None` take RouteLab's defaults (those of `routelab run`).
    #[pyo3(signature = (prompt=None, tokens=None, chat=false, system=None, max_new_tokens=None, temperature=None, top_p=None,
                        top_k=None, seed=None, stop_at_eos=None, capture=None, interventions=None, progress=None, replay=None,
                        replay_layers=None, replay_positions=None, replay_weights=false))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        prompt: Option<String>,
        tokens: Option<Vec<u32>>,
        chat: bool,
        system: Option<String>,
        max_new_tokens: Option<usize>,
        temperature: Option<f32>,
        top_p: Option<f32>,
        top_k: Option<usize>,
        seed: Option<u64>,
        stop_at_eos: Option<bool>,
        capture: Option<Vec<String>>,
        interventions: Option<Vec<String>>,
        progress: Option<&Bound<'_, PyAny>>,
        replay: Option<PyRef<'_, Trace>>,
        replay_layers: Option<Vec<usize>>,
        replay_positions: Option<(usize, usize)>,
        replay_weights: bool,
    ) -> PyResult<Trace> {
        let prompt = match (prompt, tokens) {
            (Some(p), None) => Prompt::of(&p, chat, system.as_deref()),
            (None, Some(ids)) => Prompt::Tokens { ids },
            _ => return Err(invalid("give either a prompt or token ids")),
        };
        let d = GenerationSettings::default();
        let s = SamplingSettings::default();
        let settings = GenerationSettings {
            max_new_tokens: max_new_tokens.unwrap_or(d.max_new_tokens),
            sampling: SamplingSettings {
                temperature: temperature.unwrap_or(s.temperature),
                top_k: top_k.unwrap_or(s.top_k),
                top_p: top_p.unwrap_or(s.top_p),
                seed: seed.unwrap_or(s.seed),
            },
            stop_at_eos: stop_at_eos.unwrap_or(d.stop_at_eos),
        };
        let capture = capture_spec(capture, CaptureSpec::default())?;
        let replay = match replay {
            None => None,
            Some(t) => {
                let (a, b) = replay_positions.unwrap_or((0, usize::MAX));
                let source = t.core.meta.prompt.clone();
                let r = RoutingReplay::from_store(
                    &t.core.store,
                    &format!("the trace of {source:?}"),
                    replay_layers.as_deref(),
                    a..b,
                    replay_weights,
                )
                .map_err(invalid)?;
                Some(std::sync::Arc::new(r))
            }
        };
        let job = RunJob { prompt, settings, interventions: self::interventions(&self.core, interventions)?, capture, replay };
        let total = job.settings.max_new_tokens;
        let out = self.detached(py, progress, None, |cancel, report| {
            let mut generated = 0;
            job.execute(
                &self.core,
                &mut |e| {
                    if let RunEvent::Token { text, .. } = e {
                        generated += 1;
                        report(Report { what: "generate", done: generated, total, text: Some(text) });
                    }
                },
                cancel,
            )
        })?;
        Ok(Trace::new(
            out.trace,
            Some(RunInfo {
                text: out.text,
                stop: out.stop.describe().to_string(),
                prefill_seconds: out.prefill_seconds,
                decode_seconds: out.decode_seconds,
            }),
        ))
    }
}

impl Session {
    /// [`detached`] with this session's calls, one at a time.
    pub fn detached<T: Send>(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
        context: Option<&str>,
        work: impl FnOnce(&routelab_probes::jobs::Cancel, &mut dyn FnMut(Report)) -> Result<T, routelab_probes::ProbeError> + Send,
    ) -> PyResult<T> {
        detached(py, &self.calls, progress, context, |cancel, report| {
            let _busy = self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            work(cancel, report)
        })
    }
}
