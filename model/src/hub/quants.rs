//! The quants of a GGUF repo, from its file list alone: which `.gguf` files hold which
//! quantization (`Q4_K_M`, `IQ4_XS`, `BF16`, …) as llama.cpp and the people who publish its
//! files name them, shards grouped. Pure functions over `(path, size)`, so they are the same
//! for a listing from the hub and one from the local cache.
//!
//! Names seen in the wild: `Name-Q4_K_M.gguf`, `name.Q4_K_M.gguf`, `name.q4_k_m.gguf`,
//! `Q4_K_M/Name-Q4_K_M-00001-of-00003.gguf`, `BF16/Name-00001-of-00002.gguf` (the tag in the
//! folder only), `Name-UD-Q4_K_XL.gguf` (Unsloth's dynamic quants), `Name-Q4_0_4_4.gguf`.
//! Beside them: vision projectors (`mmproj-*.gguf`) and importance matrices (`imatrix*.gguf`),
//! which are not models.

use std::collections::BTreeMap;

use serde::Serialize;

/// One quantization of a model in a repo: its file, or all its shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quant {
    /// The canonical tag, upper case: `Q4_K_M`, `UD-Q4_K_XL`, `BF16`.
    pub name: String,
    /// Repo-relative paths, shards in order; only those listed (a cache may hold some shards).
    pub files: Vec<String>,
    /// Files the quant has in all: N of `-0000n-of-0000N`, else 1.
    pub shards: usize,
    /// Total size of `files` when every size is known.
    pub bytes: Option<u64>,
}

impl Quant {
    /// Every shard is listed.
    pub fn is_complete(&self) -> bool {
        self.files.len() == self.shards
    }

    /// The file that opens the model (any shard does; the first is conventional).
    pub fn first_file(&self) -> &str {
        &self.files[0]
    }

    /// The shard numbers (from 1) not listed.
    pub fn missing_shards(&self) -> Vec<usize> {
        let number = |f: &String| shard_name(f.rsplit('/').next().unwrap_or(f)).map_or(1, |s| s.1);
        (1..=self.shards).filter(|n| !self.files.iter().any(|f| number(f) == *n)).collect()
    }
}

/// The canonical form of a user's quant name (`q4_k_m` → `Q4_K_M`), or `None` if it is not
/// one.
pub fn normalize(quant: &str) -> Option<String> {
    let upper = quant.to_ascii_uppercase();
    let core = upper.strip_prefix("UD-").unwrap_or(&upper);
    is_tag(core).then_some(upper)
}

/// Whether `s` (upper case) is a quant tag: `F32`, `F16`, `BF16`, `MXFP4(_MOE)`, or
/// `Q|IQ|TQ<bits>` followed by `_` parts (digits, `K`, or a size such as `M`, `XS`, `NL`).
/// Whole tags only, so `Q4_K` and `Q4_K_M`, `Q4_0` and `Q4_0_4_4` stay apart.
fn is_tag(s: &str) -> bool {
    if ["F32", "F16", "BF16", "FP32", "FP16", "MXFP4", "MXFP4_MOE"].contains(&s) {
        return true;
    }
    let mut parts = s.split('_');
    let head = parts.next().unwrap_or_default();
    let bits = ["IQ", "TQ", "Q"].iter().find_map(|p| head.strip_prefix(p));
    if !bits.is_some_and(|b| !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    const SIZES: [&str; 8] = ["XXS", "XS", "S", "M", "L", "XL", "XXL", "NL"];
    !rest.is_empty() && rest.iter().all(|p| (!p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())) || *p == "K" || SIZES.contains(p))
}

/// The last quant tag among the `-`/`.`-separated pieces of `name` (a file stem or a folder),
/// with Unsloth's `UD-` kept as part of it. The last one, since llama.cpp's names end with the
/// tag and a model's own name may hold something tag-like earlier.
fn tag_in(name: &str) -> Option<String> {
    let pieces: Vec<&str> = name.split(['-', '.']).collect();
    let i = pieces.iter().rposition(|p| is_tag(&p.to_ascii_uppercase()))?;
    let tag = pieces[i].to_ascii_uppercase();
    Some(if i > 0 && pieces[i - 1].eq_ignore_ascii_case("UD") { format!("UD-{tag}") } else { tag })
}

