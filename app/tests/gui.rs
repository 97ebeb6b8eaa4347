//! The workbench driven as a user would, with egui_kittest, on the bundled tiny-moe model:
//! run the example cells, hover a token, mask an expert and re-run, get a compare cell, export
//! a plot, save and reopen; an activation-patching cell (tiny-dense) and a logit-attribution
//! cell. Snapshot images are in tests/snapshots/.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use routelab::gui::dialogs::FixedDialogs;
use routelab::gui::WorkbenchApp;
use routelab::notebook::{CellKind, ReplaySettings};

/// The bundled default model (override to try another).
fn model() -> String {
    std::env::var("ROUTELAB_GUI_TEST_MODEL").unwrap_or_else(|_| "tiny-moe".into())
}

/// A fixed directory per test, so the path shown in the top bar (and snapshots) is stable.
fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("routelab-gui-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn harness(dir: &Path, exports: &Path) -> (Harness<'static, WorkbenchApp>, Arc<Mutex<Vec<PathBuf>>>) {
    harness_on(dir, exports, model())
}

fn harness_on(dir: &Path, exports: &Path, model: String) -> (Harness<'static, WorkbenchApp>, Arc<Mutex<Vec<PathBuf>>>) {
    let given = Arc::new(Mutex::new(vec![]));
    let g = given.clone();
    let (dir, exports) = (dir.to_path_buf(), exports.to_path_buf());
    // Model output can hold any character; the app draws a box for glyphs no font has.
    let mut h = Harness::builder().with_size([1400.0, 1000.0]).allow_missing_glyphs().build_eframe(move |cc| {
        let mut app = WorkbenchApp::new(&cc.egui_ctx, dir, Some(model), Box::new(FixedDialogs { dir: exports, given: g }));
        app.state.ui.show_timings = false;
        // No autosave during a test: whether one happened before a snapshot would depend on how
        // fast the machine ran (the top bar shows "unsaved" until it does). Saving is tested
        // through the Save button.
        app.state.doc.autosave_delay = Duration::from_secs(24 * 3600);
        app
    });
    wait(&mut h, "the model to load", |a| a.state.model.info.is_some() || a.state.model.error.is_some());
    assert!(h.state().state.model.error.is_none(), "{:?}", h.state().state.model.error);
    (h, given)
}

/// Steps the UI until `done` holds (the worker runs on its own thread).
fn wait(h: &mut Harness<'_, WorkbenchApp>, what: &str, done: impl Fn(&WorkbenchApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
        assert!(start.elapsed() < Duration::from_secs(180), "timed out waiting for {what}; messages: {:?}", h.state().state.ui.messages);
    }
    // Let the UI settle (layout after the last event).
    for _ in 0..3 {
        h.step();
    }
}

/// Compares with the committed snapshot. Rendering needs a wgpu adapter (a GPU, or Mesa's
/// lavapipe, which .ci/run installs); elsewhere the comparison is skipped with a message.
fn snapshot(h: &mut Harness<'_, WorkbenchApp>, name: &str) {
    match h.try_snapshot(name) {
        Ok(()) => {}
        Err(egui_kittest::SnapshotError::RenderError { err }) if std::env::var("CI").is_err() => {
            eprintln!("SKIPPED snapshot {name}: nothing to render with ({err}); install mesa-vulkan-drivers");
        }
        Err(e) => panic!("{e}"),
    }
}

/// A primary click at a screen position.
fn click_at(h: &mut Harness<'_, WorkbenchApp>, pos: egui::Pos2) {
    h.hover_at(pos);
    h.step();
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton { pos, button: egui::PointerButton::Primary, pressed, modifiers: egui::Modifiers::NONE });
        h.step();
    }
}

fn idle(a: &WorkbenchApp) -> bool {
    !a.state.busy() && a.state.jobs.queue.is_empty()
}

fn prompt_ids(a: &WorkbenchApp) -> Vec<u64> {
    a.state.doc.notebook.cells.iter().filter(|c| matches!(c.kind, CellKind::Prompt { .. })).map(|c| c.id).collect()
}

fn run_all(h: &mut Harness<'_, WorkbenchApp>) {
    h.get_by_label("▶▶ Run all").click();
    h.step();
    wait(h, "the example cells", |a| idle(a) && prompt_ids(a).iter().all(|id| a.state.results.traces.contains_key(id)));
}

