//! Analyses on fixture models against independent references: the run diff of an expert
//! reroute, and every export (PNG decodes, SVG parses as XML, CSV round-trips to the numbers
//! it was made from).

use routelab_model::capture::CaptureSpec;
use routelab_model::interventions::{ExpertMethod, Intervention, Interventions};
use routelab_model::sampling::SamplingSettings;
use routelab_model::session::{LoadOptions, Prompt, RunRequest, Session};
use routelab_model::source::ModelSource;
use routelab_probes::analysis::diff::diff;
use routelab_probes::export::csv::Table;
use routelab_probes::export::views;
use routelab_probes::stats::routing::load;
use routelab_probes::trace::Trace;
use routelab_tests::*;

fn trace(case: &str, iv: Interventions, new_tokens: usize) -> Trace {
    let s = Session::load(&ModelSource::Dir(case_dir(case)), &LoadOptions::default(), &mut |_| {}).unwrap();
    let req = RunRequest {
        tokens: Reference::load(case).ids("input_ids"),
        max_new_tokens: new_tokens,
        sampling: SamplingSettings::default(),
        capture: CaptureSpec::all(),
        interventions: iv,
        stop_at_eos: false,
        replay: None,
    };
    let run = s.run(&req, &mut |_| true).unwrap();
    Trace::from_run(run, case, s.config(), "fixture")
}

#[test]
fn run_diff_of_a_reroute_flips_exactly_the_positions_that_chose_the_expert() {
    // transformers' reference: where mixtral's layer 0 selected expert 2. Removing expert 2
    // from the candidates changes the top-2 set exactly there (elsewhere the ranking of the
    // remaining experts is unchanged).
    let r = Reference::load("mixtral");
    let k = r.get("router.0.experts").shape[1];
    let chose: Vec<bool> = r.get("router.0.experts").i64.chunks(k).map(|row| row.contains(&2)).collect();
    assert!(chose.iter().any(|&c| c) && chose.iter().any(|&c| !c), "the fixture must exercise both cases");
    let plain = trace("mixtral", Interventions::default(), 0);
    let rerouted =
        trace("mixtral", Interventions::new(vec![Intervention::Expert { layer: 0, expert: 2, method: ExpertMethod::Reroute }]), 0);
    let d = diff(&plain, &rerouted).unwrap();
    assert_eq!(d.first_divergence, None, "a forward pass over the same tokens");
    let (layer, flips) = &d.routing_flips[0];
    assert_eq!(*layer, 0);
    assert_eq!(flips, &chose);
    // KL is 0 (to float noise) up to the first position that chose expert 2, positive there.
    let first = chose.iter().position(|&c| c).unwrap();
    let kl = d.kl.as_ref().unwrap();
    assert!(kl[..first].iter().all(|&x| x < 1e-9), "{kl:?}");
    assert!(kl[first] > 1e-4);
}

