//! The analyses from Python: retrieval-head scan, ablation, heads × experts, specialization,
//! run diff and compare, routing fidelity, activation patching and logit attribution. Each
//! runs the job the CLI and the GUI run, with its settings as JSON (fields left
//! out take the job's own defaults), and returns its result as JSON plus its views.

use std::path::PathBuf;

use pyo3::prelude::*;
use routelab_model::interventions::HeadMethod;
use routelab_model::session::Prompt;
use routelab_probes::analysis::diff::diff as run_diff;
use routelab_probes::analysis::fidelity::{routing_fidelity as fidelity, FidelitySettings};
use routelab_probes::analysis::heads_experts::HeadChoice;
use routelab_probes::analysis::patching::{Metric, PatchSettings, SweepSite};
use routelab_probes::analysis::retrieval::HeadScores;
use routelab_probes::export::csv::Table;
use routelab_probes::export::views;
use routelab_probes::jobs::ablation::{AblationJob, AblationSettings};
use routelab_probes::jobs::attribute::AttributeJob;
use routelab_probes::jobs::compare::CompareJob;
use routelab_probes::jobs::heads_experts::{HeadsExpertsJob, HeadsExpertsSettings};
use routelab_probes::jobs::patch::PatchJob;
use routelab_probes::jobs::scan::{ScanJob, ScanSettings};
use routelab_probes::jobs::specialization::{Export, SpecializationJob, SpecializationSettings};
use routelab_probes::jobs::{Job, Progress};
use serde::de::DeserializeOwned;

use crate::call::Report;
use crate::errors::{invalid, to_py};
use crate::figure::{Figure, TableData};
use crate::session::{interventions, Session};
use crate::trace::Trace;

fn settings<T: DeserializeOwned>(json: &str, what: &str) -> PyResult<T> {
    serde_json::from_str(json).map_err(|e| invalid(format!("{what} settings: {e}")))
}

fn json(v: &impl serde::Serialize) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| invalid(e.to_string()))
}

fn steps<'a>(what: &'a str, report: &'a mut dyn FnMut(Report)) -> impl FnMut(Progress) + 'a {
    move |p: Progress| report(Report { what, done: p.done, total: p.total, text: None })
}

/// The retrieval-head scan (`routelab scan retrieval`): `settings` are `ScanSettings`
/// (`lengths`, `depths`, `per_cell`, `seed`, `haystack`, `needle`, `question`, `digits`,
/// `teacher_forced`); `state` a file that keeps finished trials so a scan resumes. Returns the
/// result (`ScanResult` as JSON) and the per-head score view.
#[pyfunction]
#[pyo3(signature = (session, settings_json, interventions=None, state=None, progress=None))]
pub fn scan_retrieval(
    py: Python<'_>,
    session: &Session,
    settings_json: &str,
    interventions: Option<Vec<String>>,
    state: Option<PathBuf>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Figure)> {
    let job = ScanJob {
        settings: settings::<ScanSettings>(settings_json, "scan")?,
        interventions: self::interventions(&session.core, interventions)?,
        state,
    };
    let result = session.detached(py, progress, None, |cancel, report| job.execute(&session.core, &mut steps("scan", report), cancel))?;
    let view = views::head_scores(&result.head_scores(), &session.core.name);
    Ok((json(&result)?, Figure::new(view)))
}

/// Head scores from a scan's `HeadScores` as JSON or the CSV a scan wrote; None without either.
fn head_scores(scores_json: Option<&str>, scores_csv: Option<&std::path::Path>) -> PyResult<Option<HeadScores>> {
    match (scores_json, scores_csv) {
        (Some(j), None) => Ok(Some(settings(j, "head scores")?)),
        (None, Some(p)) => {
            let table = Table::read(p).map_err(|e| to_py(e, None))?;
            Ok(Some(HeadScores::from_table(&table, p).map_err(|e| to_py(e, None))?))
        }
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid("give the head scores once: a scan's result or the CSV it wrote, not both")),
    }
}