#[test]
fn example_notebook_runs_and_shows_routing_live() {
    let dir = fresh_dir("run");
    let (mut h, _) = harness(&dir, &dir);
    let ids = prompt_ids(h.state());
    assert_eq!(ids.len(), 3, "the example notebook has a prose, a code and a needle prompt");
    run_all(&mut h);
    for id in &ids {
        let run = &h.state().state.results.runs[id];
        assert!(run.len() > run.prompt_len, "cell {id} generated nothing");
        assert!(run.is_moe() && run.load.iter().any(|l| l.iter().sum::<u32>() > 0), "cell {id} has no routing");
        assert!(h.query_by_label(&format!("token strip {id}")).is_some());
        assert!(h.query_by_label(&format!("expert load {id}")).is_some());
    }
    snapshot(&mut h, "notebook_after_run");
}

#[test]
fn hovering_a_token_shows_its_routing_in_every_layer() {
    let dir = fresh_dir("hover");
    let (mut h, _) = harness(&dir, &dir);
    run_all(&mut h);
    let id = prompt_ids(h.state())[0];
    let strip = h.get_by_label(&format!("token strip {id}")).rect();
    // A token on the second line of the strip.
    h.hover_at(strip.left_top() + egui::vec2(strip.width() * 0.4, 22.0));
    h.run_steps(3);
    let p = h.state().state.ui.cells[&id].hovered.expect("a hovered token");
    assert!(p > 0);
    assert!(h.query_by_label_contains(&format!("position {p} · token")).is_some(), "no routing card for the hovered token");
    snapshot(&mut h, "token_hover");
}

/// Colouring the strip by routing margin: runs capture the margins, near ties are dark.
#[test]
fn the_token_strip_colours_by_routing_margin() {
    let dir = fresh_dir("margin");
    let (mut h, _) = harness(&dir, &dir);
    run_all(&mut h);
    let id = prompt_ids(h.state())[0];
    let run = &h.state().state.results.runs[&id];
    let margins: Vec<f32> = (0..run.len()).filter_map(|p| run.margin(2, p)).collect();
    assert_eq!(margins.len(), run.len(), "every position has a margin in layer 2");
    h.state_mut().state.cell_ui(id).colour = routelab::gui::ui_state::StripColour::Margin;
    h.state_mut().state.cell_ui(id).layer = 2;
    h.run_steps(3);
    let strip = h.get_by_label(&format!("token strip {id}")).rect();
    h.hover_at(strip.left_top() + egui::vec2(30.0, 8.0));
    h.run_steps(3);
    assert!(h.query_by_label("margin").is_some(), "the hover card lists margins");
    snapshot(&mut h, "token_strip_margin");
}

#[test]
fn masking_an_expert_and_rerunning_gives_a_compare_cell() {
    let dir = fresh_dir("mask");
    let (mut h, _) = harness(&dir, &dir);
    run_all(&mut h);
    let id = prompt_ids(h.state())[0];
    // The busiest expert of the first MoE layer for this prompt.
    let (layer, expert) = {
        let run = &h.state().state.results.runs[&id];
        let l = run.experts.iter().position(|&e| e > 0).unwrap();
        let e = (0..run.experts[l]).max_by_key(|&e| run.load[l][e]).unwrap();
        (l, e)
    };
    let geo = h.state().state.ui.cells[&id].load_grid.expect("load grid drawn");
    h.get_by_label(&format!("expert load {id}")).scroll_to_me();
    // Scrolling animates: step until the grid stops moving before pointing at it.
    let mut geo2 = geo;
    for _ in 0..60 {
        h.step();
        let now = h.state().state.ui.cells[&id].load_grid.unwrap_or(geo2);
        if now == geo2 {
            break;
        }
        geo2 = now;
    }
    click_at(&mut h, geo2.center(layer, expert));
    h.run_steps(2);
    h.get_by_label("reroute").click();
    h.run_steps(2);
    assert_eq!(h.state().state.ui.cells[&id].pending.items.len(), 1);
    h.get_by_label("⟳ Re-run with masks").click();
    h.step();
    wait(&mut h, "the masked run and its comparison", |a| {
        idle(a) && a.state.doc.notebook.cells.iter().any(|c| matches!(c.kind, CellKind::Compare { result: Some(_), .. }))
    });
    let nb = &h.state().state.doc.notebook;
    let masked = nb
        .cells
        .iter()
        .find(|c| matches!(&c.kind, CellKind::Prompt { interventions, .. } if !interventions.is_empty()))
        .expect("masked cell");
    let CellKind::Prompt { interventions, .. } = &masked.kind else { unreachable!() };
    assert_eq!(interventions.items[0].label(), format!("layers.{layer}.experts.{expert}:reroute"));
    let compare = nb.cells.iter().find_map(|c| match &c.kind {
        CellKind::Compare { a, b, result: Some(r) } => Some((*a, *b, r.clone())),
        _ => None,
    });
    let (a, b, r) = compare.unwrap();
    assert_eq!((a, b), (id, masked.id));
    // Rerouting the busiest expert changes routing in its layer and the next-token distribution.
    let flips = r.flip_rates.iter().find(|(l, _)| *l == layer).map(|x| x.1).unwrap();
    assert!(flips > 0.0, "no routing change in layer {layer}");
    assert!(r.kl.iter().any(|&k| k > 1e-4), "rerouting changed nothing downstream");
    // The masked expert is never selected in the masked run.
    let masked_trace = &h.state().state.results.traces[&masked.id];
    assert!(!masked_trace.router(layer).unwrap().experts.contains(&(expert as u32)));
    h.get_by_label_contains("first different token").scroll_to_me();
    h.run_steps(3);
    snapshot(&mut h, "compare_cell");
}