/// A compare cell's routing changes are teacher-forced on the original run's tokens: with an
/// six of layer 2's experts rerouted, layers 0 and 1 never change, although the free-running texts
/// part and then every layer's routing differs.
#[test]
fn compare_routing_changes_are_caused_by_the_interventions_alone() {
    use routelab_probes::jobs::compare::CompareJob;
    use routelab_probes::jobs::{Cancel, Job};
    let s = Session::load(&ModelSource::parse("tiny-moe").unwrap(), &LoadOptions::default(), &mut |_| {}).unwrap();
    let run = |iv: Interventions| {
        let req = RunRequest {
            tokens: s.encode(&Prompt::text("Once upon a time")).unwrap(),
            max_new_tokens: 24,
            sampling: SamplingSettings::default(),
            capture: CaptureSpec::default(),
            interventions: iv,
            stop_at_eos: false,
            replay: None,
        };
        Trace::from_run(s.run(&req, &mut |_| true).unwrap(), "tiny-moe", s.config(), "Once upon a time")
    };
    // Six of layer 2's eight experts rerouted: enough to part the texts.
    let iv = Interventions::new((0..6).map(|expert| Intervention::Expert { layer: 2, expert, method: ExpertMethod::Reroute }).collect());
    let (a, b) = (run(Interventions::default()), run(iv.clone()));
    let free = diff(&a, &b).unwrap();
    let free_rate = |l: usize| free.flip_rates().into_iter().find(|(x, _)| *x == l).unwrap().1;
    assert!(
        free.first_divergence.is_some() && free_rate(0) > 0.0,
        "the texts must part for this test to mean anything: {:?} {:?}",
        free.first_divergence,
        free.flip_rates()
    );
    let summary = CompareJob { a: a.clone(), b, b_interventions: iv }.execute(&s, &mut |_| {}, &Cancel::new()).unwrap();
    let rate = |l: usize| summary.flip_rates.iter().find(|(x, _)| *x == l).unwrap().1;
    assert_eq!((rate(0), rate(1)), (0.0, 0.0), "{:?}", summary.flip_rates);
    assert!(rate(2) > 0.0, "{:?}", summary.flip_rates);
    assert_eq!(summary.kl.len(), a.len());
    assert_eq!(summary.first_divergence, free.first_divergence);
}

/// Softmax routing's margin recomputed from the router logits: the gap between the k-th and
/// (k+1)-th softmax probabilities.
fn softmax_margin(logits: &[f32], k: usize) -> f64 {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&x| (x as f64 - m).exp()).sum();
    let mut p: Vec<f64> = logits.iter().map(|&x| (x as f64 - m).exp() / z).collect();
    p.sort_by(|a, b| b.total_cmp(a));
    p[k - 1] - p[k]
}

/// The margin view holds each token's routing margin, which is (for mixtral's softmax router)
/// the gap between the k-th and (k+1)-th probabilities of its router logits.
#[test]
fn the_margin_view_holds_the_gap_between_the_kth_and_next_router_probability() {
    let t = trace("mixtral", Interventions::default(), 3);
    let v = views::routing_margin(&t).unwrap();
    let table = v.table();
    assert_eq!(table.rows.len(), t.len() * t.num_layers());
    for row in &table.rows {
        let (p, l): (usize, usize) = (row[0].parse().unwrap(), row[3].parse().unwrap());
        let r = t.router(l).unwrap();
        let want = softmax_margin(r.logits_at(p), r.top_k);
        let got: f64 = row[4].parse().unwrap();
        assert!((got - want).abs() < 1e-5, "layer {l} position {p}: {got} vs {want}");
    }
    assert!(v.png().unwrap().starts_with(b"\x89PNG"));
}

