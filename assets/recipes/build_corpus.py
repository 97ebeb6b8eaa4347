"""Build the RouteLab tiny-model corpus from redistributable text that is on this kind of
machine offline (no network needed):

  prose   narrative paragraphs of the Rust documentation that ships with the toolchain
          (The Rust Programming Language, the Rustonomicon, the Rust Reference, Rust by
          Example, the Edition Guide; MIT OR Apache-2.0) and CPython's pydoc topics
          (Lib/pydoc_data/topics.py; PSF-2.0)
  rust    code blocks of the same Rust books plus the sources (*.rs) of a fixed list of
          MIT/Apache-2.0 crates from the cargo registry (present after `cargo fetch` in
          this repository: they are all in Cargo.lock)
  python  CPython 3.11 standard-library modules (*.py, tests excluded; PSF-2.0)
  numbers synthetic tables, arithmetic, sequences and dated measurements (common.py)

The retrieval tasks (needle, key/value, copy) are generated on the fly from prose at
training and evaluation time (common.py) and are not part of the files written here.

Output: build/corpus/<domain>.<split>.jsonl ({"id", "text"} per line) and
build/corpus/manifest.json (sources, versions, licences, byte counts). Split: a document
is held out (valid) when crc32(id) % 20 == 0, else train.
"""
from __future__ import annotations

import ast
import hashlib
import html
import subprocess
import textwrap
import json
import random
import re
import sys
import sysconfig
import zlib
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, numbers_doc  # noqa: E402

RUSTUP = Path.home() / ".rustup" / "toolchains"
TOOLCHAIN = "1.95.0-x86_64-unknown-linux-gnu"
DOC_ROOT = RUSTUP / TOOLCHAIN / "share" / "doc" / "rust" / "html"
BOOKS = ["book", "nomicon", "reference", "rust-by-example", "edition-guide"]
CRATES = [  # name-version exactly as in Cargo.lock; licence from each crate's Cargo.toml
    ("anyhow-1.0.104", "MIT OR Apache-2.0"),
    ("itertools-0.14.0", "MIT OR Apache-2.0"),
    ("indexmap-2.14.2", "Apache-2.0 OR MIT"),
    ("hashbrown-0.16.1", "MIT OR Apache-2.0"),
    ("regex-1.13.2", "MIT OR Apache-2.0"),
    ("serde-1.0.229", "MIT OR Apache-2.0"),
    ("serde_json-1.0.154", "MIT OR Apache-2.0"),
    ("rayon-1.12.0", "MIT OR Apache-2.0"),
    ("rayon-core-1.13.0", "MIT OR Apache-2.0"),
    ("clap_builder-4.6.7", "MIT OR Apache-2.0"),
    ("base64-0.23.1", "MIT OR Apache-2.0"),
    ("rand-0.9.5", "MIT OR Apache-2.0"),
    ("either-1.19.0", "MIT OR Apache-2.0"),
    ("smallvec-1.16.6", "MIT OR Apache-2.0"),
    ("half-2.7.1", "MIT OR Apache-2.0"),
    ("thiserror-2.0.21", "MIT OR Apache-2.0"),
    ("safetensors-0.8.0", "Apache-2.0"),
    ("unicode-segmentation-1.13.3", "MIT OR Apache-2.0"),
]
PYDOC_DEB = ("python3.11-doc", "3.11.2-6+deb12u7")  # Debian bookworm; PSF-2.0
PYDOC_PARTS = ["tutorial", "howto", "faq", "reference", "using", "library", "whatsnew", "glossary.rst.txt"]
MAX_FILE = 120_000  # bytes; skips generated tables

_ASCII = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ",
          "\u2013": "-", "\u2026": "...", "\u00a0": " ", "\u2192": "->", "\u00d7": "x"}
_ASCII_RE = re.compile("|".join(map(re.escape, _ASCII)))


def english(text: str) -> bool:
    return sum(ord(c) > 127 for c in text) <= 0.02 * len(text)


def clean(text: str) -> str:
    return _ASCII_RE.sub(lambda m: _ASCII[m.group()], text)


