//! The worker thread: owns the loaded model (the `Session`) and does every long job — loading,
//! generation, compare, scans, corpus analyses — reporting through a channel so the UI never
//! blocks. The UI polls events each frame; the worker asks for a repaint after each one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::Interventions;
use routelab_model::session::{parse_device, LoadOptions, ModelInfo, Prompt, RunEvent, RunRequest, Session};
use routelab_model::source::{LoadProgress, ModelSource};
use routelab_model::store::CaptureStore;
use routelab_probes::analysis::ablation::kl_from_logits;
use routelab_probes::analysis::corpus::{classes, read_corpus, route_corpus, specialization};
use routelab_probes::analysis::diff::diff;
use routelab_probes::analysis::needle::{build_trials, NeedleGrid};
use routelab_probes::analysis::retrieval::{scan, Progress, ScanMode};
use routelab_probes::trace::Trace;

use crate::notebook::{
    CompareSummary, GenerationSettings, RunSummary, ScanSettings, ScanSummary, SpecializationSettings, SpecializationSummary,
};

pub enum Command {
    Load {
        model: String,
        device: String,
    },
    Run {
        cell: u64,
        prompt: Prompt,
        settings: GenerationSettings,
        interventions: Interventions,
        capture: CaptureSpec,
        trace_path: PathBuf,
        trace_rel: String,
    },
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
}

pub enum Event {
    LoadProgress(LoadProgress),
    Loaded {
        info: ModelInfo,
        has_chat_template: bool,
    },
    LoadFailed(String),
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
    RunDone {
        cell: u64,
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
    Failed {
        cell: Option<u64>,
        message: String,
    },
}

/// The UI's handle on the worker.
pub struct Worker {
    commands: Sender<Command>,
    pub events: Receiver<Event>,
    /// Set by the UI to stop the current job; cleared when a job starts.
    pub cancel: Arc<AtomicBool>,
    /// A job is running.
    pub busy: Arc<AtomicBool>,
}

impl Worker {
    /// Starts the thread; `wake` is called after every event (egui's request_repaint).
    pub fn spawn(wake: impl Fn() + Send + 'static) -> Worker {
        let (cmd_tx, cmd_rx) = channel::<Command>();
        let (ev_tx, ev_rx) = channel::<Event>();
        let cancel = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicBool::new(false));
        let (c, b) = (cancel.clone(), busy.clone());
        std::thread::Builder::new()
            .name("routelab-worker".into())
            .spawn(move || {
                let mut state = WorkerState { session: None, events: ev_tx, wake: Box::new(wake), cancel: c };
                for cmd in cmd_rx {
                    b.store(true, Ordering::SeqCst);
                    state.cancel.store(false, Ordering::SeqCst);
                    state.handle(cmd);
                    b.store(false, Ordering::SeqCst);
                    (state.wake)();
                }
            })
            .expect("spawning the worker thread");
        Worker { commands: cmd_tx, events: ev_rx, cancel, busy }
    }

    pub fn send(&self, cmd: Command) {
        // The worker lives as long as the app; a send can only fail during shutdown.
        let _ = self.commands.send(cmd);
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }
}

struct WorkerState {
    session: Option<Session>,
    events: Sender<Event>,
    wake: Box<dyn Fn() + Send>,
    cancel: Arc<AtomicBool>,
}