/// Routing fidelity counts, per layer and margin bin, the positions where the second setting's
/// top-k set differs teacher-forced on the first's tokens: recomputed here from two separate
/// runs (bf16 against f32 weights on tiny-moe), with margins from the router logits. The
/// same setting twice flips nothing.
#[test]
fn routing_fidelity_counts_flips_by_margin_as_two_runs_show_them() {
    use routelab_probes::analysis::fidelity::{bin_of, routing_fidelity, FidelitySettings};
    use routelab_probes::jobs::Cancel;
    let load = |dtype: &str| {
        Session::load(&ModelSource::parse("tiny-moe").unwrap(), &LoadOptions::parse("cpu", Some(dtype)).unwrap(), &mut |_| {}).unwrap()
    };
    let (a, b) = (load("f32"), load("bf16"));
    let prompts = ["Once upon a time", "fn main() {", "The capital of France is"];
    let settings = FidelitySettings { prompts: prompts.iter().map(|p| Prompt::text(p)).collect(), max_new_tokens: 64 };
    let r = routing_fidelity(&a, &b, ("f32", "bf16"), &settings, &mut |_| {}, &Cancel::new()).unwrap();
    let mut want: std::collections::BTreeMap<(usize, usize), (usize, usize)> = Default::default();
    for (i, prompt) in prompts.iter().enumerate() {
        let tokens = a.encode(&Prompt::text(prompt)).unwrap();
        let req = RunRequest {
            tokens,
            max_new_tokens: 64,
            sampling: SamplingSettings::default(),
            capture: CaptureSpec::items(&["router"]),
            interventions: Interventions::default(),
            stop_at_eos: true,
            replay: None,
        };
        let ra = a.run(&req, &mut |_| true).unwrap();
        let ta = ra.store.tokens().to_vec();
        assert_eq!(r.prompts[i].positions, ta.len());
        let rb = b.run(&RunRequest::forward(ta.clone(), CaptureSpec::items(&["router"]), Interventions::default()), &mut |_| true).unwrap();
        for l in 0..a.config().num_layers {
            let (xa, xb) = (ra.store.router(l).unwrap(), rb.store.router(l).unwrap());
            for p in 0..ta.len() {
                let bin = bin_of(softmax_margin(xa.logits_at(p), xa.top_k));
                let (mut ea, mut eb) = (xa.experts_at(p).to_vec(), xb.experts_at(p).to_vec());
                ea.sort();
                eb.sort();
                let e = want.entry((l, bin)).or_default();
                e.0 += 1;
                e.1 += usize::from(ea != eb);
            }
        }
    }
    let mut got: std::collections::BTreeMap<(usize, usize), (usize, usize)> = Default::default();
    for l in &r.layers {
        for (i, bin) in l.bins.iter().enumerate() {
            if bin.positions > 0 {
                got.insert((l.layer, i), (bin.positions, bin.flips));
            }
        }
        assert_eq!(l.flips, l.bins.iter().map(|b| b.flips).sum::<usize>());
    }
    assert_eq!(got, want);
    assert!(r.layers.iter().any(|l| l.flips > 0), "bf16 flips some near ties on these prompts; the counting needs some");
    // The same setting twice: nothing flips and the texts never part.
    let same = routing_fidelity(&a, &a, ("f32", "f32"), &settings, &mut |_| {}, &Cancel::new()).unwrap();
    assert!(same.layers.iter().all(|l| l.flips == 0) && same.prompts.iter().all(|p| p.texts_part_at.is_none()));
}

#[test]
fn every_trace_view_exports_png_svg_and_a_csv_that_round_trips() {
    let t = trace("qwen2_moe", Interventions::default(), 4);
    let dir = tempfile::tempdir().unwrap();
    let made = [
        ("expert-load", views::expert_load(&t).unwrap()),
        ("routing", views::routing_map(&t).unwrap()),
        ("margin", views::routing_margin(&t).unwrap()),
        ("heads", views::heads_view(&t).unwrap()),
        ("coactivation", views::coactivation(&t, None).unwrap()),
        ("router-entropy", views::router_entropy(&t).unwrap()),
        ("contributions", views::contributions(&t).unwrap()),
    ];
    for (name, v) in &made {
        v.write_all(dir.path(), name).unwrap();
        let png = std::fs::read(dir.path().join(format!("{name}.png"))).unwrap();
        let img = image_size(&png);
        assert!(img.0 >= 1000 && img.1 >= 500, "{name}: {img:?}");
        let svg = std::fs::read_to_string(dir.path().join(format!("{name}.svg"))).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}.svg does not parse: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: String = doc.descendants().filter_map(|n| n.text()).collect::<Vec<_>>().join(" ");
        assert!(texts.contains("layer") || texts.contains("expert"), "{name}.svg has no axis labels: {texts}");
        let csv = Table::read(&dir.path().join(format!("{name}.csv"))).unwrap();
        assert_eq!(&csv, v.table(), "{name}.csv does not round-trip");
    }
    // The expert-load table holds the loads computed from the trace's own routing.
    let csv = made[0].1.table();
    let (cl, ce, cs) = (csv.column("layer").unwrap(), csv.column("expert").unwrap(), csv.column("selections").unwrap());
    for l in 0..t.num_layers() {
        if let Some(r) = t.router(l) {
            let want = load(r.experts, r.weights, r.num_experts);
            for row in csv.rows.iter().filter(|row| row[cl] == l.to_string()) {
                let e: usize = row[ce].parse().unwrap();
                assert_eq!(row[cs].parse::<usize>().unwrap(), want.counts[e]);
            }
        }
    }
}

