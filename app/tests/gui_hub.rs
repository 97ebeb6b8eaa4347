//! The model panel on a GGUF repo of the Hugging Face cache, offline: a bare repo id lists
//! the repo's quants (size, shards) instead of loading, choosing one loads `repo:QUANT`, and a
//! repo the cache does not know is said to be unknown.
//!
//! A test binary of its own: it points `HF_HUB_CACHE` at a fake cache and sets
//! `HF_HUB_OFFLINE`, which is safe only before other threads read the environment.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use routelab::gui::dialogs::FixedDialogs;
use routelab::gui::state::QuantList;
use routelab::gui::WorkbenchApp;

/// A fixed directory, so the paths in the window (and the snapshot) are stable.
fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("routelab-gui-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn wait(h: &mut Harness<'_, WorkbenchApp>, what: &str, done: impl Fn(&WorkbenchApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}; messages: {:?}", h.state().state.ui.messages);
    }
    for _ in 0..3 {
        h.step();
    }
}

#[test]
fn a_gguf_repo_lists_its_quants_and_loads_the_one_chosen() {
    let cache = fresh_dir("hub-cache");
    common::gguf_repo_cache(&cache);
    // Before the harness starts any thread (see the module's comment).
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let dir = fresh_dir("hub");
    let exports = dir.clone();
    let mut h = Harness::builder().with_size([1400.0, 1000.0]).build_eframe(move |cc| {
        let dialogs = FixedDialogs { dir: exports, given: Arc::new(Mutex::new(vec![])) };
        let mut app = WorkbenchApp::new(&cc.egui_ctx, dir, Some(common::GGUF_REPO.into()), Box::new(dialogs));
        app.state.ui.show_timings = false;
        app.state.doc.autosave_delay = Duration::from_secs(24 * 3600);
        app
    });
    wait(&mut h, "the quant list", |a| matches!(a.state.model.quants, Some(QuantList::Listed(_))));
    let s = &h.state().state;
    assert!(s.model.info.is_none() && s.model.loading.is_none(), "a repo of several quants loads none of them by itself");
    let Some(QuantList::Listed(l)) = &s.model.quants else { unreachable!() };
    assert_eq!(l.quants.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["Q4_K_M", "Q8_0", "F32"]);
    assert!(h.query_by_label("3 shards").is_some(), "the sharded quant shows its shard count");
    assert!(h.query_by_label_contains("HF_HUB_OFFLINE").is_some(), "the panel says the list is the cache's");
    match h.try_snapshot("hub_quants") {
        Ok(()) => {}
        Err(egui_kittest::SnapshotError::RenderError { err }) if std::env::var("CI").is_err() => {
            eprintln!("SKIPPED snapshot hub_quants: nothing to render with ({err}); install mesa-vulkan-drivers");
        }
        Err(e) => panic!("{e}"),
    }

    h.get_by_label("F32").click();
    h.step();
    wait(&mut h, "the F32 quant to load", |a| a.state.model.info.is_some() || a.state.model.error.is_some());
    let s = &h.state().state;
    assert!(s.model.error.is_none(), "{:?}", s.model.error);
    let info = s.model.info.as_ref().unwrap();
    assert_eq!((info.name.as_str(), info.model_type.as_str()), ("someone/OLMoE-GGUF:F32", "olmoe"));
    assert_eq!(s.doc.notebook.model, "someone/OLMoE-GGUF:F32", "the notebook keeps the quant chosen");
    assert!(matches!(s.model.quants, Some(QuantList::Listed(_))), "the list stays to choose another");

    h.state_mut().state.model.requested = "someone/absent".into();
    h.get_by_label("Load").click();
    h.step();
    wait(&mut h, "the unknown repo's listing", |a| a.state.model.error.is_some());
    let e = h.state().state.model.error.clone().unwrap();
    assert!(e.contains("someone/absent") && e.contains("nothing is known") && e.contains("HF_HUB_OFFLINE"), "{e}");
}