class BookPage(HTMLParser):
    """Collects the paragraphs and the code blocks of an mdBook page's <main>."""
    BLOCK = {"p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "dt", "dd", "blockquote", "td", "th",
             "div", "section", "tr", "ul", "ol", "table"}
    SKIP = {"script", "style", "nav", "button", "head", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_main = 0
        self.skip = 0
        self.pre = 0
        self.code_lang = ""
        self.buf: list[str] = []
        self.code: list[str] = []
        self.paras: list[str] = []
        self.blocks: list[tuple[str, str]] = []

    def flush(self):
        t = re.sub(r"\s+", " ", "".join(self.buf)).strip()
        if len(t) > 40 and len(t.split()) > 6 and english(t):
            self.paras.append(t)
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag == "main":
            self.in_main += 1
        if not self.in_main:
            return
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "pre":
            self.flush()
            self.pre += 1
            self.code, self.code_lang = [], ""
        elif tag == "code" and self.pre:
            cls = dict(attrs).get("class") or ""
            m = re.search(r"language-(\w+)", cls)
            self.code_lang = m.group(1) if m else "rust"
        elif tag in self.BLOCK and not self.pre:
            self.flush()
        elif tag == "br" and not self.pre:
            self.buf.append(" ")

    def handle_endtag(self, tag):
        if tag == "main":
            self.flush()
            self.in_main -= 1
        if not self.in_main:
            return
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "pre" and self.pre:
            self.pre -= 1
            self.blocks.append((self.code_lang, "".join(self.code)))
        elif tag in self.BLOCK and not self.pre:
            self.flush()

    def handle_data(self, data):
        if not self.in_main or self.skip:
            return
        (self.code if self.pre else self.buf).append(data)


def rust_books(docs: dict):
    n_pages = 0
    for book in BOOKS:
        for page in sorted((DOC_ROOT / book).rglob("*.html")):
            rel = page.relative_to(DOC_ROOT).as_posix()
            parts = rel.split("/")
            if "first-edition" in parts or "2018-edition" in parts or \
                    (len(parts) > 2 and re.fullmatch(r"[a-z]{2}(-[A-Za-z]{2,4})?", parts[1])):
                continue  # old editions and translations
            if page.name in ("print.html", "toc.html", "404.html", "SUMMARY.html", "index.html") \
                    and book != "book" or page.name in ("print.html", "toc.html", "404.html"):
                continue
            p = BookPage()
            p.feed(page.read_text(encoding="utf-8", errors="replace"))
            n_pages += 1
            prose = "\n\n".join(clean(x) for x in p.paras)
            if len(prose) > 200:
                docs["prose"].append((f"rustdoc:{rel}", prose + "\n"))
            code = [clean(c).strip("\n") for lang, c in p.blocks if lang in ("rust", "rs")]
            code = "\n\n".join(c for c in code if len(c) > 20)
            if len(code) > 100:
                docs["rust"].append((f"rustdoc-code:{rel}", code + "\n"))
    return n_pages


def pydoc_topics(docs: dict, stdlib: Path):
    src = (stdlib / "pydoc_data" / "topics.py").read_text(encoding="utf-8")
    tree = ast.parse(src)
    topics = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign))
    for name in sorted(topics):
        text = clean(topics[name])
        # keep paragraphs of running text; indented examples and grammar productions go
        paras = []
        for para in re.split(r"\n\s*\n", text):
            lines = para.split("\n")
            if any(l.lstrip().startswith((">>>", "...", "::=")) for l in lines):
                continue
            if sum(l.startswith("   ") for l in lines) > len(lines) // 2 and \
                    not all(l.startswith("   ") and not l.startswith("      ") for l in lines):
                continue
            t = re.sub(r"\s+", " ", para).strip()
            if len(t) > 40 and len(t.split()) > 6:
                paras.append(t)
        if paras:
            docs["prose"].append((f"pydoc-topics:{name}", "\n\n".join(paras) + "\n"))
    return len(topics)