/// Width and height from a PNG's IHDR chunk.
fn image_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[1..4], b"PNG");
    (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()))
}

#[test]
fn needle_trials_have_the_asked_length_and_their_answers_where_they_say() {
    use routelab_probes::analysis::needle::{build_trials, NeedleFormat, NeedleGrid};
    let s = Session::load(&ModelSource::Dir(case_dir("llama")), &LoadOptions::default(), &mut |_| {}).unwrap();
    let haystack = std::fs::read_to_string(routelab_model::source::assets_dir().join("texts/haystack.txt")).unwrap();
    let format = NeedleFormat::passkey();
    let grid = NeedleGrid { lengths: vec![100, 120], depths: vec![0.0, 0.5, 1.0], per_cell: 2, seed: 3 };
    let trials = build_trials(&s, &haystack, &format, &grid).unwrap();
    assert_eq!(trials.len(), 12);
    let question = s.tokenizer.encode(&format.question, false).unwrap();
    for t in &trials {
        assert_eq!(t.tokens.len(), t.length, "{}", t.id);
        assert_eq!(t.tokens[0], s.config().bos_token_id.unwrap(), "passkey prompts start with BOS");
        assert!(t.tokens.ends_with(&question));
        // The passkey appears twice in the needle, and the tokens there are the answer's.
        assert_eq!(t.answer_spans.len(), 2);
        for span in &t.answer_spans {
            assert_eq!(&t.tokens[span.clone()], &t.answer[..]);
        }
        assert_eq!(s.tokenizer.decode(&t.answer, false).unwrap().trim(), t.answer_text);
        // Depth 0 puts the needle right after BOS; depth 1 right before the question.
        let head = s.tokenizer.encode(" The passkey is", false).unwrap();
        let tail = s.tokenizer.encode(" is the passkey. ", false).unwrap();
        if t.depth == 0.0 {
            assert!(t.tokens[1..].starts_with(&head), "{}", t.id);
        }
        if t.depth == 1.0 {
            assert_eq!(&t.tokens[t.answer_spans[1].end..t.length - question.len()], &tail[..], "{}", t.id);
        }
    }
    // Answers differ between trials (seeded, reproducible).
    let again = build_trials(&s, &haystack, &format, &grid).unwrap();
    assert_eq!(again, trials);
    assert!(trials.iter().map(|t| &t.answer_text).collect::<std::collections::BTreeSet<_>>().len() > 6);
}

