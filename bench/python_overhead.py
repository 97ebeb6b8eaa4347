"""The Python layer's overhead against the CLI: the same greedy generation through
`routelab run` and through `routelab.load(...).generate(...)`, on the same machine, in one run.

The goal it checks: the Python package decodes within 5% of the CLI on tiny-moe.

From the repository root, with a release build of the CLI and the package built in release
mode (`maturin develop --release` in python/, or a wheel) in the Python that runs this:

    cargo build --release
    python3 bench/python_overhead.py --routelab target/release/routelab [--model tiny-moe]
        [--tokens 256] [--repeats 5] [--prompt "fn main() {"]

What is measured, for each capture setting (`default`: routing, head statistics, contribution
norms, what the workbench records on every run; `none`: tokens only), with the two sides'
repeats interleaved (their order alternating) after one untimed warm-up each:

- CLI: `routelab run -m MODEL -p PROMPT --max-new-tokens N --ignore-eos --capture C`, one
  process per repeat; decode tok/s as the CLI reports it in its
  `[P prompt tokens in Xs (... tok/s); G generated in Ys (Z tok/s); stopped: ...]` line (the
  engine's decode loop, so loading and start-up are not counted).
- Python: the model loaded once; per repeat the wall-clock of
  `session.generate(PROMPT, max_new_tokens=N, stop_at_eos=False, capture=C, progress=False)`,
  which includes argument conversion, tokenizing, handing the call to a thread without the GIL
  and back, and building the returned Trace. Python decode tok/s = generated /
  (wall - trace.prefill_seconds): everything the call spends beyond the prefill is charged to
  decoding. Also shown: the engine's own figure inside the Python call,
  generated / trace.decode_seconds, which should match the CLI's (same engine); the gap between
  the two Python figures is the binding's cost.

overhead % = (CLI decode tok/s / Python decode tok/s - 1) * 100, on the medians; positive means
Python is slower. Both sides use the same threads (the package sets
CANDLE_BARRIER_POOL_SPIN_LIMIT as the CLI does); the machine's core count is printed, since a
shared or busy machine widens the spread (shown as min-max).

Self-contained: the standard library, numpy and routelab.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

import routelab

CLI_LINE = re.compile(
    r"\[(?P<prompt>\d+) prompt tokens in (?P<prefill_s>[\d.]+)s \((?P<prefill_tps>[\d.]+) tok/s\); "
    r"(?P<generated>\d+) generated in (?P<decode_s>[\d.]+)s \((?P<decode_tps>[\d.]+) tok/s\); "
    r"stopped: (?P<stop>[^\]]*)\]"
)


def run_cli(args, capture):
    """One `routelab run`; returns its summary line's numbers."""
    cmd = [
        args.routelab, "run",
        "-m", args.model,
        "-p", args.prompt,
        "--max-new-tokens", str(args.tokens),
        "--ignore-eos",
        "--capture", capture,
        "--device", args.device,
    ]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"routelab run failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    m = None
    for m in CLI_LINE.finditer(p.stdout):
        pass  # the last such line: the generated text could, in principle, contain one
    if m is None:
        sys.exit(f"no summary line in routelab run's output:\n{p.stdout[-2000:]}")
    return {
        "prompt_tokens": int(m["prompt"]),
        "generated": int(m["generated"]),
        "prefill_s": float(m["prefill_s"]),
        "decode_tps": float(m["decode_tps"]),
        "process_wall_s": wall,
        "stop": m["stop"],
    }


def run_python(session, args, capture):
    """One `session.generate`; returns its timings."""
    t = time.perf_counter()
    trace = session.generate(
        args.prompt, max_new_tokens=args.tokens, stop_at_eos=False, capture=capture, progress=False
    )
    wall = time.perf_counter() - t
    generated = len(trace) - trace.generated_from
    return {
        "prompt_tokens": trace.generated_from,
        "generated": generated,
        "wall_s": wall,
        "prefill_s": trace.prefill_seconds,
        "decode_s": trace.decode_seconds,
        "decode_tps": generated / max(wall - trace.prefill_seconds, 1e-9),
        "engine_decode_tps": generated / max(trace.decode_seconds, 1e-9),
        "stop": trace.stop,
    }


