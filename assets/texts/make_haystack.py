#!/usr/bin/env python3
"""Extract prose paragraphs (the <p> elements, no code blocks) from chapters of "The Rust
Programming Language" as shipped with the Rust toolchain (rust-docs component) into
haystack.txt: the filler text of RouteLab's needle-in-a-haystack trials.

The book is licensed MIT OR Apache-2.0 (https://github.com/rust-lang/book). Run:

    python3 assets/texts/make_haystack.py [path/to/share/doc/rust/html/book]
"""
import glob
import html.parser
import os
import sys

CHAPTERS = [
    "ch00-00-introduction", "ch01-00-getting-started", "ch03-00-common-programming-concepts",
    "ch04-00-understanding-ownership", "ch04-01-what-is-ownership", "ch04-02-references-and-borrowing",
    "ch05-00-structs", "ch06-00-enums", "ch07-00-managing-growing-projects-with-packages-crates-and-modules",
    "ch08-00-common-collections", "ch09-00-error-handling", "ch09-03-to-panic-or-not-to-panic",
    "ch10-00-generics", "ch13-00-functional-features", "ch15-00-smart-pointers", "ch16-00-concurrency",
    "ch17-00-async-await", "ch18-00-oop", "ch20-00-advanced-features", "ch21-00-final-project-a-web-server",
]


class Paragraphs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.depth = 0
        self.buf = []
        self.out = []

    def handle_starttag(self, tag, attrs):
        if tag == "p":
            self.depth += 1
            self.buf = []

    def handle_endtag(self, tag):
        if tag == "p" and self.depth:
            self.depth -= 1
            text = " ".join("".join(self.buf).split())
            # Keep sentences of prose, not captions or one-word notes.
            if len(text) > 80:
                self.out.append(text)

    def handle_data(self, data):
        if self.depth:
            self.buf.append(data)


def main() -> int:
    book = sys.argv[1] if len(sys.argv) > 1 else sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/book")))[0]
    parts = []
    for ch in CHAPTERS:
        path = os.path.join(book, ch + ".html")
        if not os.path.exists(path):
            print(f"skipping missing {path}", file=sys.stderr)
            continue
        p = Paragraphs()
        with open(path, encoding="utf-8") as f:
            p.feed(f.read())
        parts.extend(p.out)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "haystack.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    print(f"{out}: {len(parts)} paragraphs, {sum(len(x.split()) for x in parts)} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
