//! Crash-safe saving: a child process saves a notebook over and over through the workbench's
//! own save path (a run's trace written as the worker writes it, the result recorded and the
//! notebook saved as the GUI's autosave does, now and then "save as"), and the parent kills it
//! with SIGKILL at random moments. After every kill the notebook must open, be exactly one of
//! the versions the child was writing (the last it finished, or the one it was saving), and
//! every trace it references must exist, read, and be the trace of that cell's recorded run.
//! Then opening it must clear what the kill left (orphan traces, temporary files) and nothing
//! else.
//!
//! `ROUTELAB_KILLS` sets the number of kills (100 by default; the long form is 1000),
//! `ROUTELAB_KILL_SEED` the seed of the kill delays. The child is this test binary run again
//! with [`CHILD_DIR`] set, executing only `child_saves_until_killed`.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use routelab::gui::document::Document;
use routelab::notebook::{self, prompt_cell, Cell, CellKind, Notebook, RunSummary};
use routelab_model::hooks::HookPoint;
use routelab_model::interventions::Interventions;
use routelab_model::session::Prompt;
use routelab_model::store::{CaptureStore, Values};
use routelab_probes::trace::{Trace, TraceMeta};

/// The notebook directory the child saves into; set only in the child.
const CHILD_DIR: &str = "ROUTELAB_CRASH_CHILD_DIR";
/// The child's log: one line per step begun or finished (see [`Phase`]).
const CHILD_LOG: &str = "ROUTELAB_CRASH_CHILD_LOG";
const READY: &str = "ROUTELAB-CRASH-CHILD-READY";
/// Prompt cells in every version.
const PROMPT_CELLS: usize = 3;

/// A trace that says which run it is: its prompt is the text the run's summary records.
/// Logits make it large enough (about 128 KiB) for kills to land inside its write.
fn trace_of(run: &str) -> Trace {
    let t = 32;
    let vocab = 1024;
    let mut store = CaptureStore::new(0);
    store.append(HookPoint::Tokens, &[], Values::U32((0..t as u32).collect())).unwrap();
    store.append(HookPoint::Logits, &[vocab], Values::F32((0..t * vocab).map(|i| (i % 97) as f32).collect())).unwrap();
    store.pieces = (0..t).map(|i| format!("t{i}")).collect();
    let meta = TraceMeta {
        model: "crash-test".into(),
        architecture: "llama".into(),
        config: serde_json::json!({}),
        prompt: run.into(),
        generated_from: t / 2,
        interventions: Interventions::default(),
        capture: Default::default(),
        sampling: serde_json::Value::Null,
        routelab_version: "test".into(),
        replay: None,
    };
    Trace { meta, store }
}

fn run_text(cell: u64, version: u64) -> String {
    format!("cell {cell} version {version}")
}

/// The version a notebook is at: its first cell, a markdown cell `version {v}`.
fn version_of(nb: &Notebook) -> Option<u64> {
    match &nb.cells.first()?.kind {
        CellKind::Markdown { text } => text.strip_prefix("version ")?.parse().ok(),
        _ => None,
    }
}

fn prompt_ids(nb: &Notebook) -> Vec<u64> {
    nb.cells.iter().filter(|c| matches!(c.kind, CellKind::Prompt { .. })).map(|c| c.id).collect()
}

/// One run of `cell`, as the GUI does it: the worker writes the trace (`notebook::write_trace`
/// at the path `Document::begin_run` gives), then the state records the result.
fn run_cell(doc: &mut Document, cell: u64, version: u64) {
    let rel = doc.begin_run(cell);
    let text = run_text(cell, version);
    notebook::write_trace(&doc.dir, &rel, &trace_of(&text)).unwrap();
    let summary = RunSummary {
        trace: rel,
        generated_text: text,
        prompt_tokens: 16,
        generated_tokens: 16,
        stop: "max tokens".into(),
        prefill_seconds: 0.0,
        decode_seconds: 0.0,
        model: "crash-test".into(),
    };
    assert!(doc.record_run(cell, summary, Interventions::default()));
}

/// Makes version `v` of the notebook and saves it, logging each step to `log`: one cell re-run
/// (two every third version); every fifth version a prompt cell deleted and a new one run in
/// its place; every tenth a "save as" into `copies/v{v}` before carrying on in the original.
fn make_version(doc: &mut Document, v: u64, copies: &Path, log: &mut dyn FnMut(&str)) {
    let ids = prompt_ids(&doc.notebook);
    let mut rerun = vec![ids[v as usize % ids.len()]];
    if v.is_multiple_of(3) {
        rerun.push(ids[(v as usize + 1) % ids.len()]);
    }
    if v.is_multiple_of(5) {
        let gone = ids[(v as usize + 2) % ids.len()];
        assert!(doc.delete_cell(gone));
        rerun.retain(|&c| c != gone);
        let id = doc.notebook.fresh_id();
        doc.notebook.cells.push(prompt_cell(id, &format!("cell {id}"), Prompt::text("x")));
        rerun.push(id);
    }
    for cell in rerun {
        log(&format!("T {v}"));
        run_cell(doc, cell, v);
    }
    doc.notebook.cells[0].kind = CellKind::Markdown { text: format!("version {v}") };
    doc.mark_dirty();
    log(&format!("N {v}"));
    doc.save("crash-test").unwrap();
    log(&format!("S {v}"));
    if v.is_multiple_of(10) {
        let main = doc.dir.clone();
        log(&format!("A {v}"));
        doc.save_as(&copies.join(format!("v{v}")), "crash-test").unwrap();
        *doc = Document::open(main, "crash-test").0;
        log(&format!("a {v}"));
    }
}