def spread(xs):
    return f"{min(xs):.1f}-{max(xs):.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routelab", required=True, help="the CLI binary (a release build: target/release/routelab)")
    ap.add_argument("--model", "--python-model", dest="model", default="tiny-moe", help="any --model the CLI takes (default tiny-moe)")
    ap.add_argument("--tokens", type=int, default=256, help="tokens generated per run (default 256)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side and setting (default 5)")
    ap.add_argument("--prompt", default="fn main() {", help='the prompt (default "fn main() {")')
    ap.add_argument("--captures", default="default,none", help="capture settings, comma-separated (default default,none)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--dtype", default=None, help="f32 or bf16 (default: the CLI's)")
    ap.add_argument("--json", default=None, help="also write every measurement to this file")
    args = ap.parse_args()
    if not os.path.exists(args.routelab):
        sys.exit(f"{args.routelab}: no such file (build it: cargo build --release)")
    captures = [c.strip() for c in args.captures.split(",") if c.strip()]

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    version = subprocess.run([args.routelab, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {cores} cores ({usable} usable by this process), {platform.platform()}")
    print(f"CLI: {args.routelab} ({version}); Python: routelab {routelab.__version__} from {os.path.dirname(routelab.__file__)}, "
          f"Python {platform.python_version()}")

    t = time.perf_counter()
    session = routelab.load(args.model, device=args.device, dtype=args.dtype, progress=False)
    print(f"model: {session} (Python load {time.perf_counter() - t:.2f}s)")
    print(f"prompt {args.prompt!r}, {args.tokens} tokens greedy past end-of-sequence, "
          f"{args.repeats} timed repeats per side after a warm-up, interleaved\n")

    results = {}
    for capture in captures:
        run_cli(args, capture)  # warm-up: the page cache, the binary
        run_python(session, args, capture)
        cli, py = [], []
        for r in range(args.repeats):
            # Alternate which side goes first so a drift in machine load hits both alike.
            if r % 2 == 0:
                cli.append(run_cli(args, capture))
                py.append(run_python(session, args, capture))
            else:
                py.append(run_python(session, args, capture))
                cli.append(run_cli(args, capture))
        for a, b in zip(cli, py):
            if a["generated"] != b["generated"] or a["prompt_tokens"] != b["prompt_tokens"]:
                print(f"warning: the CLI ran {a['prompt_tokens']}+{a['generated']} tokens, Python "
                      f"{b['prompt_tokens']}+{b['generated']}", file=sys.stderr)
        results[capture] = {"cli": cli, "python": py}

    def cell(xs):
        return f"{np.median(xs):.1f} ({spread(xs)})"

    head = ("capture", "CLI decode tok/s", "Python decode tok/s", "overhead", "Python engine tok/s", "overhead")
    sub = ("", "median (min-max)", "wall - prefill", "", "decode_seconds", "")
    row = "{:<8} {:>22} {:>22} {:>9}   {:>22} {:>9}"
    print(row.format(*head))
    print(row.format(*sub))
    for capture, r in results.items():
        cli = [x["decode_tps"] for x in r["cli"]]
        py = [x["decode_tps"] for x in r["python"]]
        eng = [x["engine_decode_tps"] for x in r["python"]]
        c, p, e = np.median(cli), np.median(py), np.median(eng)
        print(row.format(capture, cell(cli), cell(py), f"{(c / p - 1) * 100:+.1f}%", cell(eng), f"{(c / e - 1) * 100:+.1f}%"))

    print("\nPython wall-clock of session.generate (the call, including building the Trace), medians:")
    print(f"{'capture':<9} {'wall ms':>9} {'prefill ms':>11} {'decode ms':>10} {'other ms':>9} {'tokens':>7}")
    for capture, r in results.items():
        py = r["python"]
        wall = np.median([x["wall_s"] for x in py]) * 1e3
        pre = np.median([x["prefill_s"] for x in py]) * 1e3
        dec = np.median([x["decode_s"] for x in py]) * 1e3
        other = np.median([x["wall_s"] - x["prefill_s"] - x["decode_s"] for x in py]) * 1e3
        print(f"{capture:<9} {wall:>9.2f} {pre:>11.2f} {dec:>10.2f} {other:>9.2f} {py[0]['prompt_tokens']:>3}+{py[0]['generated']}")
    print("(other = wall - prefill - decode: the binding's fixed cost per call; "
          f"the CLI process took a median {np.median([x['process_wall_s'] for r in results.values() for x in r['cli']]):.2f}s "
          "each, loading included)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cores": cores, "usable_cores": usable, "platform": platform.platform()},
                       "cli": version, "model": args.model, "prompt": args.prompt, "tokens": args.tokens,
                       "repeats": args.repeats, "results": results}, f, indent=1)
        print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
