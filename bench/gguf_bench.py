"""RouteLab vs llama.cpp vs Hugging Face transformers on the same GGUF files (real MoE shapes,
random weights) on the CPU, in one run, with the ratios the project's goals are stated in.

Files: bench/gguf_models.py writes them (llama.cpp's converter + llama-quantize, Q8_0 and
Q4_K_M) under /tmp/gguf-bench: olmoe-1b-7b (all 16 layers) and qwen3-30b-a3b-5l (Qwen3-30B-A3B,
5 of 48 layers). llama.cpp is built from the same source (commit 0c1e57098), once:

    cmake -S LLAMA_CPP -B /tmp/gguf-work/build-native -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \\
        -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \\
        -DLLAMA_BUILD_SERVER=OFF
    nice -n 19 cmake --build /tmp/gguf-work/build-native --config Release --target llama-bench llama-quantize -j 2

(LLAMA_CPP = the sdist's vendor/llama.cpp, /tmp/gguf-work/llama_cpp_python-0.3.36/vendor/llama.cpp.)
Then, from the repository root, with the Python of bench/requirements-cpu.txt, on an otherwise
idle machine:

    /tmp/tfvenv/bin/python bench/gguf_bench.py --routelab /tmp/base-target/release/routelab \\
        --llama-bench /tmp/gguf-work/build-native/bin/llama-bench \\
        [--models olmoe-1b-7b,qwen3-30b-a3b-5l] [--quants Q8_0,Q4_K_M] [--skip-transformers] [--rounds N]

Per file, every engine with the same thread count (--threads, default 2), a 128-token prompt and
32 greedy tokens, median of 3 after a warm-up; the file is read once before each engine so all
start from a warm page cache.
- RouteLab: `routelab bench --json` (RAYON_NUM_THREADS=threads): "plain" captures nothing,
  "full" captures routing, per-head attention statistics and contribution norms. Load time and
  resident memory after load come from its JSON (load_seconds, resident_after_load_bytes,
  peak_resident_bytes). A binary without those fields: resident after load = max RSS of a
  one-token `routelab bench` run, load = that run's wall time minus its 15 one-token passes at
  the measured decode speed (marked "~").
- llama.cpp: `llama-bench -p 128 -n 32 -d 0,128 -t threads -r 3 -o json`: prefill = pp128 from an
  empty context, decode = tg32 after a 128-token context (-d 128), like RouteLab's; median of
  llama-bench's per-repetition figures. Peak memory = max RSS of that run. Load time and
  resident memory after load: `llama-bench -p 0 -n 1 -r 1 --no-warmup` (load, context, one
  token): its wall time minus one token at the measured tg32 speed, and its max RSS (weights are
  mmapped; the tensors llama.cpp repacks for its CPU kernels are copied at load or first use, so
  both are counted).
- transformers: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32)` in a
  child process (its GGUF loader dequantises every tensor to f32), measured as in
  bench/cpu_bench.py: "plain" = sdpa attention; "capture" = eager attention with
  output_attentions and output_router_logits, every tensor copied to numpy at every step.
  Resident memory after load = VmRSS after load; peak = VmHWM (the loader's temporaries). The
  child is killed if the machine's available memory drops below 1.5 GiB (reported as such). An
  architecture transformers' GGUF loader does not know is reported as n/a with its error.
The figures need an idle machine: with 2 threads on 2 cores, llama.cpp's spinning OpenMP
threads lose up to 5x when another process takes a core (measured here with a compile running:
tg32 2.5 tok/s on 2 threads, 17.5 on 1). Before each engine the script waits (--idle-wait, up
to 15 minutes) for the CPUs to be under 10% busy, and reports, per engine, the share of the CPUs
other processes used while it ran (/proc/stat minus the engine's own CPU time); above 5% the
row is marked "disturbed" and should be rerun.
Max RSS (wait4's ru_maxrss) is what `/usr/bin/time -v` reports as "Maximum resident set size".

Goals shown: RouteLab's peak resident memory (after the 128-token prompt and 32 tokens, full
capture included; resident after load alone says little when the file is memory-mapped)
<= 1.15x the file, plain decode >= 0.7x llama.cpp's, full capture costs <= 10% of decode
speed. Results: bench/results/gguf.json (--json). The RouteLab binary is copied to --work at
the start, so a rebuild during the run does not mix two builds.
"""
import argparse
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("olmoe-1b-7b", "qwen3-30b-a3b-5l")
QUANTS = ("Q8_0", "Q4_K_M")
GOAL_RESIDENT, GOAL_DECODE, GOAL_CAPTURE = 1.15, 0.7, 0.10
MIN_AVAILABLE = 1.5 * (1 << 30)


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def proc_field(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return None


HZ = os.sysconf("SC_CLK_TCK")
FOREIGN = []  # other processes' share of the CPUs during each measured run


def cpu_busy():
    """Seconds all CPUs have been busy (everything but idle and iowait) since boot."""
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / HZ


def busy_share(seconds=2.0):
    b, t = cpu_busy(), time.perf_counter()
    time.sleep(seconds)
    return (cpu_busy() - b) / ((time.perf_counter() - t) * os.cpu_count())


def wait_idle(limit):
    """Wait (up to limit seconds) until other processes use under 10% of the CPUs."""
    t = time.perf_counter()
    share = busy_share()
    while share > 0.10 and time.perf_counter() - t < limit:
        print(f"  waiting: the CPUs are {share:.0%} busy", flush=True)
        time.sleep(15)
        share = busy_share()
    return share


def timed(cmd, env=None, guard=False):
    """Run cmd; (wall seconds, max RSS bytes, return code, stdout, stderr, killed for memory).
    Appends to FOREIGN the share of the CPUs that other processes used meanwhile."""
    t, b0, self0 = time.perf_counter(), cpu_busy(), sum(os.times()[:2])
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = []
    if guard:
        def watch():
            while p.poll() is None:
                a = mem_available()
                if a is not None and a < MIN_AVAILABLE:
                    killed.append(a)
                    p.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.25)
        threading.Thread(target=watch, daemon=True).start()
    out_chunks, err_chunks = [], []
    ts = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
          for s, b in ((p.stdout, out_chunks), (p.stderr, err_chunks))]
    for th in ts:
        th.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    for th in ts:
        th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    ours = ru.ru_utime + ru.ru_stime + sum(os.times()[:2]) - self0
    FOREIGN.append(max(0.0, (cpu_busy() - b0 - ours) / (wall * os.cpu_count())))
    return wall, ru.ru_maxrss * 1024, p.returncode, "".join(out_chunks), "".join(err_chunks), bool(killed)