/// Needle accuracy with the top retrieval heads masked against random heads (`routelab analyze
/// ablation`). `scores` is a scan's `HeadScores` as JSON, or `scores_csv` the CSV a scan wrote;
/// `method` uniform or zero.
#[pyfunction]
#[pyo3(signature = (session, settings_json, method, scores_json=None, scores_csv=None, progress=None))]
pub fn ablation(
    py: Python<'_>,
    session: &Session,
    settings_json: &str,
    method: &str,
    scores_json: Option<&str>,
    scores_csv: Option<PathBuf>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Figure)> {
    let method = match method {
        "uniform" => HeadMethod::Uniform,
        "zero" => HeadMethod::Zero,
        other => return Err(invalid(format!("method {other:?}: expected uniform or zero"))),
    };
    let Some(scores) = head_scores(scores_json, scores_csv.as_deref())? else {
        return Err(invalid("give the head scores: a scan's result or the CSV it wrote"));
    };
    let mut s: AblationSettings = settings(settings_json, "ablation")?;
    s.method = method;
    let job = AblationJob { scores, settings: s };
    let context = scores_csv.as_ref().map(|p| format!("head scores {}", p.display()));
    job.check(&session.core).map_err(|e| to_py(e, context.as_deref()))?;
    let result =
        session.detached(py, progress, None, |cancel, report| job.execute(&session.core, &mut steps("ablation", report), cancel))?;
    let view = views::retrieval_ablation(&result, &session.core.name);
    Ok((json(&result)?, Figure::new(view)))
}

/// The experts each MoE layer selects where heads copy the needle (`routelab analyze
/// heads-experts`): `settings` are `HeadsExpertsSettings` (the needle settings, `teacher_forced`,
/// `threshold`). The heads are `heads` ((layer, head) pairs), else those above the threshold in
/// `scores_json` (a scan's `HeadScores`) or `scores_csv`, else in a scan of the same trials.
/// Returns the run (`HeadsExpertsRun` as JSON: `report` and `scan`) and the layer × expert view.
#[pyfunction]
#[pyo3(signature = (session, settings_json, heads=None, scores_json=None, scores_csv=None, progress=None))]
pub fn heads_experts(
    py: Python<'_>,
    session: &Session,
    settings_json: &str,
    heads: Option<Vec<(usize, usize)>>,
    scores_json: Option<&str>,
    scores_csv: Option<PathBuf>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Figure)> {
    let choice = match (heads, head_scores(scores_json, scores_csv.as_deref())?) {
        (Some(h), None) => HeadChoice::Heads(h),
        (None, Some(s)) => HeadChoice::Scores(s),
        (None, None) => HeadChoice::Scan,
        (Some(_), Some(_)) => return Err(invalid("give the heads or the head scores, not both")),
    };
    let job = HeadsExpertsJob { settings: settings::<HeadsExpertsSettings>(settings_json, "heads-experts")?, heads: choice };
    let context = scores_csv.as_ref().map(|p| format!("head scores {}", p.display()));
    let run = session
        .detached(py, progress, context.as_deref(), |cancel, report| job.execute(&session.core, &mut steps("trials", report), cancel))?;
    let view = views::heads_experts(&run.report, &session.core.name);
    Ok((json(&run)?, Figure::new(view)))
}

/// The report as JSON, each result by file stem (a `Figure` or a `TableData`), the files skipped.
type SpecializationResult = (String, Vec<(String, Py<PyAny>)>, Vec<PathBuf>);