#[test]
fn exporting_a_view_writes_a_png_and_export_cell_writes_every_view() {
    let dir = fresh_dir("export");
    let out = fresh_dir("export-out");
    let (mut h, given) = harness(&dir, &out);
    run_all(&mut h);
    let export = h.get_all_by_label("Export ▾").next().unwrap();
    export.click();
    h.run_steps(2);
    h.get_by_label("as PNG").click();
    h.run_steps(2);
    let path = given.lock().unwrap().last().cloned().expect("a save dialog was shown");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", path.display());
    h.get_all_by_label("export cell").next().unwrap().click();
    h.run_steps(2);
    let folder = given.lock().unwrap().last().cloned().unwrap();
    let files: Vec<String> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for kind in ["expert-load", "routing", "heads", "router-entropy", "coactivation"] {
        for ext in ["png", "svg", "csv"] {
            assert!(files.iter().any(|f| f.ends_with(&format!("{kind}.{ext}"))), "missing {kind}.{ext} in {files:?}");
        }
    }
    assert!(files.iter().any(|f| f.ends_with(".safetensors")));
}

#[test]
fn a_saved_notebook_reopens_with_its_results_without_running() {
    let dir = fresh_dir("reopen");
    let before = {
        let (mut h, _) = harness(&dir, &dir);
        run_all(&mut h);
        h.get_by_label("Save").click();
        h.run_steps(2);
        let s = &h.state().state;
        assert!(s.doc.dirty_since.is_none(), "{:?}", s.ui.messages);
        prompt_ids(h.state())
            .into_iter()
            .map(|id| (id, s.results.runs[&id].store.tokens().to_vec(), s.results.runs[&id].load.clone()))
            .collect::<Vec<_>>()
    };
    let (mut h, _) = harness(&dir, &dir);
    h.run_steps(3);
    assert!(!h.state().state.busy(), "reopening ran something");
    for (id, tokens, load) in before {
        let run = &h.state().state.results.runs[&id];
        assert_eq!(run.store.tokens(), tokens);
        assert_eq!(run.load, load);
        assert!(h.state().state.doc.notebook.cell(id).unwrap().has_result());
    }
}

/// The trace a prompt cell's saved result names.
fn trace_of(a: &WorkbenchApp, id: u64) -> String {
    match &a.state.doc.notebook.cell(id).unwrap().kind {
        CellKind::Prompt { result: Some(r), .. } => r.trace.clone(),
        _ => panic!("cell {id} has no result"),
    }
}