/// Heads × experts on tiny-moe, counted again from separate runs of the same trials: each run
/// with the head statistics and the router recorded (another capture than the job's), the copy
/// rule written out here (a head's argmax inside the answer, on the token produced next), and each
/// MoE layer's selections tallied at the steps where any chosen head copies and at the others.
/// tiny-moe has few retrieval heads, so the heads are named: every head of every layer.
#[test]
fn heads_experts_counts_the_experts_separate_runs_select_where_heads_copy() {
    use routelab_model::hooks::{HookPoint, Quantity};
    use routelab_probes::analysis::heads_experts::HeadChoice;
    use routelab_probes::jobs::heads_experts::{HeadsExpertsJob, HeadsExpertsSettings};
    use routelab_probes::jobs::scan::NeedleSettings;
    use routelab_probes::jobs::{Cancel, Job};
    use std::collections::BTreeMap;
    let s = Session::load(&ModelSource::parse("tiny-moe").unwrap(), &LoadOptions::default(), &mut |_| {}).unwrap();
    let c = s.config();
    let heads: Vec<(usize, usize)> = (0..c.num_layers).flat_map(|l| (0..c.attention.num_heads).map(move |h| (l, h))).collect();
    let needle = NeedleSettings { lengths: vec![160], depths: vec![0.0, 0.5, 1.0], per_cell: 1, seed: 5, ..Default::default() };
    let trials = needle.trials(&s).unwrap();
    for teacher_forced in [true, false] {
        let settings = HeadsExpertsSettings { needle: needle.clone(), teacher_forced, ..Default::default() };
        let job = HeadsExpertsJob { settings, heads: HeadChoice::Heads(heads.clone()) };
        let r = job.execute(&s, &mut |_| {}, &Cancel::new()).unwrap().report;
        // (layer, expert) -> (steps selecting it where a head copies, other steps selecting it).
        let mut want: BTreeMap<(usize, usize), (usize, usize)> = BTreeMap::new();
        let (mut positions, mut copy_positions, mut copy_events) = (0, 0, 0);
        for t in &trials {
            let (req, prompt_len) = if teacher_forced {
                let tokens = [t.tokens.clone(), t.answer.clone()].concat();
                (RunRequest::forward(tokens, CaptureSpec::items(&["stats", "router"]), Interventions::default()), t.tokens.len())
            } else {
                let req = RunRequest {
                    tokens: t.tokens.clone(),
                    max_new_tokens: t.answer.len() + 2,
                    sampling: SamplingSettings::default(),
                    capture: CaptureSpec::items(&["stats", "router"]),
                    interventions: Interventions::default(),
                    stop_at_eos: true,
                    replay: None,
                };
                (req, t.tokens.len())
            };
            let run = s.run(&req, &mut |_| true).unwrap();
            let tokens = run.store.tokens();
            // Each token after the prompt is produced from the query before it.
            for p in prompt_len..tokens.len() {
                let (q, w) = (p - 1, tokens[p]);
                let copying = heads
                    .iter()
                    .filter(|&&(l, h)| {
                        let j = run.store.row_u32(&HookPoint::layer(l, Quantity::AttnArgmax), q).unwrap()[h] as usize;
                        t.answer_spans.iter().any(|span| span.contains(&j)) && tokens[j] == w
                    })
                    .count();
                positions += 1;
                copy_events += copying;
                copy_positions += usize::from(copying > 0);
                for l in (0..c.num_layers).filter(|&l| c.moe(l).is_some()) {
                    for &e in run.store.router(l).unwrap().experts_at(q) {
                        let tally = want.entry((l, e as usize)).or_default();
                        if copying > 0 {
                            tally.0 += 1;
                        } else {
                            tally.1 += 1;
                        }
                    }
                }
            }
        }
        let mode = if teacher_forced { "teacher-forced" } else { "generate" };
        assert_eq!((r.positions, r.copy_positions, r.copy_events), (positions, copy_positions, copy_events), "{mode}");
        let got: BTreeMap<(usize, usize), (usize, usize)> = r
            .layers
            .iter()
            .flat_map(|l| {
                l.experts.iter().filter(|e| e.at_copy + e.elsewhere > 0).map(move |e| ((l.layer, e.expert), (e.at_copy, e.elsewhere)))
            })
            .collect();
        assert_eq!(got, want, "{mode}");
        // Shares are of steps; 0 / 0 (no step on that side) is undefined on both sides.
        let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
        for e in r.layers.iter().flat_map(|l| &l.experts) {
            assert!(same(e.share_copy, e.at_copy as f64 / copy_positions as f64), "{mode}");
            assert!(same(e.share_elsewhere, e.elsewhere as f64 / (positions - copy_positions) as f64), "{mode}");
        }
        if teacher_forced {
            // Without copy steps the comparison would be empty and this test would check nothing.
            assert!(copy_positions > 0 && copy_positions < positions, "{copy_positions} of {positions}");
            // The view: one row per MoE layer and expert, a CSV that round-trips, a plot.
            let v = views::heads_experts(&r, "tiny-moe");
            assert_eq!(v.table().rows.len(), c.moe_layers().count() * c.max_experts());
            let dir = tempfile::tempdir().unwrap();
            v.write_all(dir.path(), "hx").unwrap();
            assert_eq!(&Table::read(&dir.path().join("hx.csv")).unwrap(), v.table());
            assert!(std::fs::read(dir.path().join("hx.png")).unwrap().starts_with(b"\x89PNG"));
        }
    }
}

