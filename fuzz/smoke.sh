#!/usr/bin/env bash
# Builds every fuzz target and runs each for FUZZ_SECONDS (default 30) from the committed seed
# corpus, failing on any crash, timeout or out-of-memory. CI runs it so that a
# reader that starts panicking on hostile input shows up as a failed job.
#
# Uses `cargo +nightly` when a nightly toolchain is installed, else the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags: the sanitizer, coverage options).
# Environment: FUZZ_SECONDS, FUZZ_TARGETS (space-separated subset), CARGO_TARGET_DIR (default
# fuzz/target), FUZZ_NIGHTLY=0 (use the stable fallback even where nightly exists).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
seconds="${FUZZ_SECONDS:-30}"
target_dir="${CARGO_TARGET_DIR:-$here/target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)" >&2
    exit 2
fi
if [[ "${FUZZ_NIGHTLY:-1}" != 0 ]] && rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
else
    echo "smoke.sh: no nightly toolchain; building with stable and RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
fi

targets="${FUZZ_TARGETS:-$("${cargo[@]}" fuzz list)}"
build=(fuzz build --target-dir "$target_dir")
"${cargo[@]}" "${build[@]}"

# The options every run uses (fuzz/README.md explains them).
options=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -detect_leaks=0 -max_total_time="$seconds" -print_final_stats=1)
export RUST_LIB_BACKTRACE=0
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in $targets; do
    # New inputs go to a scratch corpus; the committed seeds are read, never written.
    mkdir -p "$scratch/$t" "$here/artifacts/$t"
    echo "=== $t: ${seconds}s"
    if ! "${cargo[@]}" fuzz run "${build[@]:2}" "$t" "$scratch/$t" "$here/corpus/$t" -- \
        "${options[@]}" -artifact_prefix="$here/artifacts/$t/" >"$scratch/$t.log" 2>&1; then
        failed+=("$t")
        tail -n 60 "$scratch/$t.log"
    else
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ *DONE|^Done' "$scratch/$t.log" | tr '\n' ' '
        echo
    fi
done
if ((${#failed[@]})); then
    echo "smoke.sh: findings in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
echo "smoke.sh: every target ran ${seconds}s without a finding"