#[test]
fn a_rerun_writes_a_new_trace_and_the_old_one_goes_only_once_saved() {
    let dir = fresh_dir("rerun");
    let (mut h, _) = harness(&dir, &dir);
    run_all(&mut h);
    h.get_by_label("Save").click();
    h.run_steps(2);
    let id = prompt_ids(h.state())[0];
    let first = trace_of(h.state(), id);
    h.state_mut().apply(routelab::gui::state::Action::RunCell(id));
    wait(&mut h, "the re-run", |a| idle(a) && a.state.results.traces.contains_key(&id));
    let second = trace_of(h.state(), id);
    assert_ne!(first, second, "a re-run wrote over the saved trace");
    // The notebook.json on disk still names the first run's trace, so it is still there.
    let saved = routelab::notebook::load(&dir).unwrap();
    assert!(routelab::notebook::referenced_traces(&saved).contains(first.as_str()));
    assert!(dir.join(&first).exists() && dir.join(&second).exists());
    h.get_by_label("Save").click();
    h.run_steps(2);
    assert!(!dir.join(&first).exists(), "the superseded trace is removed after the save");
    assert!(dir.join(&second).exists());
}

#[test]
fn a_corrupt_notebook_opens_read_only_and_is_never_overwritten() {
    let dir = fresh_dir("corrupt");
    let garbage = "{\"format\": \"routelab-notebook\", \"version\": 1, \"cells\": [ {";
    std::fs::write(dir.join("notebook.json"), garbage).unwrap();
    let (mut h, _) = harness(&dir, &dir);
    assert!(h.state().state.doc.read_only.is_some());
    assert!(h.state().state.ui.messages.iter().any(|(_, m)| m.contains("notebook.json") && m.contains("read-only")));
    h.get_by_label("Save").click();
    h.run_steps(2);
    assert_eq!(std::fs::read_to_string(dir.join("notebook.json")).unwrap(), garbage);
}

#[test]
fn choosing_bf16_reloads_the_model_with_bf16_weights_and_it_runs() {
    let dir = fresh_dir("dtype");
    let (mut h, _) = harness(&dir, &dir);
    assert_eq!(h.state().state.model.info.as_ref().unwrap().dtype, "F32", "the CPU default");
    let f32_bytes = h.state().state.model.info.as_ref().unwrap().weight_bytes;
    h.get_by_label("dtype").click();
    h.run_steps(3);
    h.get_by_label("bf16").click();
    h.run_steps(2);
    h.get_by_label("Load").click();
    h.step();
    wait(&mut h, "the bf16 load", |a| a.state.model.loading.is_none() && a.state.model.info.as_ref().is_some_and(|i| i.dtype == "BF16"));
    // Matrices halve; norm weights and biases stay f32 (under 1% of the bytes).
    let bf16_bytes = h.state().state.model.info.as_ref().unwrap().weight_bytes;
    assert!(bf16_bytes * 2 >= f32_bytes && bf16_bytes * 2 - f32_bytes < f32_bytes / 100, "{bf16_bytes} bytes in bf16, {f32_bytes} in f32");
    assert!(h.query_by_label_contains("(BF16)").is_some(), "the model panel shows the dtype");
    run_all(&mut h);
    for id in prompt_ids(h.state()) {
        let run = &h.state().state.results.runs[&id];
        assert!(run.len() > run.prompt_len, "cell {id} generated nothing on bf16 weights");
    }
}

/// Adds a cell from the notebook's last "+ Add cell" menu; returns its id.
fn add_cell(h: &mut Harness<'_, WorkbenchApp>, item: &str) -> u64 {
    let before: Vec<u64> = h.state().state.doc.notebook.cells.iter().map(|c| c.id).collect();
    // The menu under the last cell, scrolled into view so that its items are on screen.
    h.get_all_by_label("+ Add cell").last().unwrap().scroll_to_me();
    h.run_steps(6);
    h.get_all_by_label("+ Add cell").last().unwrap().click();
    h.run_steps(2);
    h.get_by_label(item).click();
    h.run_steps(2);
    let added: Vec<u64> = h.state().state.doc.notebook.cells.iter().map(|c| c.id).filter(|id| !before.contains(id)).collect();
    assert_eq!(added.len(), 1, "{item} added {added:?}");
    added[0]
}

fn set_patching_prompts(h: &mut Harness<'_, WorkbenchApp>, id: u64, clean_text: &str, corrupt_text: &str) {
    if let Some(CellKind::Patching { clean, corrupt, .. }) = h.state_mut().state.doc.notebook.cell_mut(id).map(|c| &mut c.kind) {
        (*clean, *corrupt) = (clean_text.into(), corrupt_text.into());
    }
    h.run_steps(2);
}