/// Expert specialization over a labelled corpus (`routelab analyze specialization`): the
/// report (as `report.json`), each result by the file stem the CLI writes it under (a figure, or
/// a table alone), and the corpus files skipped.
#[pyfunction]
#[pyo3(signature = (session, settings_json, progress=None))]
pub fn specialization(
    py: Python<'_>,
    session: &Session,
    settings_json: &str,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<SpecializationResult> {
    let job = SpecializationJob { settings: settings::<SpecializationSettings>(settings_json, "specialization")? };
    let output =
        session.detached(py, progress, None, |cancel, report| job.execute(&session.core, &mut steps("routing corpus", report), cancel))?;
    let model = &session.core.name;
    let mut results = vec![];
    for (stem, export) in output.exports(model, &|t| session.core.tokenizer.piece(t)) {
        let object = match export {
            Export::View(v) => Py::new(py, Figure::new(v))?.into_any(),
            Export::Table(t) => Py::new(py, TableData::new(t))?.into_any(),
        };
        results.push((stem, object));
    }
    Ok((output.report_json(model).to_string(), results, output.skipped))
}

/// What changed between two traces of the same prompt (`RunDiff` as JSON).
#[pyfunction]
pub fn diff(a: &Trace, b: &Trace) -> PyResult<String> {
    json(&run_diff(&a.core, &b.core).map_err(|e| to_py(e, None))?)
}

/// A compare cell's summary: `b`'s interventions teacher-forced on `a`'s tokens (next-token KL
/// per position), first divergence, flip rate per MoE layer.
#[pyfunction]
#[pyo3(signature = (session, a, b, progress=None))]
pub fn compare(py: Python<'_>, session: &Session, a: &Trace, b: &Trace, progress: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
    let job = CompareJob { a: a.core.clone(), b: b.core.clone(), b_interventions: b.core.meta.interventions.clone() };
    let summary =
        session.detached(py, progress, None, |cancel, report| job.execute(&session.core, &mut steps("compare", report), cancel))?;
    json(&summary)
}

/// Routing fidelity (`routelab analyze routing-fidelity`): `prompts` in session `a` and in
/// session `b` (the same model in another dtype, on another device, or a GGUF quant of it);
/// `names` say what each setting is (default: their device and dtype). Returns the report as
/// JSON and its heat map.
#[pyfunction]
#[pyo3(signature = (a, b, prompts, max_new_tokens, names=None, progress=None))]
pub fn routing_fidelity(
    py: Python<'_>,
    a: &Session,
    b: &Session,
    prompts: Vec<String>,
    max_new_tokens: usize,
    names: Option<(String, String)>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Figure)> {
    let settings = FidelitySettings { prompts: prompts.iter().map(|p| Prompt::text(p)).collect(), max_new_tokens };
    let describe = |s: &Session| {
        let info = s.core.info();
        format!("{} {}", info.device, info.dtype).to_lowercase()
    };
    let (na, nb) = names.unwrap_or_else(|| (describe(a), describe(b)));
    let report = a.detached(py, progress, None, |cancel, report| {
        // The second session is held too, unless it is the first.
        let _b = (!std::ptr::eq(a, b)).then(|| b.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        fidelity(&a.core, &b.core, (&na, &nb), &settings, &mut steps("prompts", report), cancel)
    })?;
    Ok((json(&report)?, Figure::new(views::routing_fidelity(&report))))
}

/// An activation-patching sweep (`routelab patch`): `site` and `metric` in the CLI's forms
/// (`resid`…; `logit-diff: A, B`, `prob: A`, `kl`). Returns the result as JSON and its heat map.
#[pyfunction]
#[pyo3(signature = (session, clean, corrupt, site, metric, layers=None, positions=None, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn patch(
    py: Python<'_>,
    session: &Session,
    clean: &str,
    corrupt: &str,
    site: &str,
    metric: &str,
    layers: Option<Vec<usize>>,
    positions: Option<Vec<usize>>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<(String, Figure)> {
    let settings = PatchSettings {
        site: SweepSite::parse(site).map_err(|e| to_py(e, None))?,
        metric: Metric::parse(metric).map_err(|e| to_py(e, None))?,
        layers,
        positions,
    };
    let job = PatchJob { clean: Prompt::text(clean), corrupt: Prompt::text(corrupt), settings };
    let result = session.detached(py, progress, None, |cancel, report| job.execute(&session.core, &mut steps("cells", report), cancel))?;
    Ok((json(&result)?, Figure::new(views::patching(&result, &session.core.name))))
}

/// Direct logit attribution, the logit lens and what each selected expert promotes
/// (`routelab attribute`): `settings` are `AttributionSettings` (`position`, `target`, `top`).
/// Returns the result as JSON, the attribution bars (`plot_top` components) and the lens map.
#[pyfunction]
#[pyo3(signature = (session, prompt, settings_json, plot_top=20))]
pub fn attribute(
    py: Python<'_>,
    session: &Session,
    prompt: &str,
    settings_json: &str,
    plot_top: usize,
) -> PyResult<(String, Figure, Figure)> {
    let job = AttributeJob { prompt: Prompt::text(prompt), settings: settings(settings_json, "attribute")? };
    let result = session.detached(py, None, None, |cancel, _| job.execute(&session.core, &mut |_| {}, cancel))?;
    let core = &session.core;
    Ok((
        json(&result)?,
        Figure::new(views::attribution(&result, &core.name, plot_top)),
        Figure::new(views::logit_lens(&result, &core.name)),
    ))
}
