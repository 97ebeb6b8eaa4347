//! The worker thread: owns the loaded model (the `Session`) and does every long job — loading,
//! generation, compare, scans, corpus analyses — reporting through a channel so the UI never
//! blocks. The UI polls events each frame; the worker asks for a repaint after each one.
//! Listing a hub repo's quants needs no model, so it runs on a thread of its own and reports
//! through the same channel: it never waits behind a long job.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use routelab_model::hub::{Hub, QuantListing};
use routelab_model::interventions::Interventions;
use routelab_model::session::{LoadOptions, ModelInfo, RunEvent, Session};
use routelab_model::source::{LoadProgress, ModelSource};
use routelab_model::store::CaptureStore;
use routelab_model::tokenizer::Tokenizer;
use routelab_probes::analysis::retrieval::Progress;
use routelab_probes::jobs::attribute::AttributeJob;
use routelab_probes::jobs::compare::{CompareJob, CompareSummary};
use routelab_probes::jobs::patch::PatchJob;
use routelab_probes::jobs::run::RunJob;
use routelab_probes::jobs::scan::{ScanJob, ScanSettings};
use routelab_probes::jobs::specialization::{SpecializationJob, SpecializationSettings};
use routelab_probes::jobs::{Cancel, Job};
use routelab_probes::trace::Trace;

use crate::notebook::{self, AttributionSummary, PatchSummary, RunSummary, ScanSummary, SpecializationSummary};

/// What the UI asks the worker to do: load a model, or run a job for a cell.
pub enum Command {
    Load {
        model: String,
        device: String,
        dtype: Option<String>,
    },
    /// Run a prompt cell; its trace goes to `trace_rel` in the notebook directory `dir`.
    Run {
        cell: u64,
        job: RunJob,
        dir: PathBuf,
        trace_rel: String,
    },
    /// Compare the runs traced in `a` and `b`; `b` ran with `b_interventions`.
    Compare {
        cell: u64,
        a: PathBuf,
        b: PathBuf,
        b_interventions: Interventions,
    },
    Scan {
        cell: u64,
        settings: ScanSettings,
    },
    Specialization {
        cell: u64,
        settings: SpecializationSettings,
    },
    Patch {
        cell: u64,
        job: PatchJob,
    },
    Attribute {
        cell: u64,
        job: AttributeJob,
    },
}

pub enum Event {
    LoadProgress(LoadProgress),
    Loaded {
        info: ModelInfo,
        has_chat_template: bool,
        /// A copy for the UI thread, which counts prompts' tokens as they are typed.
        tokenizer: Arc<Tokenizer>,
    },
    LoadFailed(String),
    /// The quants of the hub repo `repo` (`owner/name[@revision]`), or why they are unknown.
    QuantsListed {
        repo: String,
        listing: Result<QuantListing, String>,
    },
    /// The prompt's rows of the run's capture store.
    Prefilled {
        cell: u64,
        rows: CaptureStore,
        layers: usize,
        heads: usize,
        experts: Vec<usize>,
    },
    /// One generated token's row, and the text it added.
    Token {
        cell: u64,
        rows: CaptureStore,
        text: String,
    },
    /// The run's trace is written (durably) at `summary.trace` in `dir`.
    RunDone {
        cell: u64,
        dir: PathBuf,
        summary: RunSummary,
        trace: Box<Trace>,
        interventions: Interventions,
    },
    Progress {
        cell: u64,
        progress: Progress,
    },
    CompareDone {
        cell: u64,
        summary: CompareSummary,
    },
    ScanDone {
        cell: u64,
        summary: ScanSummary,
    },
    SpecializationDone {
        cell: u64,
        summary: SpecializationSummary,
    },
    /// A patching sweep ended; cancelled, `summary.result.incomplete` and the cells done so far.
    PatchDone {
        cell: u64,
        summary: PatchSummary,
    },
    AttributeDone {
        cell: u64,
        summary: Box<AttributionSummary>,
    },
    Failed {
        cell: Option<u64>,
        message: String,
    },
}

/// The UI's handle on the worker.
pub struct Worker {
    commands: Sender<Command>,
    pub events: Receiver<Event>,
    /// For threads other than the worker's (quant listings).
    sender: Sender<Event>,
    wake: Arc<dyn Fn() + Send + Sync>,
    /// Set by the UI to stop the current job; cleared when a job starts.
    pub cancel: Cancel,
    /// A job is running.
    pub busy: Arc<AtomicBool>,
}