/// `(stem, n, count)` of a shard's file name `stem-0000n-of-0000N.gguf`, as llama.cpp's
/// `gguf-split` writes it.
pub fn shard_name(file_name: &str) -> Option<(&str, usize, usize)> {
    let name = strip_gguf(file_name)?;
    let (rest, count) = name.rsplit_once("-of-")?;
    let (stem, n) = rest.rsplit_once('-')?;
    let ok = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !(ok(n) && ok(count)) {
        return None;
    }
    Some((stem, n.parse().ok()?, count.parse().ok()?))
}

fn strip_gguf(file_name: &str) -> Option<&str> {
    let cut = file_name.len().checked_sub(5)?;
    (file_name.is_char_boundary(cut) && file_name[cut..].eq_ignore_ascii_case(".gguf")).then(|| &file_name[..cut])
}

/// Files that end in `.gguf` but are not a model's weights.
fn is_auxiliary(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("mmproj") || lower.contains("imatrix")
}

/// The quant tag of a repo file, or `None` if it is not a model's GGUF file with one.
pub fn quant_of(path: &str) -> Option<String> {
    let (dirs, file) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = strip_gguf(file)?;
    if is_auxiliary(path) {
        return None;
    }
    let stem = shard_name(file).map_or(stem, |(s, _, _)| s);
    tag_in(stem).or_else(|| dirs.rsplit('/').find_map(tag_in))
}

/// The quants in a repo's file list, ordered by bits (smallest first), then by name. A tag
/// that two different models in one repo share gives two entries of that name.
pub fn group(files: &[(String, Option<u64>)]) -> Vec<Quant> {
    // One set of files per (tag, folder, stem, shard count): a model in one file, or its shards.
    type SetKey = (String, String, String, usize);
    let mut sets: BTreeMap<SetKey, BTreeMap<usize, (String, Option<u64>)>> = BTreeMap::new();
    for (path, size) in files {
        let Some(tag) = quant_of(path) else { continue };
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
        let (stem, n, count) = match shard_name(file) {
            Some((stem, n, count)) => (stem.to_string(), n, count),
            None => (file.to_string(), 1, 1),
        };
        sets.entry((tag, dir.to_string(), stem, count)).or_default().insert(n, (path.clone(), *size));
    }
    let mut quants: Vec<Quant> = sets
        .into_iter()
        .map(|((name, _, _, shards), files)| Quant {
            name,
            shards,
            bytes: files.values().map(|(_, s)| *s).sum(),
            files: files.into_values().map(|(p, _)| p).collect(),
        })
        .collect();
    quants.sort_by(|a, b| (bits(&a.name), &a.name).cmp(&(bits(&b.name), &b.name)));
    quants
}

/// Bits per weight a tag names, roughly, for ordering: `Q4_K_M` → 4, `BF16` → 16.
fn bits(tag: &str) -> u32 {
    let core = tag.strip_prefix("UD-").unwrap_or(tag);
    let digits: String = core.trim_start_matches(|c: char| c.is_ascii_alphabetic()).chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(u32::MAX)
}

/// The quants of `quants` named `wanted` (canonical form).
pub fn find<'a>(quants: &'a [Quant], wanted: &str) -> Vec<&'a Quant> {
    quants.iter().filter(|q| q.name == wanted).collect()
}