fn run_cell(h: &mut Harness<'_, WorkbenchApp>, id: u64) {
    h.state_mut().apply(routelab::gui::state::Action::RunCell(id));
    h.step();
    wait(h, "the cell's job", idle);
}

/// Scrolls `label` into view and waits for the scrolling animation to end.
fn scroll_to(h: &mut Harness<'_, WorkbenchApp>, label: &str) {
    h.get_by_label(label).scroll_to_me();
    // The animation starts a frame or two later: settle only after it has.
    h.run_steps(4);
    let mut last = h.get_by_label(label).rect();
    for _ in 0..60 {
        h.step();
        let now = h.get_by_label(label).rect();
        if now == last {
            break;
        }
        last = now;
    }
}

fn patch_result(a: &WorkbenchApp, id: u64) -> Option<routelab::notebook::PatchSummary> {
    match &a.state.doc.notebook.cell(id)?.kind {
        CellKind::Patching { result, .. } => result.clone(),
        _ => None,
    }
}

/// The patching cell on tiny-dense: a corrupted prompt of another length is flagged before the
/// run and refused by it; a same-length pair sweeps every layer × position of the residual
/// stream. Two results follow from the architecture alone: a position before the first changed
/// token has the same residual stream in both runs (causal attention), so patching it recovers
/// nothing; the residual after the last layer at the last position is all the final norm and
/// head read, so patching it recovers everything.
#[test]
fn a_patching_cell_sweeps_the_residual_stream_and_draws_its_heat_map() {
    let dir = fresh_dir("patching");
    let out = fresh_dir("patching-out");
    let (mut h, given) = harness_on(&dir, &out, "tiny-dense".into());
    let id = add_cell(&mut h, "Activation patching");

    let clean = "The capital of France is Paris. The capital of France is";
    set_patching_prompts(&mut h, id, clean, "The capital of France is Paris. The capital of Spain, the country, is");
    assert!(h.query_by_label_contains("the token counts differ").is_some(), "no warning for prompts of different lengths");
    run_cell(&mut h, id);
    assert!(patch_result(h.state(), id).is_none());
    let refused = h.state().state.ui.messages.iter().any(|(_, m)| m.contains("must be the same length"));
    assert!(refused, "{:?}", h.state().state.ui.messages);

    set_patching_prompts(&mut h, id, clean, CORRUPT);
    assert!(h.query_by_label_contains("the token counts differ").is_none());
    // " France" is three tokens in the bundled models' small vocabulary, " Spain" too.
    assert!(h.query_by_label_contains("3 positions differ: 5").is_some(), "the changed positions are named");
    run_cell(&mut h, id);
    let r = patch_result(h.state(), id).expect("a patching result").result;
    let tokens = h.state().state.model.tokenizer.as_ref().unwrap().encode(clean, true).unwrap();
    assert_eq!(r.layers, (0..6).collect::<Vec<_>>(), "every layer of tiny-dense");
    assert_eq!(r.columns, (0..tokens.len()).collect::<Vec<_>>(), "every position");
    assert!(!r.incomplete && r.corrupt_metric > 0.0 && r.clean_metric == 0.0, "{} {}", r.clean_metric, r.corrupt_metric);
    let first_diff = r.column_labels.iter().position(|l| l.contains('→')).expect("a changed position");
    for row in &r.recovered {
        for &v in &row[..first_diff] {
            assert!(v.abs() < 1e-5, "a position before the change recovered {v}");
        }
    }
    let last = r.recovered[5][tokens.len() - 1];
    assert!((last - 1.0).abs() < 1e-5, "the last layer's last position recovered {last}");

    // What the user sees: the metric values, the heat map, a hovered cell's numbers.
    assert!(h.query_by_label_contains("KL(clean ‖ patched): clean 0.0000 · corrupted ").is_some());
    let map = format!("patching heat map {id}");
    scroll_to(&mut h, &map);
    let geo = h.state().state.ui.cells[&id].patch_grid.expect("heat map drawn");
    h.hover_at(geo.center(5, tokens.len() - 1));
    // Tooltips wait for the pointer to rest (egui's tooltip delay).
    let card = "layer 5 · position";
    for _ in 0..60 {
        h.step();
        if h.query_by_label_contains(card).is_some() {
            break;
        }
    }
    let shown = h.query_by_label_contains(card).map(|n| format!("{n:?}")).unwrap_or_default();
    assert!(shown.contains("recovered 100.0% of the clean − corrupted gap"), "hover card: {shown:?}");
    snapshot(&mut h, "patching_cell");

    // Export: the CSV has one row per cell.
    h.get_all_by_label("Export ▾").last().unwrap().click();
    h.run_steps(2);
    h.get_by_label("as CSV").click();
    h.run_steps(2);
    let csv = std::fs::read_to_string(given.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6 * tokens.len());

    // Saved in the notebook: it reopens with the result, without running.
    h.get_by_label("Save").click();
    h.run_steps(2);
    drop(h);
    let (mut h, _) = harness_on(&dir, &out, "tiny-dense".into());
    h.run_steps(3);
    assert!(!h.state().state.busy());
    let back = patch_result(h.state(), id).unwrap().result;
    assert_eq!((&back.layers, &back.column_labels, back.site), (&r.layers, &r.column_labels, r.site));
    // JSON keeps every float to within its last bit (serde_json's default parser).
    let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() <= 1e-12 * x.abs().max(1e-300))
    };
    assert!(close(&back.recovered, &r.recovered) && close(&back.values, &r.values));
    assert!(h.query_by_label(&map).is_some());
}