impl Worker {
    /// Starts the thread; `wake` is called after every event (egui's request_repaint).
    /// Without its worker the GUI can do nothing: the OS refusing a thread at launch ends it.
    #[allow(clippy::expect_used)]
    pub fn spawn(wake: impl Fn() + Send + Sync + 'static) -> Worker {
        let (cmd_tx, cmd_rx) = channel::<Command>();
        let (ev_tx, ev_rx) = channel::<Event>();
        let cancel = Cancel::new();
        let busy = Arc::new(AtomicBool::new(false));
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(wake);
        let (c, b, w, sender) = (cancel.clone(), busy.clone(), wake.clone(), ev_tx.clone());
        std::thread::Builder::new()
            .name("routelab-worker".into())
            .spawn(move || {
                let mut state = WorkerState { session: None, events: ev_tx, wake: Box::new(move || w()), cancel: c };
                for cmd in cmd_rx {
                    b.store(true, Ordering::SeqCst);
                    state.cancel.reset();
                    state.handle(cmd);
                    b.store(false, Ordering::SeqCst);
                    (state.wake)();
                }
            })
            .expect("spawning the worker thread");
        Worker { commands: cmd_tx, events: ev_rx, sender, wake, cancel, busy }
    }

    /// Lists the GGUF quants of a hub repo (from the hub, else the local cache) on a thread of
    /// its own; answers with [`Event::QuantsListed`].
    pub fn list_quants(&self, repo: String, revision: Option<String>) {
        let id = routelab_model::hub::repo_id(&repo, revision.as_deref());
        let (events, wake, reply) = (self.sender.clone(), self.wake.clone(), id.clone());
        let spawned = std::thread::Builder::new().name("routelab-hub-list".into()).spawn(move || {
            let listing = Hub::from_env().quants(&repo, revision.as_deref()).map_err(|e| e.to_string());
            let _ = events.send(Event::QuantsListed { repo: reply, listing });
            wake();
        });
        if let Err(e) = spawned {
            let _ = self.sender.send(Event::QuantsListed { repo: id, listing: Err(format!("cannot start a thread: {e}")) });
        }
    }

    pub fn send(&self, cmd: Command) {
        // The worker lives as long as the app; a send can only fail during shutdown.
        let _ = self.commands.send(cmd);
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }
}

struct WorkerState {
    session: Option<Session>,
    events: Sender<Event>,
    wake: Box<dyn Fn() + Send>,
    cancel: Cancel,
}