/// Version 0: a markdown cell holding the version and [`PROMPT_CELLS`] prompt cells that ran.
fn first_version(dir: &Path) {
    let (mut doc, _) = Document::open(dir.to_path_buf(), "crash-test");
    let mut nb = Notebook::new("crash-test");
    let id = nb.fresh_id();
    nb.cells.push(Cell { id, title: "version".into(), kind: CellKind::Markdown { text: "version 0".into() } });
    for _ in 0..PROMPT_CELLS {
        let id = nb.fresh_id();
        nb.cells.push(prompt_cell(id, &format!("cell {id}"), Prompt::text("x")));
    }
    doc.notebook = nb;
    for id in prompt_ids(&doc.notebook) {
        run_cell(&mut doc, id, 0);
    }
    doc.save("crash-test").unwrap();
}

/// Not a test by itself: the process the parent kills. It carries on from the version on disk
/// until it is killed.
#[test]
#[ignore]
fn child_saves_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else { return };
    let log_path = PathBuf::from(std::env::var_os(CHILD_LOG).expect("the child's log"));
    let mut log_file = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
    // A killed process loses nothing it wrote to the kernel, so the log needs no fsync.
    let mut log = |line: &str| writeln!(log_file, "{line}").unwrap();
    let (mut doc, why) = Document::open(dir.clone(), "crash-test");
    assert!(why.is_none(), "{why:?}");
    let mut v = version_of(&doc.notebook).expect("a version");
    log(&format!("ready {v}"));
    println!("{READY}");
    std::io::stdout().flush().unwrap();
    let copies = dir.parent().unwrap().join("copies");
    loop {
        v += 1;
        make_version(&mut doc, v, &copies, &mut log);
    }
}

/// Where the last line of the child's log says it was when killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Writing a run's trace (or recording it).
    Trace,
    /// Saving notebook.json (or removing the traces it no longer references).
    Notebook,
    /// Copying the notebook elsewhere ("save as").
    SaveAs,
    /// Between versions: the last save had finished.
    Between,
}

#[derive(Default)]
struct Figures {
    phases: BTreeMap<Phase, usize>,
    /// The notebook on disk was the version being saved (the rename had happened).
    new: usize,
    /// ... or the last one finished.
    old: usize,
    temporary_files: usize,
    orphan_traces: usize,
    copies_whole: usize,
    copies_unfinished: usize,
    versions: u64,
}