impl WorkerState {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
        (self.wake)();
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    fn handle(&mut self, cmd: Command) {
        let cell = match &cmd {
            Command::Load { .. } => None,
            Command::Run { cell, .. }
            | Command::Compare { cell, .. }
            | Command::Scan { cell, .. }
            | Command::Specialization { cell, .. } => Some(*cell),
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
            Command::Load { model, device } => {
                self.session = None;
                let source = ModelSource::parse(&model).map_err(|e| e.to_string());
                let loaded = source.and_then(|source| {
                    let device = parse_device(&device).map_err(|e| e.to_string())?;
                    let events = self.events.clone();
                    let cancel = self.cancel.clone();
                    Session::load_cancellable(&source, &LoadOptions::for_device(device), &mut |p| {
                        let _ = events.send(Event::LoadProgress(p));
                        (self.wake)();
                        !cancel.load(Ordering::SeqCst)
                    })
                    .map_err(|e| e.to_string())
                });
                match loaded {
                    Ok(s) => {
                        let info = s.info();
                        let has_chat_template = s.chat_template.is_some();
                        self.session = Some(s);
                        self.emit(Event::Loaded { info, has_chat_template });
                    }
                    Err(e) => self.emit(Event::LoadFailed(e)),
                }
                Ok(())
            }
            Command::Run { cell, prompt, settings, mut interventions, capture, trace_path, trace_rel } => {
                let s = self.session()?;
                let tokens = s.encode(&prompt).map_err(|e| e.to_string())?;
                s.fill_head_means(&mut interventions, &tokens).map_err(|e| e.to_string())?;
                let c = s.config();
                let experts: Vec<usize> = (0..c.num_layers).map(|l| c.moe(l).map(|m| m.routing.num_experts).unwrap_or(0)).collect();
                let req = RunRequest {
                    tokens,
                    max_new_tokens: settings.max_new_tokens,
                    sampling: settings.sampling.clone(),
                    // Logits make compare cells possible.
                    capture: capture.with("logits"),
                    interventions: interventions.clone(),
                    stop_at_eos: settings.stop_at_eos,
                };
                let (layers, heads) = (c.num_layers, c.attention.num_heads);
                let events = self.events.clone();
                let cancel = self.cancel.clone();
                let wake = &self.wake;
                let record = s
                    .run(&req, &mut |ev| {
                        let e = match ev {
                            RunEvent::Prefilled { store } => {
                                Event::Prefilled { cell, rows: store.clone(), layers, heads, experts: experts.clone() }
                            }
                            RunEvent::Token { store, text } => {
                                Event::Token { cell, rows: store.slice(store.len() - 1, store.len()), text: text.to_string() }
                            }
                        };
                        let _ = events.send(e);
                        wake();
                        !cancel.load(Ordering::SeqCst)
                    })
                    .map_err(|e| e.to_string())?;
                let (generated_text, prompt_tokens, generated_tokens) = (record.text.clone(), record.prompt_len, record.generated().len());
                let (stop, prefill_seconds, decode_seconds) = (record.stop, record.prefill_seconds, record.decode_seconds);
                let trace = Trace::from_run(record, &s.name, s.config(), &prompt.display());
                if let Some(dir) = trace_path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                trace.write(&trace_path).map_err(|e| e.to_string())?;
                let summary = RunSummary {
                    trace: trace_rel,
                    generated_text,
                    prompt_tokens,
                    generated_tokens,
                    stop: stop.describe().into(),
                    prefill_seconds,
                    decode_seconds,
                    model: s.name.clone(),
                };
                self.emit(Event::RunDone { cell, summary, trace: Box::new(trace), interventions });
                Ok(())
            }
            Command::Compare { cell, a, b, b_interventions } => {
                let s = self.session()?;
                let ta = Trace::read(&a).map_err(|e| e.to_string())?;
                let tb = Trace::read(&b).map_err(|e| e.to_string())?;
                let d = diff(&ta, &tb).map_err(|e| e.to_string())?;
                // KL along a's sequence: b's interventions teacher-forced on a's tokens, so
                // both distributions condition on the same context.
                let forced = |iv: &Interventions| -> Result<Vec<Vec<f32>>, String> {
                    let req = RunRequest::forward(ta.tokens().to_vec(), CaptureSpec::items(&["logits"]), iv.clone());
                    let run = s.run(&req, &mut |_| true).map_err(|e| e.to_string())?;
                    Ok(run.logits().into_iter().map(|r| r.to_vec()).collect())
                };
                let la = forced(&ta.meta.interventions)?;
                let lb = forced(&b_interventions)?;
                let kl = la.iter().zip(&lb).map(|(x, y)| kl_from_logits(x, y)).collect();
                self.emit(Event::CompareDone {
                    cell,
                    summary: CompareSummary { kl, first_divergence: d.first_divergence, flip_rates: d.flip_rates() },
                });
                Ok(())
            }
            Command::Scan { cell, settings } => {
                let s = self.session()?;
                let path = routelab_model::source::assets_dir().join("texts/haystack.txt");
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let grid = NeedleGrid {
                    lengths: settings.lengths.clone(),
                    depths: settings.depths.clone(),
                    per_cell: settings.per_cell,
                    seed: settings.seed,
                };
                let trials = build_trials(s, &text, &crate::gui::needle_format_for(s), &grid).map_err(|e| e.to_string())?;
                let mode = if settings.teacher_forced { ScanMode::TeacherForced } else { ScanMode::Generate };
                let events = self.events.clone();
                let cancel = self.cancel.clone();
                let wake = &self.wake;
                let r = scan(s, &trials, mode, &Interventions::default(), None, &mut |p| {
                    let _ = events.send(Event::Progress { cell, progress: p });
                    wake();
                    !cancel.load(Ordering::SeqCst)
                })
                .map_err(|e| e.to_string())?;
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
                let (docs, _) = read_corpus(std::path::Path::new(&settings.corpus)).map_err(|e| e.to_string())?;
                let events = self.events.clone();
                let cancel = self.cancel.clone();
                let wake = &self.wake;
                let routing = route_corpus(s, &docs, settings.chunk_tokens, settings.max_tokens, &mut |p| {
                    let _ = events.send(Event::Progress { cell, progress: p });
                    wake();
                    !cancel.load(Ordering::SeqCst)
                })
                .map_err(|e| e.to_string())?;
                let code: Vec<String> = ["code", "rust", "python"].iter().map(|s| s.to_string()).collect();
                let report = specialization(&routing, &classes(&routing, &code));
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
                let _ = self.cancelled();
                Ok(())
            }
        }
    }
}