def fetch_python_docs():
    """apt-get download + dpkg -x of Debian's python3.11-doc into build/debian (reST sources)."""
    dest = CORPUS.parent / "debian"
    root = dest / "x" / "usr" / "share" / "doc" / "python3.11" / "html" / "_sources"
    name, version = PYDOC_DEB
    if not root.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        debs = list(dest.glob(f"{name}_*.deb"))
        if not debs:
            try:
                subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=dest, check=True)
            except subprocess.CalledProcessError:
                print(f"{name}={version} not available; taking the current candidate", file=sys.stderr)
                subprocess.run(["apt-get", "download", name], cwd=dest, check=True)
            debs = list(dest.glob(f"{name}_*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[0]), str(dest / "x")], check=True)
    deb = next(dest.glob(f"{name}_*.deb"), None)
    sha = hashlib.sha256(deb.read_bytes()).hexdigest() if deb else None
    return root, {"package": name, "file": deb.name if deb else None, "sha256": sha}


_ROLE = re.compile(r":[\w:.+-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")


def rst_inline(t: str) -> str:
    t = _ROLE.sub(lambda m: m.group(1), t)
    t = _LINK.sub(lambda m: m.group(1), t)
    t = re.sub(r"``([^`]+)``", r"\1", t)
    t = re.sub(r"`([^`]+)`_*", r"\1", t)
    t = re.sub(r"(?<![\w*])\*\*?([^*\s][^*]*?)\*\*?(?![\w*])", r"\1", t)
    return t.replace("\\", "")


CODE_DIRECTIVES = (".. code-block::", ".. testcode::", ".. doctest::", ".. sourcecode::",
                   ".. productionlist::", ".. testsetup::", ".. code::")


def python_docs(docs: dict, root: Path):
    """Prose paragraphs of the Python documentation's reST sources → prose; literal blocks
    (after '::', doctest blocks, code-block directives) → python."""
    n = 0
    files = []
    for part in PYDOC_PARTS:
        p = root / part
        files += [p] if p.is_file() else sorted(p.rglob("*.rst.txt"))
    for f in files:
        rel = f.relative_to(root).as_posix()
        blocks = re.split(r"\n[ \t]*\n", f.read_text(encoding="utf-8", errors="replace"))
        prose, code = [], []
        literal_indent = None  # inside a literal block while indent > literal_indent
        for b in blocks:
            if not b.strip():
                continue
            first = b.lstrip("\n").split("\n")[0]
            ind = len(first) - len(first.lstrip())
            stripped = textwrap.dedent(b.strip("\n"))
            if (literal_indent is not None and ind > literal_indent) or stripped.startswith(">>>"):
                code.append(stripped)
                continue
            literal_indent = None
            if stripped.startswith(".."):
                head, _, rest = stripped.partition("\n")
                if head.startswith(CODE_DIRECTIVES):
                    literal_indent = ind
                    continue
                body = textwrap.dedent(rest)
                if not body.strip() or body.lstrip().startswith(":"):
                    continue
                stripped = body
            lines = [l for l in stripped.split("\n") if not re.fullmatch(r"[=\-~*^+#\"'`.]{3,}", l.strip())]
            if not lines or lines[0].lstrip().startswith((":", "|", "+", "=")):
                continue
            text = " ".join(l.strip() for l in lines)
            literal = text.endswith("::")
            if literal:
                literal_indent = ind
            text = rst_inline(text.rstrip(":") + (":" if literal else ""))
            text = re.sub(r"\s+", " ", text).strip()
            if len(text) > 40 and len(text.split()) > 6 and english(text):
                prose.append(clean(text))
        if prose:
            docs["prose"].append((f"python-docs:{rel}", "\n\n".join(prose) + "\n"))
            n += 1
        code = [c for c in code if len(c) > 20]
        if code:
            docs["python"].append((f"python-docs-code:{rel}", clean("\n\n".join(code)) + "\n"))
    return n


def python_stdlib(docs: dict, stdlib: Path):
    n = 0
    for f in sorted(stdlib.rglob("*.py")):
        rel = f.relative_to(stdlib).as_posix()
        parts = rel.split("/")
        if parts[0] in ("site-packages", "test", "idlelib", "lib2to3", "pydoc_data", "encodings",
                        "ensurepip", "turtledemo", "config-3.11-x86_64-linux-gnu") \
                or "tests" in parts or "test" in parts or f.stat().st_size > MAX_FILE:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if len(text) < 200:
            continue
        docs["python"].append((f"cpython-3.11.7:Lib/{rel}", clean(text)))
        n += 1
    return n


def rust_crates(docs: dict):
    roots = sorted((Path.home() / ".cargo" / "registry" / "src").glob("*"))
    found = []
    for crate, lic in CRATES:
        dirs = [r / crate for r in roots if (r / crate).is_dir()]
        if not dirs:
            raise SystemExit(f"crate {crate} not in ~/.cargo/registry/src: run `cargo fetch` in the repository")
        d = dirs[0]
        nfiles = 0
        for f in sorted(d.rglob("*.rs")):
            rel = f.relative_to(d).as_posix()
            if f.stat().st_size > MAX_FILE or rel.startswith(("benches/", "target/")):
                continue
            text = f.read_text(encoding="utf-8", errors="replace")
            if len(text) < 200:
                continue
            docs["rust"].append((f"crate:{crate}/{rel}", clean(text)))
            nfiles += 1
        found.append({"crate": crate, "license": lic, "files": nfiles})
    return found


def main():
    docs = {"prose": [], "rust": [], "python": [], "numbers": []}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    version_info = (DOC_ROOT / "version_info.html")
    n_pages = rust_books(docs)
    n_topics = pydoc_topics(docs, stdlib)
    n_py = python_stdlib(docs, stdlib)
    pyroot, pydeb = fetch_python_docs()
    n_pydocs = python_docs(docs, pyroot)
    crates = rust_crates(docs)
    rng = random.Random(1234)
    for i in range(6000):
        docs["numbers"].append((f"synthetic-numbers:{i}", numbers_doc(rng)))

    CORPUS.mkdir(parents=True, exist_ok=True)
    stats = {}
    for dom, items in docs.items():
        out = {s: open(CORPUS / f"{dom}.{s}.jsonl", "w") for s in ("train", "valid")}
        counts = {"train": [0, 0], "valid": [0, 0]}
        seen = set()
        for id_, text in items:
            h = hashlib.sha1(text.encode()).digest()
            if h in seen:
                continue
            seen.add(h)
            split = "valid" if zlib.crc32(id_.encode()) % 20 == 0 else "train"
            out[split].write(json.dumps({"id": id_, "text": text}) + "\n")
            counts[split][0] += 1
            counts[split][1] += len(text.encode())
        for f in out.values():
            f.close()
        stats[dom] = {s: {"docs": c[0], "bytes": c[1]} for s, c in counts.items()}
    vi = re.sub(r"<[^>]+>", " ", version_info.read_text()) if version_info.exists() else ""
    manifest = {
        "split_rule": "valid iff zlib.crc32(doc_id.encode()) % 20 == 0",
        "sources": {
            "rust_docs": {"path": str(DOC_ROOT), "toolchain": TOOLCHAIN,
                          "version_info": re.sub(r"\s+", " ", html.unescape(vi)).strip(),
                          "books": BOOKS, "pages": n_pages, "license": "MIT OR Apache-2.0"},
            "pydoc_topics": {"path": str(stdlib / "pydoc_data" / "topics.py"),
                             "python": sys.version.split()[0], "topics": n_topics,
                             "license": "PSF-2.0"},
            "python_docs": dict(pydeb, version=PYDOC_DEB[1], parts=PYDOC_PARTS, files=n_pydocs,
                                source="Debian bookworm package python3.11-doc (reST sources in "
                                       "/usr/share/doc/python3.11/html/_sources)",
                                license="PSF-2.0 (documentation text); examples 0BSD"),
            "cpython_stdlib": {"path": str(stdlib), "python": sys.version.split()[0], "files": n_py,
                               "license": "PSF-2.0"},
            "crates": crates,
            "synthetic_numbers": {"generator": "common.numbers_doc", "seed": 1234, "docs": 6000,
                                  "license": "generated (same licence as RouteLab)"},
        },
        "domains": stats,
    }
    (CORPUS / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