impl WorkerState {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
        (self.wake)();
    }

    fn handle(&mut self, cmd: Command) {
        let cell = match &cmd {
            Command::Load { .. } => None,
            Command::Run { cell, .. }
            | Command::Compare { cell, .. }
            | Command::Scan { cell, .. }
            | Command::Specialization { cell, .. }
            | Command::Patch { cell, .. }
            | Command::Attribute { cell, .. } => Some(*cell),
        };
        if let Err(message) = self.try_handle(cmd) {
            self.emit(Event::Failed { cell, message });
        }
    }

    fn session(&self) -> Result<&Session, String> {
        self.session.as_ref().ok_or_else(|| "no model is loaded".to_string())
    }

    fn try_handle(&mut self, cmd: Command) -> Result<(), String> {
        match cmd {
            Command::Load { model, device, dtype } => {
                self.session = None;
                let source = ModelSource::parse(&model).map_err(explain);
                let loaded = source.and_then(|source| {
                    let options = LoadOptions::parse(&device, dtype.as_deref()).map_err(explain)?;
                    let events = self.events.clone();
                    let cancel = self.cancel.clone();
                    Session::load_cancellable(&source, &options, &mut |p| {
                        let _ = events.send(Event::LoadProgress(p));
                        (self.wake)();
                        !cancel.is_cancelled()
                    })
                    .map_err(explain)
                });
                match loaded {
                    Ok(s) => {
                        let info = s.info();
                        let has_chat_template = s.chat_template.is_some();
                        let tokenizer = Arc::new(s.tokenizer.clone());
                        self.session = Some(s);
                        self.emit(Event::Loaded { info, has_chat_template, tokenizer });
                    }
                    Err(e) => self.emit(Event::LoadFailed(e)),
                }
                Ok(())
            }
            Command::Run { cell, job, dir, trace_rel } => {
                let s = self.session()?;
                let c = s.config();
                let (layers, heads) = (c.num_layers, c.attention.num_heads);
                let experts: Vec<usize> = (0..layers).map(|l| c.moe(l).map(|m| m.routing.num_experts).unwrap_or(0)).collect();
                let out = job
                    .execute(
                        s,
                        &mut |ev| {
                            self.emit(match ev {
                                RunEvent::Prefilled { store } => {
                                    Event::Prefilled { cell, rows: store.clone(), layers, heads, experts: experts.clone() }
                                }
                                RunEvent::Token { store, text } => {
                                    Event::Token { cell, rows: store.slice(store.len() - 1, store.len()), text: text.to_string() }
                                }
                            })
                        },
                        &self.cancel,
                    )
                    .map_err(explain)?;
                notebook::write_trace(&dir, &trace_rel, &out.trace).map_err(|e| e.to_string())?;
                let summary = RunSummary {
                    trace: trace_rel,
                    generated_text: out.text,
                    prompt_tokens: out.prompt_tokens,
                    generated_tokens: out.generated_tokens,
                    stop: out.stop.describe().into(),
                    prefill_seconds: out.prefill_seconds,
                    decode_seconds: out.decode_seconds,
                    model: s.name.clone(),
                };
                let interventions = out.trace.meta.interventions.clone();
                self.emit(Event::RunDone { cell, dir, summary, trace: Box::new(out.trace), interventions });
                Ok(())
            }
            Command::Compare { cell, a, b, b_interventions } => {
                let s = self.session()?;
                let a = Trace::read(&a).map_err(explain)?;
                let b = Trace::read(&b).map_err(explain)?;
                let summary = CompareJob { a, b, b_interventions }.execute(s, &mut |_| {}, &self.cancel).map_err(explain)?;
                self.emit(Event::CompareDone { cell, summary });
                Ok(())
            }
            Command::Scan { cell, settings } => {
                let s = self.session()?;
                let job = ScanJob { settings, ..Default::default() };
                let r = job.execute(s, &mut |p| self.emit(Event::Progress { cell, progress: p }), &self.cancel).map_err(explain)?;
                if r.incomplete {
                    return Err("scan cancelled".into());
                }
                self.emit(Event::ScanDone {
                    cell,
                    summary: ScanSummary { scores: r.head_scores(), accuracy: r.accuracy(), trials: r.trials.len(), model: s.name.clone() },
                });
                Ok(())
            }
            Command::Specialization { cell, settings } => {
                let s = self.session()?;
                let out = SpecializationJob { settings }
                    .execute(s, &mut |p| self.emit(Event::Progress { cell, progress: p }), &self.cancel)
                    .map_err(explain)?;
                let (routing, report) = (out.routing, out.report);
                self.emit(Event::SpecializationDone {
                    cell,
                    summary: SpecializationSummary {
                        domains: routing.domains.clone(),
                        tokens: routing.tokens.len(),
                        layers: report
                            .iter()
                            .map(|l| (l.layer, l.balance, l.mi_class_bits, l.mi_domain_bits, l.vocabulary_specialization))
                            .collect(),
                        model: s.name.clone(),
                    },
                });
                Ok(())
            }
            Command::Patch { cell, job } => {
                let s = self.session()?;
                let result = job.execute(s, &mut |p| self.emit(Event::Progress { cell, progress: p }), &self.cancel).map_err(explain)?;
                self.emit(Event::PatchDone { cell, summary: PatchSummary { result, model: s.name.clone() } });
                Ok(())
            }
            Command::Attribute { cell, job } => {
                let s = self.session()?;
                let result = job.execute(s, &mut |_| {}, &self.cancel).map_err(explain)?;
                self.emit(Event::AttributeDone { cell, summary: Box::new(AttributionSummary { result, model: s.name.clone() }) });
                Ok(())
            }
        }
    }
}

/// An error's message and what to do about it, as the GUI shows it.
fn explain(e: impl Into<routelab_probes::ProbeError>) -> String {
    e.into().explained()
}
