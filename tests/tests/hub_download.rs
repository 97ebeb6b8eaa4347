//! Downloads from the hub, against a local server that answers as huggingface.co does (the
//! listing API with sizes and LFS hashes, `resolve/` with range requests, `x-repo-commit`,
//! `x-linked-etag`, `content-range`), reached through `HF_ENDPOINT`: the real hf-hub client
//! and RouteLab's checks on what it downloads. Some repositories on the server lie.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::OnceLock;

use routelab_model::hub::verify::sha256;
use routelab_model::hub::Hub;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One file of a served repository: what the listing says, and what is sent.
#[derive(Clone)]
struct Served {
    listed: Vec<u8>,
    sent: Vec<u8>,
    lfs: bool,
    etag: Option<String>,
}

impl Served {
    fn honest(bytes: &[u8], lfs: bool) -> Self {
        Served { listed: bytes.to_vec(), sent: bytes.to_vec(), lfs, etag: None }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, bytes).unwrap();
    sha256(&p).unwrap()
}

fn weights() -> Vec<u8> {
    (0..200_000u32).flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes()).collect()
}

fn repos() -> HashMap<String, HashMap<String, Served>> {
    let config = br#"{"model_type": "llama"}"#.to_vec();
    let w = weights();
    let mut flipped = w.clone();
    flipped[12345] ^= 1;
    let checkpoint = |model: Served| {
        HashMap::from([("config.json".to_string(), Served::honest(&config, false)), ("model.safetensors".to_string(), model)])
    };
    let mut repos = HashMap::new();
    repos.insert("good/model".into(), checkpoint(Served::honest(&w, true)));
    // Same length, one bit changed: only the hash can tell.
    repos.insert("bad/corrupt".into(), checkpoint(Served { listed: w.clone(), sent: flipped, lfs: true, etag: None }));
    // The connection ends early: fewer bytes than listed.
    repos.insert("bad/short".into(), checkpoint(Served { listed: w.clone(), sent: w[..w.len() / 3].to_vec(), lfs: true, etag: None }));
    // A response header that would make hf-hub write outside its cache.
    repos.insert(
        "bad/etag".into(),
        checkpoint(Served { listed: w.clone(), sent: w.clone(), lfs: true, etag: Some("../../../../escaped".into()) }),
    );
    // A listed file name that climbs out of the repository.
    repos.insert("bad/name".into(), HashMap::from([("../../evil-Q8_0.gguf".to_string(), Served::honest(b"GGUF", true))]));
    repos
}

fn respond(mut stream: TcpStream, repos: &HashMap<String, HashMap<String, Served>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range_start = 0usize;
    let mut single_byte = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let v = v.trim();
            single_byte = v == "0-0";
            range_start = v.trim_end_matches('-').split('-').next().unwrap_or("0").parse().unwrap_or(0);
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) = if let Some(rest) = path.strip_prefix("/api/models/") {
        let repo = rest.split("/revision/").next().unwrap();
        match repos.get(repo) {
            Some(files) => {
                let siblings: Vec<serde_json::Value> = files
                    .iter()
                    .map(|(name, f)| {
                        let mut s = serde_json::json!({ "rfilename": name, "size": f.listed.len() });
                        if f.lfs {
                            s["lfs"] = serde_json::json!({ "sha256": hex_sha256(&f.listed), "size": f.listed.len() });
                        }
                        s
                    })
                    .collect();
                ("200 OK", vec![], serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string().into_bytes())
            }
            None => ("404 Not Found", vec![], b"{}".to_vec()),
        }
    } else {
        let found = repos.iter().find_map(|(repo, files)| {
            let file = path.strip_prefix(&format!("/{repo}/resolve/main/"))?;
            files.get(file)
        });
        match found {
            Some(f) => {
                let etag = f.etag.clone().unwrap_or_else(|| hex_sha256(&f.listed));
                let total = f.sent.len();
                let end = if single_byte { 0 } else { total.saturating_sub(1) };
                let body = f.sent.get(range_start..=end.min(total.saturating_sub(1))).unwrap_or(&[]).to_vec();
                // The range header always announces the listed size, as the real hub does.
                let headers = vec![
                    ("x-repo-commit".to_string(), COMMIT.to_string()),
                    (if f.lfs { "x-linked-etag" } else { "etag" }.to_string(), format!("\"{etag}\"")),
                    ("content-range".to_string(), format!("bytes {range_start}-{end}/{}", f.listed.len())),
                ];
                ("206 Partial Content", headers, body)
            }
            None => ("404 Not Found", vec![], vec![]),
        }
    };
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// The server, started once per test binary; `HF_ENDPOINT` points at it.
fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let repos = std::sync::Arc::new(repos());
            for stream in listener.incoming().flatten() {
                let repos = repos.clone();
                std::thread::spawn(move || respond(stream, &repos));
            }
        });
        // SAFETY: set once, before any test of this binary builds a hub client.
        unsafe { std::env::set_var("HF_ENDPOINT", &url) };
        url
    })
}

fn fetch(cache: &Path, repo: &str) -> Result<std::path::PathBuf, String> {
    endpoint();
    Hub::new(cache.to_path_buf(), false).fetch(repo, None, &mut |_| {}).map_err(|e| e.to_string())
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p.display().to_string())
            }
        }
    }
    let mut out = vec![];
    walk(dir, &mut out);
    out
}

#[test]
fn an_intact_download_is_kept_and_read_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = fetch(cache.path(), "good/model").unwrap();
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights());
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), br#"{"model_type": "llama"}"#);
}

#[test]
fn a_download_with_the_wrong_hash_is_refused_and_removed() {
    let cache = tempfile::tempdir().unwrap();
    let e = fetch(cache.path(), "bad/corrupt").unwrap_err();
    assert!(e.starts_with("bad/corrupt: model.safetensors did not download intact (SHA-256 "), "{e}");
    assert!(e.contains("where the hub lists") && e.contains("load it again"), "{e}");
    let left = files_under(cache.path());
    // (hf-hub leaves its `.lock` files.)
    let blob = hex_sha256(&weights());
    assert!(!left.iter().any(|f| f.ends_with("model.safetensors") || f.ends_with(&blob)), "{left:?}");
}

#[test]
fn a_short_download_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let e = fetch(cache.path(), "bad/short").unwrap_err();
    let (sent, listed) = (weights().len() / 3, weights().len());
    assert!(e.contains(&format!("model.safetensors did not download intact ({sent} bytes where the hub lists {listed})")), "{e}");
}

#[test]
fn hub_answers_cannot_write_outside_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let e = fetch(&cache, "bad/etag").unwrap_err();
    assert!(e.contains("bad/etag") && e.contains("not a plain name") && e.contains("escaped"), "{e}");
    assert!(!files_under(root.path()).iter().any(|f| f.contains("escaped")));
    let e = Hub::new(cache.clone(), false).fetch_quant("bad/name", None, "Q8_0", &mut |_| {}).map_err(|e| e.to_string()).unwrap_err();
    assert!(e.contains("bad/name: the hub lists") && e.contains("points outside"), "{e}");
    assert!(!files_under(root.path()).iter().any(|f| f.contains("evil")));
}