/// The new cell's corrupted prompt: the same token count as the clean one.
const CORRUPT: &str = "The capital of Spain is Paris. The capital of France is";

fn attribution_result(a: &WorkbenchApp, id: u64) -> Option<routelab::notebook::AttributionSummary> {
    match &a.state.doc.notebook.cell(id)?.kind {
        CellKind::Attribution { result, .. } => result.clone(),
        _ => None,
    }
}

/// The attribution cell on tiny-moe, on the first example prompt: the lens after the last
/// layer is the model's own output, so the attributed prediction ranks first there; the
/// experts whose promotions it lists are the ones the router picked at that position in the
/// prompt cell's run of the same prompt.
#[test]
fn an_attribution_cell_shows_contributions_the_lens_and_the_experts() {
    let dir = fresh_dir("attribution");
    let (mut h, given) = harness(&dir, &dir);
    let prompt_cell = prompt_ids(h.state())[0];
    run_cell(&mut h, prompt_cell);
    let prompt = match &h.state().state.doc.notebook.cell(prompt_cell).unwrap().kind {
        CellKind::Prompt { prompt: routelab_model::session::Prompt::Text { text }, .. } => text.clone(),
        k => panic!("{k:?}"),
    };
    let id = add_cell(&mut h, "Logit attribution and lens");
    if let Some(CellKind::Attribution { prompt: p, .. }) = h.state_mut().state.doc.notebook.cell_mut(id).map(|c| &mut c.kind) {
        *p = prompt.clone();
    }
    run_cell(&mut h, id);
    let s = attribution_result(h.state(), id).expect("an attribution result");
    let a = &s.result;
    let run = &h.state().state.results.runs[&prompt_cell];
    assert_eq!(a.tokens.len(), run.prompt_len);
    assert_eq!(a.position, run.prompt_len - 1, "the last position by default");
    assert_eq!(a.lens.len(), 6);
    assert_eq!(a.lens[5].target_rank, 0, "the final layer's lens is the model's prediction");
    let sum: f32 = a.components.iter().map(|c| c.value).sum();
    assert!((sum - a.logit).abs() < 1e-3 * a.logit.abs().max(1.0), "contributions sum to {sum}, the logit is {}", a.logit);
    let t = &h.state().state.results.traces[&prompt_cell];
    for l in 0..6 {
        let r = t.router(l).unwrap();
        let mut routed: Vec<usize> = r.experts_at(a.position).iter().map(|&e| e as usize).collect();
        let mut listed: Vec<usize> = a.promotions.iter().filter(|p| p.layer == l).map(|p| p.expert).collect();
        routed.sort();
        listed.sort();
        assert_eq!(listed, routed, "layer {l}");
    }

    let bars = format!("attribution bars {id}");
    assert!(h.query_by_label_contains(&format!("sum of {} contributions", a.components.len())).is_some());
    assert!(h.query_by_label_contains("What the experts selected").is_some());
    scroll_to(&mut h, &bars);
    snapshot(&mut h, "attribution_cell");

    h.get_by_label("Export lens ▾").click();
    h.run_steps(2);
    h.get_by_label("as CSV").click();
    h.run_steps(2);
    let csv = std::fs::read_to_string(given.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6 * a.tokens.len(), "one row per layer and position");
}

