//! A notebook directory's `notebook.json` (the fuzz input): the app's `notebook::load`.
//!
//! The app crate itself is not a dependency (it would bring the GUI's eframe and wgpu into
//! every fuzz build); its `notebook` module, which needs only the model and probes crates, is
//! compiled here from the app's own source files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routelab_fuzz::{fresh_dir, write};

#[allow(dead_code, unused_imports)]
#[path = "../../app/src/notebook/mod.rs"]
mod notebook;

fuzz_target!(|data: &[u8]| {
    let dir = fresh_dir("notebook");
    write(&dir, "notebook.json", data);
    let Ok(nb) = notebook::load(&dir) else { return };
    // What opening a notebook does next: look its cells up, and save it back.
    for cell in &nb.cells {
        let _ = (nb.index_of(cell.id), cell.kind_name(), cell.has_result());
    }
    let _ = notebook::save(&dir, &nb);
});