def warm(path):
    """Read the file once so every engine starts from a warm page cache."""
    buf = bytearray(64 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def median(xs):
    return statistics.median(xs)


# ---------------------------------------------------------------------------------------------
# RouteLab


def routelab_run(args, f, out):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    j = out / f"routelab-{f.stem}.json"
    cmd = [args.routelab, "bench", "-m", f, "--prompt-tokens", args.prompt, "--new-tokens", args.new,
           "--repeats", args.repeats, "--json", j]
    wall, rss, rc, so, se, _ = timed(cmd, env)
    sys.stderr.write(so)
    if rc:
        raise RuntimeError(f"routelab bench failed ({rc}) on {f}:\n{se[-3000:]}")
    r = json.loads(j.read_text())
    r["max_rss_bytes"], r["wall_seconds"] = rss, wall
    return r


def routelab_probe(args, f, out):
    """For a binary without load_seconds / resident_after_load_bytes: a one-token run."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    j = out / f"routelab-probe-{f.stem}.json"
    cmd = [args.routelab, "bench", "-m", f, "--prompt-tokens", 1, "--new-tokens", 1, "--repeats", 1,
           "--no-bandwidth", "--json", j]
    wall, rss, rc, so, se, _ = timed(cmd, env)
    if rc:
        raise RuntimeError(f"routelab bench (probe) failed ({rc}) on {f}:\n{se[-3000:]}")
    return wall, rss


def routelab(args, f, out):
    runs = []
    for _ in range(args.rounds):
        runs.append(routelab_run(args, f, out))
        yield None  # let llama.cpp run in between (rounds interleaved)
    r = dict(runs[-1])
    r["configs"] = {c: {k: median([x["configs"][c][k] for x in runs]) for k in ("prefill_tok_s", "decode_tok_s")}
                    for c in runs[0]["configs"]}
    r["max_rss_bytes"] = max(x["max_rss_bytes"] for x in runs)
    if r.get("load_seconds") is not None and r.get("resident_after_load_bytes") is not None:
        r["load_seconds"] = median([x["load_seconds"] for x in runs])
        r["load_method"] = "routelab bench's load_seconds / resident_after_load_bytes"
    else:
        wall, rss = routelab_probe(args, f, out)
        r["load_seconds"] = max(0.0, wall - 15 / r["configs"]["plain"]["decode_tok_s"])
        r["resident_after_load_bytes"] = rss
        r["load_method"] = ("estimate (binary without load fields): wall of a one-token `routelab bench` minus 15 "
                            "passes at the decode speed; resident = its max RSS")
        r["load_estimated"] = True
    if r.get("peak_resident_bytes") is None:
        r["peak_resident_bytes"] = r["max_rss_bytes"]
    yield r


# ---------------------------------------------------------------------------------------------
# llama.cpp


def llama_json(so):
    return json.loads(so[so.index("["):])


def llama_cpp(args, f):
    base = [args.llama_bench, "-m", f, "-t", args.threads, "-o", "json"]
    runs = []
    for _ in range(args.rounds):
        cmd = base + ["-p", args.prompt, "-n", args.new, "-d", f"0,{args.prompt}", "-r", args.repeats]
        wall, rss, rc, so, se, _ = timed(cmd)
        if rc:
            raise RuntimeError(f"llama-bench failed ({rc}) on {f}:\n{se[-3000:]}")
        tests = llama_json(so)

        def pick(n_prompt, n_gen, depth):
            t = [x for x in tests if x["n_prompt"] == n_prompt and x["n_gen"] == n_gen and x["n_depth"] == depth]
            return median(t[0]["samples_ts"])

        runs.append({"prefill_tok_s": pick(args.prompt, 0, 0), "decode_tok_s": pick(0, args.new, args.prompt),
                     "decode_empty_tok_s": pick(0, args.new, 0), "max_rss_bytes": rss,
                     "build_commit": tests[0]["build_commit"], "cpu_info": tests[0]["cpu_info"]})
        yield None
    r = {k: median([x[k] for x in runs]) for k in ("prefill_tok_s", "decode_tok_s", "decode_empty_tok_s")}
    r["peak_resident_bytes"] = max(x["max_rss_bytes"] for x in runs)
    r["build_commit"], r["cpu_info"] = runs[0]["build_commit"], runs[0]["cpu_info"]
    wall, rss, rc, so, se, _ = timed(base + ["-p", 0, "-n", 1, "-r", 1, "--no-warmup"])
    if rc:
        raise RuntimeError(f"llama-bench (load probe) failed ({rc}) on {f}:\n{se[-3000:]}")
    r["load_seconds"] = max(0.0, wall - 1 / r["decode_empty_tok_s"])
    r["resident_after_load_bytes"] = rss
    r["load_method"] = ("llama-bench -p 0 -n 1 -r 1 --no-warmup: wall minus one token at the tg32 speed; "
                        "resident = its max RSS")
    yield r


# ---------------------------------------------------------------------------------------------
# transformers (child process: `gguf_bench.py _hf FILE THREADS PROMPT NEW REPEATS OUT.json`)


def hf_child(argv):
    f, threads, prompt, new, repeats, out = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), Path(argv[5])
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    sys.path.insert(0, str(HERE))
    from cpu_bench import hf_bench

    torch.set_num_threads(threads)
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "dtype": "f32"}
    t = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(f.parent, gguf_file=f.name, dtype=torch.float32)
    except Exception as e:  # an architecture its GGUF loader does not know
        res["error"] = f"{type(e).__name__}: {e}"
        out.write_text(json.dumps(res))
        return
    res["load_seconds"] = time.perf_counter() - t
    model.eval()
    gc.collect()
    res["resident_after_load_bytes"] = proc_field("VmRSS:")
    res["peak_load_bytes"] = proc_field("VmHWM:")
    cfg = model.config
    res["config"] = {k: getattr(cfg, k, None) for k in ("model_type", "num_hidden_layers", "num_experts",
                                                         "num_experts_per_tok", "norm_topk_prob", "vocab_size")}
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, cfg.vocab_size, (1, prompt)))
    res["configs"] = hf_bench(model, ids, new, repeats, moe=True)
    res["peak_resident_bytes"] = proc_field("VmHWM:")
    out.write_text(json.dumps(res))


def transformers_run(args, f, out):
    j = out / f"transformers-{f.stem}.json"
    j.unlink(missing_ok=True)
    cmd = [sys.executable, Path(__file__).resolve(), "_hf", f, args.threads, args.prompt, args.new, args.repeats, j]
    wall, rss, rc, so, se, killed = timed(cmd, guard=True)
    if killed:
        return {"error": f"out of memory: killed when the machine had under {MIN_AVAILABLE / (1 << 30):.1f} GiB "
                         f"available (child's max RSS {rss / 1e9:.1f} GB)", "max_rss_bytes": rss}
    if rc or not j.exists():
        return {"error": f"failed ({rc}): {se.strip().splitlines()[-1] if se.strip() else ''}", "max_rss_bytes": rss}
    r = json.loads(j.read_text())
    r["max_rss_bytes"] = rss
    return r


# ---------------------------------------------------------------------------------------------
# Tables


def gb(b):
    return f"{b / 1e9:.2f}" if b else "-"


def tok(x):
    return "-" if x is None else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}x"


def cost(plain, full):
    return "-" if not plain or not full else f"{100 * (1 - full / plain):.1f}%"


def other(r):
    """Other processes' CPU share during the runs (above ~5%, the figures are disturbed)."""
    x = r.get("other_cpu_share")
    return "-" if x is None else f"{100 * x:.0f}%" + (" (disturbed)" if x > 0.05 else "")


def tables(rows):
    print("\n| file | size GB | engine | load s | resident after load GB (x file) | peak GB | prefill tok/s plain / capture "
          "| decode tok/s plain / capture | capture cost prefill / decode | other processes' CPU share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        size = r["file_bytes"]
        name = f"{r['model']} {r['quant']}"
        a = r["routelab"]
        if "error" in a:
            print(f"| {name} | {gb(size)} | RouteLab | failed: {a['error'][:150]} | | | | | | |")
        else:
            routelab_line(name, size, a)
        l = r["llama_cpp"]
        if "error" in l:
            print(f"| {name} | {gb(size)} | llama.cpp | failed: {l['error'][:150]} | | | | | | |")
        else:
            llama_line(name, size, l)
        transformers_line(name, size, r.get("transformers"))
    ratios(rows)


def routelab_line(name, size, a):
    ap, af = a["configs"]["plain"], a["configs"]["full"]
    load = ("~" if a.get("load_estimated") else "") + f"{a['load_seconds']:.1f}"
    print(f"| {name} | {gb(size)} | RouteLab | {load} | {gb(a['resident_after_load_bytes'])} "
          f"({a['resident_after_load_bytes'] / size:.2f}x) | {gb(a['peak_resident_bytes'])} ({a['peak_resident_bytes'] / size:.2f}x) "
          f"| {tok(ap['prefill_tok_s'])} / {tok(af['prefill_tok_s'])} | {tok(ap['decode_tok_s'])} / {tok(af['decode_tok_s'])} "
          f"| {cost(ap['prefill_tok_s'], af['prefill_tok_s'])} / {cost(ap['decode_tok_s'], af['decode_tok_s'])} | {other(a)} |")


def llama_line(name, size, l):
    print(f"| {name} | {gb(size)} | llama.cpp | {l['load_seconds']:.1f} | {gb(l['resident_after_load_bytes'])} "
          f"({l['resident_after_load_bytes'] / size:.2f}x) | {gb(l['peak_resident_bytes'])} ({l['peak_resident_bytes'] / size:.2f}x) "
          f"| {tok(l['prefill_tok_s'])} / n/a | {tok(l['decode_tok_s'])} / n/a | n/a | {other(l)} |")


def transformers_line(name, size, h):
    if h is None:
        print(f"| {name} | {gb(size)} | transformers | skipped | | | | | | |")
    elif "error" in h:
        who = f"transformers {h['transformers']}" if "transformers" in h else "transformers"
        print(f"| {name} | {gb(size)} | transformers | n/a ({who}: {h['error'][:150]}) | | | | | | |")
    else:
        hp, hc = h["configs"]["plain"], h["configs"]["capture"]
        print(f"| {name} | {gb(size)} | transformers (f32) | {h['load_seconds']:.1f} | {gb(h['resident_after_load_bytes'])} "
              f"({h['resident_after_load_bytes'] / size:.2f}x) | {gb(h['peak_resident_bytes'])} ({h['peak_resident_bytes'] / size:.2f}x) "
              f"| {tok(hp['prefill_tok_s'])} / {tok(hc['prefill_tok_s'])} | {tok(hp['decode_tok_s'])} / {tok(hc['decode_tok_s'])} "
              f"| {cost(hp['prefill_tok_s'], hc['prefill_tok_s'])} / {cost(hp['decode_tok_s'], hc['decode_tok_s'])} | {other(h)} |")


def ratios(rows):
    print("\n| file | RouteLab / llama.cpp prefill, decode (plain) | RouteLab / transformers prefill plain, capture "
          "| RouteLab / transformers decode plain, capture | plain decode / bandwidth limit "
          f"| goals: peak resident <= {GOAL_RESIDENT}x file, decode >= {GOAL_DECODE}x llama.cpp, capture <= {GOAL_CAPTURE:.0%} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        a, l, h = r["routelab"], r["llama_cpp"], r.get("transformers")
        if r["goals"] is None:
            print(f"| {r['model']} {r['quant']} | failed | | | | |")
            continue
        ap, af = a["configs"]["plain"], a["configs"]["full"]
        if h and "error" not in h:
            hp, hc = h["configs"]["plain"], h["configs"]["capture"]
            tp = f"{ratio(ap['prefill_tok_s'], hp['prefill_tok_s'])}, {ratio(af['prefill_tok_s'], hc['prefill_tok_s'])}"
            td = f"{ratio(ap['decode_tok_s'], hp['decode_tok_s'])}, {ratio(af['decode_tok_s'], hc['decode_tok_s'])}"
        else:
            tp = td = "n/a" if h else "skipped"
        bw = ""
        if a.get("read_bandwidth") and a.get("active_weight_bytes"):
            limit = a["read_bandwidth"] / a["active_weight_bytes"]
            bw = f"{100 * ap['decode_tok_s'] / limit:.0f}% of {limit:.1f} tok/s"
        g = r["goals"]
        mark = lambda ok: "yes" if ok else "NO"
        print(f"| {r['model']} {r['quant']} | {ratio(ap['prefill_tok_s'], l['prefill_tok_s'])}, "
              f"{ratio(ap['decode_tok_s'], l['decode_tok_s'])} | {tp} | {td} | {bw} "
              f"| {mark(g['resident'])} ({g['resident_x']:.2f}x), {mark(g['decode'])} ({g['decode_x']:.2f}x), "
              f"{mark(g['capture'])} ({100 * g['capture_cost']:.1f}%) |")


def goals(r):
    a, l = r["routelab"], r["llama_cpp"]
    if "error" in a or "error" in l:
        return None
    ap, af = a["configs"]["plain"], a["configs"]["full"]
    res_x = a["peak_resident_bytes"] / r["file_bytes"]  # after load alone is ~0 for a memory-mapped file
    dec_x = ap["decode_tok_s"] / l["decode_tok_s"]
    cap = 1 - af["decode_tok_s"] / ap["decode_tok_s"]
    return {"resident_x": res_x, "resident": res_x <= GOAL_RESIDENT, "decode_x": dec_x, "decode": dec_x >= GOAL_DECODE,
            "capture_cost": cap, "capture": cap <= GOAL_CAPTURE}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_hf":
        return hf_child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routelab", default="target/release/routelab")
    ap.add_argument("--llama-bench", default="/tmp/gguf-work/build-native/bin/llama-bench")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/gguf-bench"), help="where bench/gguf_models.py wrote the files")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quants", default=",".join(QUANTS))
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="RouteLab and llama.cpp runs, alternated; medians across them")
    ap.add_argument("--idle-wait", type=float, default=900,
                    help="before each engine, wait up to this many seconds for the CPUs to be idle (under 10%% busy)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "gguf.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gguf-bench/runs"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    files = [(m, q, args.dir / f"{m}.{q}.gguf") for m in args.models.split(",") for q in args.quants.split(",")]
    missing = [str(f) for _, _, f in files if not f.exists()]
    if missing:
        raise SystemExit("missing (run bench/gguf_models.py): " + ", ".join(missing))
    for b in (args.routelab, args.llama_bench):
        if not Path(b).is_file():
            raise SystemExit(f"{b} does not exist (--routelab / --llama-bench)")
    snap = args.work / "routelab"
    shutil.copy2(args.routelab, snap)
    binary = f"{Path(args.routelab).resolve()} (modified {time.strftime('%Y-%m-%d %H:%M', time.localtime(Path(args.routelab).stat().st_mtime))})"
    args.routelab = snap
    v = subprocess.run([args.routelab, "--version"], capture_output=True, text=True).stdout.strip()
    load0 = os.getloadavg()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    print(f"{cpu}, {os.cpu_count()} CPUs, {args.threads} threads each; "
          f"{args.prompt}-token prompt, {args.new} greedy tokens, median of {args.repeats} (x{args.rounds} rounds); "
          f"{v} {binary}; load average {load0[0]:.2f}", flush=True)
    if load0[0] > 0.5:
        print(f"warning: load average {load0[0]:.2f} before the run: the machine is not idle", flush=True)
    t0 = time.perf_counter()
    rows = []
    for model, quant, f in files:
        size = f.stat().st_size
        print(f"\n== {f.name} ({size / 1e9:.2f} GB)", flush=True)
        row = {"model": model, "quant": quant, "file": str(f), "file_bytes": size}
        engines = {"routelab": routelab(args, f, args.work), "llama_cpp": llama_cpp(args, f)}
        idle, foreign = {k: [] for k in engines}, {k: [] for k in engines}
        for rnd in range(args.rounds + 1):  # rounds interleaved, then the medians
            for k, gen in engines.items():
                if k in row:
                    continue
                if rnd < args.rounds:
                    idle[k].append(wait_idle(args.idle_wait))
                    warm(f)
                FOREIGN.clear()
                try:
                    r = next(gen)
                except RuntimeError as e:  # a failing engine is reported, the others still run
                    print(f"{k}: {e}", flush=True)
                    r = {"error": str(e).splitlines()[0]}
                foreign[k] += FOREIGN
                if r is not None:
                    row[k] = r
                    r["other_cpu_share"] = max(foreign[k], default=0.0)
                    r["busy_before"] = max(idle[k])
        for k in engines:
            print(k + " " + json.dumps({x: row[k].get(x) for x in ("error", "configs", "prefill_tok_s", "decode_tok_s", "load_seconds",
                                                                 "resident_after_load_bytes", "peak_resident_bytes") if x in row[k]}), flush=True)
        if not args.skip_transformers:
            before = wait_idle(args.idle_wait)
            warm(f)
            FOREIGN.clear()
            row["transformers"] = transformers_run(args, f, args.work)
            row["transformers"]["other_cpu_share"], row["transformers"]["busy_before"] = FOREIGN[0], before
            print("transformers " + json.dumps({k: row["transformers"].get(k) for k in ("error", "configs", "load_seconds", "resident_after_load_bytes", "peak_resident_bytes")}), flush=True)
        row["goals"] = goals(row)
        rows.append(row)
        gc.collect()
    secs = time.perf_counter() - t0
    tables(rows)
    print(f"\n{secs / 60:.1f} minutes; load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"routelab": f"{v} {binary}", "cpu": rows[0]["llama_cpp"].get("cpu_info") if rows else None, "threads": args.threads, "prompt": args.prompt, "new": args.new,
                                     "repeats": args.repeats, "rounds": args.rounds, "seconds": secs,
                                     "load_average_before": load0[0], "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