/// On tiny-dense, patching each head's output at the answer position from a needle prompt into
/// the same prompt with another passkey moves the answer only through the heads the retrieval
/// scan finds: the cells that recover most of the logit difference are retrieval heads.
#[test]
fn patching_the_needle_task_localises_the_answer_to_the_retrieval_heads() {
    use routelab_probes::analysis::patching::{sweep, Metric, PatchSettings, SweepSite};
    use routelab_probes::jobs::scan::{NeedleSettings, ScanJob, ScanSettings};
    use routelab_probes::jobs::{Cancel, Job};
    let s = Session::load(&ModelSource::parse("tiny-dense").unwrap(), &LoadOptions::default(), &mut |_| {}).unwrap();
    let needle = NeedleSettings { lengths: vec![160], depths: vec![0.0, 0.5, 1.0], per_cell: 2, seed: 11, ..Default::default() };
    let scan = ScanJob {
        settings: ScanSettings { needle: needle.clone(), teacher_forced: true },
        interventions: Interventions::default(),
        state: None,
    };
    let scores = scan.execute(&s, &mut |_| {}, &Cancel::new()).unwrap().head_scores();
    let retrieval: Vec<(usize, usize)> = scores.ranked(0.1).into_iter().map(|(l, h, _)| (l, h)).collect();
    assert!(!retrieval.is_empty(), "the scan found no retrieval heads");

    let digits: Vec<u32> = (0..10).map(|d| s.tokenizer.encode(&d.to_string(), false).unwrap()[0]).collect();
    let trial = &needle.trials(&s).unwrap()[0];
    let first = trial.answer.iter().position(|t| digits.contains(t)).unwrap();
    // The prompt up to the answer's first digit, which the last position predicts.
    let clean = [trial.tokens.clone(), trial.answer[..first].to_vec()].concat();
    let digit = |t: u32| digits.iter().position(|&d| d == t);
    let mut corrupt = clean.clone();
    for span in &trial.answer_spans {
        for p in span.clone() {
            if let Some(d) = digit(clean[p]) {
                corrupt[p] = digits[(d + 5) % 10];
            }
        }
    }
    let a = digit(trial.answer[first]).unwrap();
    let metric = Metric::LogitDiff { answer: a.to_string(), other: ((a + 5) % 10).to_string() };
    let last = clean.len() - 1;
    let settings = PatchSettings { site: SweepSite::Head, metric, layers: None, positions: Some(vec![last]) };
    let r = sweep(&s, &clean, &corrupt, &settings, &mut |_| true).unwrap();
    assert!(r.clean_metric > 0.0 && r.corrupt_metric < 0.0, "the model reads the passkey: {} / {}", r.clean_metric, r.corrupt_metric);
    let mut cells: Vec<((usize, usize), f64)> = r
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, &l)| r.columns.iter().enumerate().map(move |(j, &h)| ((l, h), (i, j))))
        .map(|(lh, (i, j))| (lh, r.recovered[i][j]))
        .collect();
    cells.sort_by(|x, y| y.1.total_cmp(&x.1));
    eprintln!("retrieval heads {retrieval:?}; best patched heads {:?}", &cells[..6]);
    for (head, recovered) in &cells[..3] {
        assert!(retrieval.contains(head), "head {head:?} recovers {recovered:.3} but is not a retrieval head ({retrieval:?})");
    }
    // Heads the scan does not name move the answer by little.
    let others = cells.iter().filter(|(h, _)| !retrieval.contains(h)).map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
    assert!(others < cells[0].1 / 2.0, "a non-retrieval head recovers {others:.3}");
}