/// `Q4_K_M, Q8_0, F16` for messages.
pub fn names(quants: &[Quant]) -> String {
    let mut v: Vec<&str> = quants.iter().map(|q| q.name.as_str()).collect();
    v.dedup();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(paths: &[&str]) -> Vec<(String, Option<u64>)> {
        paths.iter().map(|p| (p.to_string(), Some(10))).collect()
    }

    #[test]
    fn tags_are_found_in_llama_cpp_style_names() {
        for (path, tag) in [
            ("Qwen3-30B-A3B-Q4_K_M.gguf", "Q4_K_M"),
            ("olmoe-1b-7b.Q8_0.gguf", "Q8_0"),
            ("mixtral-8x7b-instruct-v0.1.q4_k_m.gguf", "Q4_K_M"),
            ("Meta-Llama-3.1-8B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
            ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
            ("Llama-3.2-1B-Instruct-Q4_0_4_4.gguf", "Q4_0_4_4"),
            ("Q4_K_M/Qwen3-235B-A22B-Q4_K_M-00002-of-00003.gguf", "Q4_K_M"),
            ("BF16/Qwen3-30B-A3B-00001-of-00002.gguf", "BF16"),
            ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
            ("model-f16.gguf", "F16"),
            ("DeepSeek-V3-Q2_K_L-imat.gguf", "Q2_K_L"),
        ] {
            assert_eq!(quant_of(path).as_deref(), Some(tag), "{path}");
        }
    }

    #[test]
    fn projectors_imatrices_and_other_files_are_not_quants() {
        for path in [
            "mmproj-F16.gguf",
            "mmproj-Qwen2.5-VL-7B-Instruct-Q8_0.gguf",
            "imatrix.gguf",
            "Qwen3-30B-A3B.imatrix.gguf",
            "Qwen3-30B-A3B-Q4_K_M.gguf.part",
            "README.md",
            "ggml-model.gguf",
            "Qwen3-30B-A3B.gguf",
        ] {
            assert_eq!(quant_of(path), None, "{path}");
        }
    }

    #[test]
    fn prefixes_of_a_tag_are_other_tags() {
        let q = group(&listing(&["m-Q4_K.gguf", "m-Q4_K_M.gguf", "m-Q4_0.gguf", "m-Q4_0_4_4.gguf"]));
        let names: Vec<&str> = q.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["Q4_0", "Q4_0_4_4", "Q4_K", "Q4_K_M"]);
        assert_eq!(find(&q, "Q4_K")[0].files, ["m-Q4_K.gguf"]);
        assert_eq!(find(&q, "Q4_0")[0].files, ["m-Q4_0.gguf"]);
    }

    #[test]
    fn shards_group_into_one_quant_with_their_total_size() {
        let files = vec![
            ("Q8_0/M-Q8_0-00002-of-00002.gguf".to_string(), Some(30)),
            ("Q8_0/M-Q8_0-00001-of-00002.gguf".to_string(), Some(70)),
            ("M-Q4_K_M.gguf".to_string(), Some(60)),
            ("M-IQ2_XXS.gguf".to_string(), None),
            ("mmproj-F16.gguf".to_string(), Some(5)),
            ("README.md".to_string(), Some(1)),
        ];
        let q = group(&files);
        assert_eq!(q.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["IQ2_XXS", "Q4_K_M", "Q8_0"]);
        let q8 = &find(&q, "Q8_0")[0];
        assert_eq!(q8.files, ["Q8_0/M-Q8_0-00001-of-00002.gguf", "Q8_0/M-Q8_0-00002-of-00002.gguf"]);
        assert_eq!((q8.shards, q8.bytes, q8.is_complete()), (2, Some(100), true));
        assert_eq!(find(&q, "IQ2_XXS")[0].bytes, None, "a size unknown leaves the total unknown");
        assert_eq!(names(&q), "IQ2_XXS, Q4_K_M, Q8_0");
    }

    #[test]
    fn a_partial_set_of_shards_is_incomplete() {
        let q = group(&listing(&["M-BF16-00001-of-00003.gguf", "M-BF16-00003-of-00003.gguf"]));
        assert_eq!((q[0].shards, q[0].files.len(), q[0].is_complete()), (3, 2, false));
        assert_eq!(q[0].missing_shards(), [2]);
    }

    #[test]
    fn two_models_with_one_tag_stay_two_entries() {
        let q = group(&listing(&["Base-Q4_K_M.gguf", "Instruct-Q4_K_M.gguf"]));
        assert_eq!(find(&q, "Q4_K_M").len(), 2);
        assert_eq!(names(&q), "Q4_K_M");
    }

    #[test]
    fn user_quant_names_are_case_insensitive() {
        assert_eq!(normalize("q4_k_m").as_deref(), Some("Q4_K_M"));
        assert_eq!(normalize("ud-q4_k_xl").as_deref(), Some("UD-Q4_K_XL"));
        assert_eq!(normalize("bf16").as_deref(), Some("BF16"));
        for bad in ["", "Q4", "K_M", "Q4_K_M_FOO", "main", "\\models\\m.gguf"] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn shard_names() {
        assert_eq!(shard_name("olmoe.Q4_K_M-00002-of-00003.gguf"), Some(("olmoe.Q4_K_M", 2, 3)));
        assert_eq!(shard_name("a-1-of-3.gguf"), None);
        assert_eq!(shard_name("model.gguf"), None);
    }
}
