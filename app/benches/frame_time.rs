//! Frame time of the live views while tokens stream in (a benchmark, not a test).
//!
//!     cargo bench -p routelab --bench frame_time
//!
//! Each frame appends one token to the run (as a streaming generation does) and draws the
//! prompt cell's results: token strip, layer × expert load grid, layer × head grid, router
//! entropy plot. Measured: egui's UI pass plus tessellation (the CPU side of a frame; GPU
//! rasterisation is the driver's). Two cases: tiny-moe's shape (6 layers × 8 experts × 8
//! heads) and a synthetic large model (48 layers × 128 experts × 32 heads) at up to 2,000
//! tokens. Goal: under 16 ms per frame on the 2-core development machine.

use std::time::Instant;

use egui_kittest::Harness;
use rand::{Rng, SeedableRng};
use routelab::gui::run_view::RunView;
use routelab::gui::state::CellUi;
use routelab::gui::views::prompt::results;
use routelab_model::hooks::{HookPoint, Quantity};
use routelab_model::store::{CaptureStore, Values};

struct Bench {
    run: RunView,
    ui: CellUi,
}

/// One streamed position: the row a generation step appends to the run's store.
fn record(rng: &mut rand_chacha::ChaCha8Rng, pos: usize, layers: usize, experts: usize, k: usize, heads: usize) -> CaptureStore {
    let words = ["the", " model", " routes", " tokens", " to", " experts", ",", " and", " 42", "\n", " fn", "(", ")"];
    let mut s = CaptureStore::new(layers);
    s.append(HookPoint::Tokens, &[], Values::U32(vec![rng.random_range(0..4096)])).unwrap();
    s.pieces.push(words[rng.random_range(0..words.len())].to_string());
    for l in 0..layers {
        let mut ex: Vec<u32> = vec![];
        while ex.len() < k {
            let e = rng.random_range(0..experts as u32);
            if !ex.contains(&e) {
                ex.push(e);
            }
        }
        let mut put = |q, width: usize, v: Values| s.append(HookPoint::layer(l, q), &[width], v).unwrap();
        put(Quantity::RouterLogits, experts, Values::F32((0..experts).map(|_| rng.random_range(-3.0..3.0)).collect()));
        put(Quantity::RouterExperts, k, Values::U32(ex));
        put(Quantity::RouterWeights, k, Values::F32(vec![1.0 / k as f32; k]));
        put(Quantity::AttnEntropy, heads, Values::F32((0..heads).map(|_| rng.random_range(0.0..3.0)).collect()));
        put(Quantity::AttnArgmax, heads, Values::U32((0..heads).map(|_| rng.random_range(0..=pos as u32)).collect()));
    }
    s
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

fn bench(name: &str, layers: usize, experts: usize, k: usize, heads: usize, tokens: usize, frames_measured: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut run = RunView::new(layers, heads, vec![experts; layers]);
    // Prefill up to where measuring starts, then stream the last frames_measured tokens.
    let start = tokens - frames_measured;
    for p in 0..start {
        run.extend(&record(&mut rng, p, layers, experts, k, heads)).unwrap();
    }
    run.prompt_len = 64;
    let mut h = Harness::builder().with_size([1400.0, 1000.0]).with_context_setup(routelab::gui::app::install_fonts).build_ui_state(
        |ui, b: &mut Bench| {
            let mut actions = vec![];
            egui::ScrollArea::vertical().show(ui, |ui| results(ui, 1, &b.run, None, true, &mut b.ui, &mut actions));
        },
        Bench { run, ui: CellUi::default() },
    );
    // Warm-up frames (font atlas, caches).
    for _ in 0..5 {
        h.step();
    }
    let mut ms = vec![];
    for p in start..tokens {
        let rec = record(&mut rng, p, layers, experts, k, heads);
        h.state_mut().run.extend(&rec).unwrap();
        let t = Instant::now();
        h.step();
        let shapes = h.output().shapes.clone();
        let ppp = h.ctx.pixels_per_point();
        let _mesh = h.ctx.tessellate(shapes, ppp);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let p50 = percentile(&mut ms, 0.5);
    let p95 = percentile(&mut ms, 0.95);
    println!(
        "{name:<44} {layers:>3} layers × {experts:>3} experts × {heads:>2} heads, {tokens:>5} tokens: mean {mean:6.2} ms, p50 {p50:6.2} ms, p95 {p95:6.2} ms {}",
        if p95 < 16.0 { "(under 16 ms)" } else { "(over 16 ms)" }
    );
}

fn main() {
    println!(
        "frame time while streaming (UI pass + tessellation), {} CPU threads",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    bench("tiny-moe shape", 6, 8, 2, 8, 600, 200);
    bench("synthetic large MoE", 48, 128, 2, 32, 2000, 100);
}
