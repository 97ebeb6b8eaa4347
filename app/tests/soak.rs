//! Long sessions through the GUI's job path (egui_kittest steps the real app; its worker runs
//! the jobs): one prompt cell run again and again, each run autosaved with its trace, must not
//! grow the process's memory with the number of runs; and the UI keeps drawing frames while a
//! retrieval scan runs on the worker.
//!
//! `ROUTELAB_SOAK_RUNS` sets the number of runs (200 by default, CI's short form; the long
//! form is 2000). Figures are printed (`--nocapture`).

#![cfg(target_os = "linux")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use routelab::gui::dialogs::FixedDialogs;
use routelab::gui::state::Action;
use routelab::gui::WorkbenchApp;
use routelab::notebook::CellKind;

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("routelab-soak-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Resident memory of this process, from /proc (bytes).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn harness(dir: &std::path::Path) -> Harness<'static, WorkbenchApp> {
    let dir = dir.to_path_buf();
    let mut h = Harness::builder().with_size([1400.0, 1000.0]).allow_missing_glyphs().build_eframe(move |cc| {
        let exports = dir.join("exports");
        let mut app = WorkbenchApp::new(
            &cc.egui_ctx,
            dir,
            Some("tiny-moe".into()),
            Box::new(FixedDialogs { dir: exports, given: Default::default() }),
        );
        // Every finished run is saved at the next frame, as a user's edits would be.
        app.state.doc.autosave_delay = Duration::ZERO;
        app
    });
    wait(&mut h, "the model to load", |a| a.state.model.info.is_some() || a.state.model.error.is_some());
    assert!(h.state().state.model.error.is_none(), "{:?}", h.state().state.model.error);
    h
}

fn wait(h: &mut Harness<'_, WorkbenchApp>, what: &str, done: impl Fn(&WorkbenchApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        h.step();
        std::thread::sleep(Duration::from_millis(1));
        assert!(start.elapsed() < Duration::from_secs(300), "timed out waiting for {what}; messages: {:?}", h.state().state.ui.messages);
    }
    h.step();
}

fn idle(a: &WorkbenchApp) -> bool {
    !a.state.busy() && a.state.jobs.queue.is_empty()
}

fn apply(h: &mut Harness<'_, WorkbenchApp>, action: Action) {
    let app = h.state_mut();
    app.state.apply(action, &app.worker, &mut *app.dialogs);
    h.step();
}

#[test]
fn thousands_of_runs_do_not_grow_memory() {
    let runs: usize = std::env::var("ROUTELAB_SOAK_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let dir = fresh_dir("runs");
    let mut h = harness(&dir);
    let cell = h
        .state()
        .state
        .doc
        .notebook
        .cells
        .iter()
        .find(|c| matches!(c.kind, CellKind::Prompt { .. }))
        .map(|c| c.id)
        .expect("the example notebook has a prompt cell");
    let run_once = |h: &mut Harness<'_, WorkbenchApp>| {
        apply(h, Action::RunCell(cell));
        wait(h, "the run", |a| idle(a) && a.state.results.traces.contains_key(&cell) && a.state.doc.dirty_since.is_none());
    };
    // Warm up: allocator pools, fonts, the first layouts of every view.
    let warmup = 20.min(runs / 4).max(1);
    for _ in 0..warmup {
        run_once(&mut h);
    }
    let trace_bytes = std::fs::read_dir(dir.join("traces")).unwrap().flatten().map(|e| e.metadata().unwrap().len()).max().unwrap();
    let start = resident_bytes();
    let started = Instant::now();
    let mut peak = start;
    for i in 0..runs {
        run_once(&mut h);
        peak = peak.max(resident_bytes());
        if (i + 1) % 100 == 0 {
            eprintln!("soak: {} runs, resident {:.1} MiB", i + 1, resident_bytes() as f64 / 1048576.0);
        }
    }
    let end = resident_bytes();
    let a = &h.state().state;
    eprintln!(
        "soak: {runs} runs in {:.0} s after {warmup} warm-up runs; resident {:.1} MiB at the start, {:.1} MiB at the end, \
         peak {:.1} MiB; each run's trace {:.0} KiB; {} messages kept",
        started.elapsed().as_secs_f64(),
        start as f64 / 1048576.0,
        end as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        trace_bytes as f64 / 1024.0,
        a.ui.messages.len()
    );
    // Nothing accumulates per run: one result per cell, a bounded message list, one trace file.
    assert_eq!(a.results.traces.len(), 1);
    assert!(a.ui.messages.len() <= 100, "{} messages", a.ui.messages.len());
    assert!(a.doc.notebook.cells.iter().all(|c| c.id != 0));
    // If each run kept a quarter of its trace, memory would grow by runs × trace / 4.
    let growth = end.saturating_sub(start);
    assert!(
        growth < (runs as u64) * trace_bytes / 4,
        "resident memory grew by {growth} bytes over {runs} runs of {trace_bytes}-byte traces"
    );
}

#[test]
fn the_ui_keeps_drawing_while_a_retrieval_scan_runs() {
    let dir = fresh_dir("scan");
    let mut h = harness(&dir);
    apply(&mut h, Action::AddScan(None));
    let scan = h.state().state.doc.notebook.cells.last().map(|c| c.id).unwrap();
    assert!(matches!(h.state().state.doc.notebook.cell(scan).unwrap().kind, CellKind::RetrievalScan { .. }));
    apply(&mut h, Action::RunCell(scan));
    let mut frames = vec![];
    while !idle(h.state()) {
        let t = Instant::now();
        h.step();
        frames.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(16));
        assert!(frames.len() < 100_000, "the scan never finished");
    }
    frames.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "scan: {} frames while it ran; frame time median {:.2} ms, 99th percentile {:.2} ms, max {:.2} ms",
        frames.len(),
        ms(frames[frames.len() / 2]),
        ms(frames[frames.len() * 99 / 100]),
        ms(*frames.last().unwrap())
    );
    assert!(h.state().state.ui.messages.iter().all(|(_, m)| !m.contains("failed")), "{:?}", h.state().state.ui.messages);
    // A UI that waited on the worker would draw one frame for the whole scan.
    assert!(frames.len() >= 10, "only {} frames were drawn while the scan ran", frames.len());
}
