//! How sizes and file counts read, the same in the command line and the GUI.

use routelab_model::hub::Quant;

/// `1.50 GiB`, `12.3 MiB`, `80.0 KiB`.
pub fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// A quant's files: `1 file`, `3 shards`, or `2 of 3 shards cached` when a cache listing
/// lacks some.
pub fn quant_files(q: &Quant) -> String {
    match (q.shards, q.is_complete()) {
        (1, _) => "1 file".into(),
        (n, true) => format!("{n} shards"),
        (n, false) => format!("{} of {n} shards cached", q.files.len()),
    }
}

/// A quant's size, `incomplete` for a cache listing that lacks shards, or `size unknown`.
pub fn quant_size(q: &Quant) -> String {
    match q.bytes {
        _ if !q.is_complete() => "incomplete".into(),
        Some(b) => bytes(b),
        None => "size unknown".into(),
    }
}