/// Checks the notebook in `dir` after a kill, given the child's log; returns the phase the
/// kill landed in.
fn check_after_kill(dir: &Path, log: &str, copies: &Path, figures: &mut Figures) -> Phase {
    let lines: Vec<&str> = log.lines().collect();
    let field = |l: &str| l.split_once(' ').map(|(k, v)| (k.to_string(), v.parse::<u64>().unwrap()));
    let parsed: Vec<(String, u64)> = lines.iter().filter_map(|l| field(l)).collect();
    let finished = parsed.iter().filter(|(k, _)| k == "S" || k == "ready").map(|(_, v)| *v).max().expect("the child got ready");
    let saving = parsed.iter().filter(|(k, _)| k == "N").map(|(_, v)| *v).max().filter(|&n| n > finished);
    let phase = match parsed.last().map(|(k, _)| k.as_str()) {
        Some("T") => Phase::Trace,
        Some("N") => Phase::Notebook,
        Some("A") => Phase::SaveAs,
        _ => Phase::Between,
    };

    // The notebook opens, and is the last version finished or the one being saved.
    let nb = notebook::load(dir).unwrap_or_else(|e| panic!("the notebook does not open after a kill ({phase:?}): {e}"));
    let v = version_of(&nb).expect("a version");
    if v == finished {
        figures.old += 1;
    } else if Some(v) == saving {
        figures.new += 1;
    } else {
        panic!("the notebook is version {v}; the child had finished {finished} and was saving {saving:?}");
    }
    check_whole(dir, &nb, v);

    // Save-as copies: whole, or without notebook.json (and then nothing that references).
    for entry in std::fs::read_dir(copies).into_iter().flatten().flatten() {
        let copy = entry.path();
        if notebook::exists(&copy) {
            let nb = notebook::load(&copy).unwrap_or_else(|e| panic!("a saved-as copy does not open: {e}"));
            let cv = version_of(&nb).unwrap();
            assert_eq!(copy.file_name().unwrap().to_str().unwrap(), format!("v{cv}"), "a copy of another version");
            check_whole(&copy, &nb, cv);
            figures.copies_whole += 1;
        } else {
            figures.copies_unfinished += 1;
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }

    // Opening clears what the kill left, and only that.
    let leftovers = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    let before: Vec<String> = leftovers(&dir.join("traces"));
    figures.temporary_files += before.iter().filter(|f| f.ends_with(".tmp")).count();
    figures.temporary_files += leftovers(dir).iter().filter(|f| f.ends_with(".tmp")).count();
    let referenced: Vec<String> =
        notebook::referenced_traces(&nb).into_iter().map(|r| r.strip_prefix("traces/").unwrap().to_string()).collect();
    figures.orphan_traces += before.iter().filter(|f| !f.ends_with(".tmp") && !referenced.contains(f)).count();
    let (doc, why) = Document::open(dir.to_path_buf(), "crash-test");
    assert!(why.is_none(), "{why:?}");
    assert_eq!(doc.notebook, nb, "opening changed the notebook");
    let mut after = leftovers(&dir.join("traces"));
    after.sort();
    let mut want = referenced;
    want.sort();
    assert_eq!(after, want, "traces/ after opening holds exactly the referenced traces");
    assert_eq!(leftovers(dir).into_iter().filter(|f| f != "traces").collect::<Vec<_>>(), ["notebook.json"]);
    check_whole(dir, &doc.notebook, v);
    figures.versions = figures.versions.max(v);
    phase
}

/// Every prompt cell of version `v` has a result whose trace exists, reads, and is the run the
/// result records (a run of that cell at version `v` or before).
fn check_whole(dir: &Path, nb: &Notebook, v: u64) {
    let ids = prompt_ids(nb);
    assert_eq!(ids.len(), PROMPT_CELLS, "version {v} has {} prompt cells", ids.len());
    for c in &nb.cells {
        let CellKind::Prompt { result, .. } = &c.kind else { continue };
        let r = result.as_ref().unwrap_or_else(|| panic!("version {v}: cell {} lost its result", c.id));
        let name = r.trace.strip_prefix("traces/").unwrap_or_else(|| panic!("{} is not in traces/", r.trace));
        assert!(notebook::is_trace_file_name(name) && !name.starts_with('.'), "{name} is not a trace's name");
        let t = Trace::read(&dir.join(&r.trace)).unwrap_or_else(|e| panic!("version {v}: cell {}: {e}", c.id));
        assert_eq!(t.meta.prompt, r.generated_text, "version {v}: cell {}'s trace is another run's", c.id);
        let ran: u64 = r.generated_text.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(r.generated_text == run_text(c.id, ran) && ran <= v, "version {v}: cell {} records {:?}", c.id, r.generated_text);
    }
}

fn spawn_child(dir: &Path, log: &Path, stderr: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_saves_until_killed", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_LOG, log)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_notebook_killed_while_saving_is_always_a_whole_version() {
    let kills: usize = std::env::var("ROUTELAB_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(100);
    let seed: u64 = std::env::var("ROUTELAB_KILL_SEED").ok().and_then(|k| k.parse().ok()).unwrap_or(18);
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let (dir, copies) = (root.path().join("notebook"), root.path().join("copies"));
    let (log, stderr) = (root.path().join("child.log"), root.path().join("child.stderr"));

    // Kill delays spread log-uniformly from 50 µs to 200 ms, so kills land in every phase of
    // the first version as well as anywhere in later ones, however fast the disk is (its speed
    // varies by orders of magnitude with what else the machine does).
    let (shortest, longest) = (50e-6f64, 0.2f64);
    first_version(&dir);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut figures = Figures::default();
    for k in 0..kills {
        std::fs::write(&log, "").unwrap();
        let mut child = spawn_child(&dir, &log, &stderr);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(READY) {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("kill {k}: the child ended before it was ready: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
            }
        }
        std::thread::sleep(Duration::from_secs_f64((rng.random_range(shortest.ln()..longest.ln())).exp()));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kill {k}: the child ended by itself ({status}): {}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let phase = check_after_kill(&dir, &std::fs::read_to_string(&log).unwrap(), &copies, &mut figures);
        *figures.phases.entry(phase).or_default() += 1;
    }
    eprintln!(
        "{kills} kills (seed {seed}) in {:.1?}: \
         by phase {:?}; notebook was the version being saved {} times, the last finished {} times; \
         {} temporary files and {} orphan traces cleared on opening; save-as copies whole {}, unfinished {}; \
         {} versions saved",
        started.elapsed(),
        figures.phases,
        figures.new,
        figures.old,
        figures.temporary_files,
        figures.orphan_traces,
        figures.copies_whole,
        figures.copies_unfinished,
        figures.versions,
    );
}