fn set_prompt(h: &mut Harness<'_, WorkbenchApp>, id: u64, text: &str) {
    if let Some(CellKind::Prompt { prompt, .. }) = h.state_mut().state.doc.notebook.cell_mut(id).map(|c| &mut c.kind) {
        *prompt = routelab_model::session::Prompt::text(text);
    }
    h.run_steps(2);
}

fn set_replay(h: &mut Harness<'_, WorkbenchApp>, id: u64, to: Option<ReplaySettings>) {
    if let Some(CellKind::Prompt { replay, .. }) = h.state_mut().state.doc.notebook.cell_mut(id).map(|c| &mut c.kind) {
        *replay = to;
    }
    h.run_steps(2);
}

/// A finished prompt cell's trace, read back from its file.
fn read_trace(h: &Harness<'_, WorkbenchApp>, dir: &Path, id: u64) -> routelab_probes::trace::Trace {
    routelab_probes::trace::Trace::read(&dir.join(trace_of(h.state(), id))).unwrap()
}

/// Routing replay on tiny-moe: cell B, on a prompt of the same length as cell A's, routes
/// differently with its own router; set to replay A's routing in every layer, it selects A's
/// experts at every prompt position of every layer. A source cell without a run is refused with
/// a message. The setting is shown in the cell and saved in notebook.json.
#[test]
fn a_prompt_cell_replays_another_cells_routing() {
    let dir = fresh_dir("replay");
    let (mut h, _) = harness(&dir, &dir);
    let ids = prompt_ids(h.state());
    let (a, b, unrun) = (ids[0], ids[1], ids[2]);
    let clean = "The capital of France is Paris. The capital of France is";
    set_prompt(&mut h, a, clean);
    set_prompt(&mut h, b, CORRUPT);
    let tokenizer = h.state().state.model.tokenizer.clone().unwrap();
    let n = tokenizer.encode(clean, true).unwrap().len();
    assert_eq!(tokenizer.encode(CORRUPT, true).unwrap().len(), n);

    set_replay(&mut h, b, Some(ReplaySettings { cell: unrun, layers: None, weights: false }));
    run_cell(&mut h, b);
    assert!(!h.state().state.doc.notebook.cell(b).unwrap().has_result(), "ran without the routing it was to replay");
    let refused = h.state().state.ui.messages.iter().any(|(_, m)| m.contains("has no finished run to replay"));
    assert!(refused, "{:?}", h.state().state.ui.messages);

    set_replay(&mut h, b, None);
    run_cell(&mut h, a);
    run_cell(&mut h, b);
    let experts = |t: &routelab_probes::trace::Trace, l: usize| {
        let r = t.router(l).unwrap();
        r.experts[..n * r.top_k].to_vec()
    };
    let (ta, tb) = (read_trace(&h, &dir, a), read_trace(&h, &dir, b));
    assert!((0..6).any(|l| experts(&ta, l) != experts(&tb, l)), "the two prompts route alike: replay would show nothing");

    set_replay(&mut h, b, Some(ReplaySettings { cell: a, layers: None, weights: false }));
    assert!(h.query_by_label_contains(&format!("routing replayed from cell {a} “")).is_some(), "the setting is not shown");
    run_cell(&mut h, b);
    let tb = read_trace(&h, &dir, b);
    for l in 0..6 {
        assert_eq!(experts(&tb, l), experts(&ta, l), "layer {l}");
    }
    let summary = tb.meta.replay.as_ref().expect("the trace records the replay");
    assert_eq!((summary.layers.clone(), summary.weights), ((0..6).collect::<Vec<_>>(), false));

    h.get_by_label("Save").click();
    h.run_steps(2);
    let saved = routelab::notebook::load(&dir).unwrap();
    let CellKind::Prompt { replay, .. } = &saved.cell(b).unwrap().kind else { panic!() };
    assert_eq!(*replay, Some(ReplaySettings { cell: a, layers: None, weights: false }));
}
