//! Renders one of each plot kind to /tmp for a visual check.
use routelab_probes::export::figure::write_plot;
use routelab_probes::export::plots::*;

fn main() {
    let h = Heatmap {
        title: "Expert load by layer (tiny example)".into(),
        x_label: "expert".into(),
        y_label: "layer".into(),
        row_labels: (0..6).map(|l| l.to_string()).collect(),
        col_labels: (0..8).map(|e| format!("e{e}")).collect(),
        values: (0..6).map(|r| (0..8).map(|c| ((r * 7 + c * 3) % 11) as f64 / 40.0).collect()).collect(),
        scale_label: "share of selections".into(),
        range: None,
        annotate: true,
    };
    write_plot(&h, std::path::Path::new("/tmp/heat.png")).unwrap();
    let big = Heatmap {
        col_labels: (0..64).map(|e| format!("e{e}")).collect(),
        values: (0..16).map(|r| (0..64).map(|c| ((r * 7 + c * 3) % 11) as f64).collect()).collect(),
        row_labels: (0..16).map(|l| l.to_string()).collect(),
        annotate: false,
        ..h.clone()
    };
    write_plot(&big, std::path::Path::new("/tmp/heat64.png")).unwrap();
    let b = Bars {
        title: "Needle accuracy under head masking".into(),
        x_label: "intervention".into(),
        y_label: "accuracy (%)".into(),
        categories: vec!["none".into(), "top-10 retrieval".into(), "10 random".into()],
        series: vec![("depth 10%".into(), vec![95.0, 20.0, 90.0]), ("depth 50%".into(), vec![92.0, 10.0, 88.0])],
    };
    write_plot(&b, std::path::Path::new("/tmp/bars.png")).unwrap();
    let toks: Vec<String> =
        "fn main() { let x = 42; println!(\"{x}\"); } The passkey is 48213".split_inclusive(' ').map(|s| s.to_string()).collect();
    let m = CategoryMap {
        title: "Top-1 expert per token and layer".into(),
        x_label: "token".into(),
        y_label: "layer".into(),
        col_labels: toks.clone(),
        row_labels: (0..6).map(|l| format!("layer {l}")).collect(),
        cells: (0..6).map(|r| (0..toks.len()).map(|c| if r == 0 { None } else { Some((r * 3 + c) % 8) }).collect()).collect(),
        category_names: (0..8).map(|e| format!("e{e}")).collect(),
    };
    write_plot(&m, std::path::Path::new("/tmp/map.png")).unwrap();
    let l = Lines {
        title: "Next-token KL along the sequence".into(),
        x_label: "position".into(),
        y_label: "KL (nats)".into(),
        series: vec![
            ("masked e3".into(), (0..30).map(|i| (i as f64, (i as f64 * 0.3).sin().abs())).collect()),
            ("masked e5".into(), (0..30).map(|i| (i as f64, 0.2)).collect()),
        ],
    };
    write_plot(&l, std::path::Path::new("/tmp/lines.png")).unwrap();
}
