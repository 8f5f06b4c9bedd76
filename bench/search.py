"""Search on a real store, measured in one run against the machine's own floors, with PASS/FAIL.

    python bench/search.py --model blog=../shared/data/tinyshakespeare.txt \
        [--model blog-cpu=../shared/data/tinyshakespeare.txt] [--model tiny] [--prompts 1000] \
        [--full-prompts 200] [--eval-prompts 20000] [--eval-full-prompts 512] [--k 200] \
        [--server-queries 300] [--json OUT]

Each model (a store built for it must exist) gets its own run and its own PASS / FAIL table.

Backends: "exact" (full scan), "bound" (exact answers from a pruned scan) and "ivf" (faiss, when the
store has it). Prompts are 10-character strings at random positions of the validation split (seed 0).
The full scan is timed on the first --full-prompts of them (it is slow); the bound, which returns
the same answers (checked on those prompts, bit for bit), is the reference for the ivf's recall on
all of them. In one run it prints:

- floors: one streaming read of one block's float16 vectors (an integer sum over its bytes; numpy's
  float16 sum is emulated and would flatter us), and torch sgemm GFLOP/s, the best over the batched
  search's shapes;
- per block (search + the first strings a page shows, ordered) and per full query (forward + every
  block + blend + the /api/query answer) p50/p95 of each backend, in threshold mode (the store's
  calibrated thresholds) and top-k mode; the full scan as a ratio to the floor;
- bytes read per query and candidates / true neighbours per block (bound, ivf), from the statistics
  each answer carries;
- ivf: neighbour recall against exact, the share of prompts whose top-1 is unchanged, mean |dH|;
- batched evaluation (METHOD.md's reference prompts) in prompts/s for bound and full scan, against
  the sgemm floor of a full scan (every prompt x every string x every block, one multiply-add each);
- index build times and sizes (from the manifest), and a served explorer's cold start and peak RSS.
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402,F401  (its thread policies must be set before numpy and torch load, as the server's are)

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.approx import QuerySettings  # noqa: E402
from app.study.evaluation import evaluate  # noqa: E402
from app.study.prompts import reference_prompts  # noqa: E402
from app.present import query_dict  # noqa: E402
from app.search import make_search, unit  # noqa: E402
from app.search.bound import GATHER_COST  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.workspace import open_engine, open_workspace  # noqa: E402

RESULTS: dict = {"checks": []}


def ms(xs, q) -> float:
    return 1000 * float(np.percentile(xs, q))


def check(name: str, value: float, target: float, unit_: str = "", lower_is_better: bool = True):
    ok = value <= target if lower_is_better else value >= target
    RESULTS["checks"].append({"check": name, "value": value, "target": target, "pass": ok})
    op = "<=" if lower_is_better else ">="
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {value:.4g}{unit_} (target {op} {target:g}{unit_})")


def streaming_floor(arr: np.ndarray, reps: int = 5) -> float:
    """Seconds to read ``arr``'s bytes once: a vectorised integer sum over them, best of reps."""
    flat = np.asarray(arr).reshape(-1).view(np.uint64)
    flat.sum()  # page it in
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        flat.sum()
        best = min(best, time.perf_counter() - t)
    return best


def sgemm_flops(C: int, reps: int = 5) -> float:
    """torch float32 matrix-multiply rate (FLOP/s): the best over the batched search's shapes
    (256 or 1,024 queries against 16,384 or 65,536 rows), each the best of reps."""
    best = 0.0
    for batch, cols in ((256, 16384), (256, 65536), (1024, 16384)):
        A, B = torch.randn(batch, C), torch.randn(C, cols)
        A @ B
        for _ in range(reps):
            t = time.perf_counter()
            A @ B
            best = max(best, 2 * batch * C * cols / (time.perf_counter() - t))
    return best


def dir_bytes(path: Path, names) -> int:
    return sum((path / n).stat().st_size for n in names if (path / n).exists())


def time_blocks(engine, prompts, qs, backends) -> dict:
    """Per backend and block: seconds per search, answers, candidates and bytes read (from each
    answer's statistics)."""
    L = engine.store.n_layer
    out = {n: {"t": [[] for _ in range(L)], "ans": [], "cand": [[] for _ in range(L)],
               "bytes": [[] for _ in range(L)]} for n in backends}
    for p in prompts:
        _, ffn = engine.forward(engine.encode(p))
        q = unit(ffn)
        for name, s in backends.items():
            per = []
            for b in range(L):
                t = time.perf_counter()
                nb = (s.threshold(b, q[b], qs.thresholds[b]) if qs.mode == "threshold"
                      else s.topk(b, q[b], qs.k))
                nb.top(qs.show)  # what a page shows: the first strings, ordered
                out[name]["t"][b].append(time.perf_counter() - t)
                out[name]["cand"][b].append(nb.stats.candidates)
                out[name]["bytes"][b].append(nb.stats.bytes_read)
                per.append(nb)
            out[name]["ans"].append(per)
    return out


def time_queries(engine, prompts, qs) -> tuple[list, list]:
    """Seconds per full query as /api/query answers it (its JSON before encoding)."""
    ts, res = [], []
    for p in prompts:
        t = time.perf_counter()
        r = engine.query(p, qs)
        query_dict(r, engine.store, engine.tok.chars)
        ts.append(time.perf_counter() - t)
        res.append(r)
    return ts, res


def sweep_nprobe(engine, ivf, prompts, values, k) -> int:
    """ivf recall against the bound (exact) and time per block for each nprobe, in threshold and
    top-k modes; returns the smallest nprobe whose mean recall reaches 0.99 in both."""
    store, L = engine.store, engine.store.n_layer
    modes = [QuerySettings().resolved(store), QuerySettings(mode="topk", k=k).resolved(store)]
    qs_all = [unit(engine.forward(engine.encode(p))[1]) for p in prompts]
    truth = [[[set((engine.search.threshold(b, q[b], s.thresholds[b]) if s.mode == "threshold"
                    else engine.search.topk(b, q[b], s.k)).rows.tolist()) for b in range(L)]
              for q in qs_all] for s in modes]
    print(f"ivf nprobe sweep on {len(prompts)} prompts (recall against exact; ms per block p50/p95):")
    chosen = None
    for n in [v for v in values if v <= ivf.nlist]:
        ivf.nprobe = n
        row = []
        for s, tr in zip(modes, truth):
            rec, ts = [], []
            for q, t_ in zip(qs_all, tr):
                for b in range(L):
                    t = time.perf_counter()
                    nb = ivf.threshold(b, q[b], s.thresholds[b]) if s.mode == "threshold" else ivf.topk(b, q[b], s.k)
                    ts.append(time.perf_counter() - t)
                    rec.append(len(t_[b] & set(nb.rows.tolist())) / len(t_[b]) if t_[b] else 1.0)
            row.append((float(np.mean(rec)), ms(ts, 50), ms(ts, 95)))
        print(f"  nprobe {n:>5}: " + "; ".join(f"{s.mode} recall {r:.4f}, {p50:.1f}/{p95:.1f} ms"
                                              for s, (r, p50, p95) in zip(modes, row)))
        if chosen is None and all(r >= 0.99 for r, _, _ in row):
            chosen = n
    chosen = chosen or max(values)
    print(f"  chosen nprobe: {chosen}")
    RESULTS["nprobe"] = chosen
    return min(chosen, ivf.nlist)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_measure(model: str, corpus: str | None, prompts: list[str], n_queries: int) -> dict:
    """Start `ffnlens serve` on a store that exists; time it to its first answer; query it; peak RSS."""
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--model", model, "--port", str(port), "--quiet"]
    if corpus:
        cmd += ["--corpus", corpus]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/api/info", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.02)
        cold = time.perf_counter() - t0
        lat = []
        from urllib.parse import quote

        for p in (prompts * (n_queries // max(1, len(prompts)) + 1))[:n_queries]:
            t = time.perf_counter()
            urllib.request.urlopen(f"{base}/api/query?prompt={quote(p)}", timeout=30).read()
            lat.append(time.perf_counter() - t)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
        return {"cold_start_s": cold, "peak_rss": hwm, "http_p50_ms": ms(lat, 50),
                "http_p95_ms": ms(lat, 95), "queries": len(lat)}
    finally:
        proc.terminate()
        proc.wait(10)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, metavar="MODEL[=CORPUS]",
                    help="a model whose store exists (repeatable: one PASS/FAIL table per model, in "
                         "the order given; default: blog); =CORPUS or --corpus gives its text")
    ap.add_argument("--corpus", default=None, help="the corpus of models given without =CORPUS")
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--full-prompts", type=int, default=200)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--eval-prompts", type=int, default=20000)
    ap.add_argument("--eval-full-prompts", type=int, default=512)
    ap.add_argument("--server-queries", type=int, default=300)
    ap.add_argument("--nprobe", default=None,
                    help="ivf lists per query: a number, or 'auto' (the smallest of --sweep whose "
                         "recall reaches 0.99 in both modes); default: the manifest's")
    ap.add_argument("--sweep", default="32,64,128,256,512,1024",
                    help="nprobe values tried on 200 prompts when --nprobe auto")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: blocks,eval,server")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return ap.parse_args()


def open_bench(a, model: str, corpus: str | None):
    """The model's engine (bound), the validation prompts, every backend the store has."""
    ws = open_workspace(Settings(), model=model, corpus=corpus, device="cpu")
    engine = open_engine(ws, backend="bound", progress=False)
    store = engine.store
    rng = np.random.default_rng(0)
    starts = rng.integers(ws.corpus.n_train, len(ws.ids) - 10, a.prompts)
    prompts = [ws.tok.decode(ws.ids[s : s + 10]) for s in starts]
    backends = {"exact": make_search(store, "exact"), "bound": engine.search}
    if "ivf" in store.manifest:
        backends["ivf"] = make_search(store, "ivf")
        if a.nprobe == "auto":
            backends["ivf"].nprobe = sweep_nprobe(engine, backends["ivf"], prompts[:200],
                                                  [int(x) for x in a.sweep.split(",")], a.k)
        elif a.nprobe:
            backends["ivf"].nprobe = int(a.nprobe)
    return engine, prompts, backends


def report_store(a, store, backends, few) -> tuple[float, float]:
    """Print the store, its floors and its indexes; -> (the streaming floor of one block, sgemm)."""
    L, P, C = store.unit.shape
    print(f"store {store.path.name}: {P:,} strings x {L} blocks x {C} (float16); "
          f"{torch.get_num_threads()} threads; {a.prompts} validation prompts "
          f"(full scan on the first {len(few)}); backends: {', '.join(backends)}"
          + (f" (ivf: {store.manifest['ivf']['kind']}, {backends['ivf'].nlist} lists, nprobe "
             f"{backends['ivf'].nprobe})" if "ivf" in backends else ""))
    floor = streaming_floor(store.unit[L // 2])
    flops = sgemm_flops(C)
    block_mib = P * C * 2 / 2**20
    print(f"floors: streaming read of one block ({block_mib:,.0f} MiB) {1000 * floor:.1f} ms "
          f"({block_mib / 1024 / floor:.1f} GiB/s); sgemm {flops / 1e9:.1f} GFLOP/s")
    RESULTS.update(store=store.path.name, P=P, L=L, C=C, floor_ms=1000 * floor, sgemm_gflops=flops / 1e9)
    files = store.manifest["files"]
    size = {"store": sum(v["bytes"] for k, v in files.items() if not k.startswith(("bound", "ivf"))),
            "bound": sum(v["bytes"] for k, v in files.items() if k.startswith("bound")),
            "ivf": sum(v["bytes"] for k, v in files.items() if k.startswith("ivf"))}
    secs = {"store": store.manifest.get("build_seconds"), "bound": store.manifest.get("bound", {}).get("seconds"),
            "ivf": store.manifest.get("ivf", {}).get("seconds")}
    print("indexes on disk: " + "; ".join(
        f"{k} {v / 2**20:,.0f} MiB" + (f", built in {secs[k]:.0f} s" if secs.get(k) else "")
        for k, v in size.items() if v))
    RESULTS.update(sizes=size, build_seconds=secs)
    return floor, flops


def gather_line(engine, block: int) -> None:
    """The planner's constant on this machine: the cost of deciding rows by gathering them, per row,
    over the cost per row of the full float16 pass (app/search/bound.py, GATHER_COST)."""
    scan, P = engine.search.scan, engine.store.size
    q = torch.from_numpy(np.asarray(engine.store.unit[block, P // 2], dtype=np.float32))
    full = min(timed(lambda: scan.coarse(block, q)) for _ in range(5))
    rng = np.random.default_rng(1)
    ratios = []
    for n in (min(P, 20000), min(P, 100000)):
        rows = torch.from_numpy(np.sort(rng.choice(P, n, replace=False)))
        g = min(timed(lambda: scan.exact(block, rows, q)) for _ in range(3))
        ratios.append(g / n / (full / P))
    print(f"planner: gathering rows of block {block} costs {ratios[0]:.1f}x (20k rows) and "
          f"{ratios[1]:.1f}x (100k) the full pass's cost per row; the bound scans a block when "
          f"deciding its candidates would cost more than GATHER_COST = {GATHER_COST} x that")
    RESULTS["gather_cost"] = ratios


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_blocks(a, engine, prompts, few, backends, qs, floor) -> None:
    """Per block and per full query, threshold and top-k mode, every backend; the planner's plans."""
    store = engine.store
    L, P, C = store.unit.shape
    engines = {n: engine.with_search(s) for n, s in backends.items()}
    for mode, s in qs.items():
        label = "calibrated thresholds" if mode == "threshold" else f"top-{a.k}"
        print(f"\n== {mode} mode ({label}) ==")
        full = time_blocks(engine, few, s, {"exact": backends["exact"]})["exact"]
        rest = time_blocks(engine, prompts, s, {n: b for n, b in backends.items() if n != "exact"})
        same = sum(x.rows.tolist() != y.rows.tolist() or not np.array_equal(x.sims, y.sims)
                   for fa, ba in zip(full["ans"], rest["bound"]["ans"]) for x, y in zip(fa, ba))
        print("block   true p50   " + "   ".join(f"{n + ' p50/p95 ms':>18}" for n in backends)
              + "   cand/true bound   scanned   rank p50/p95" + ("   cand/true ivf" if "ivf" in backends else ""))
        for b in range(L):
            true = [len(ans[b]) for ans in rest["bound"]["ans"]]
            cols = [f"{ms(full['t'][b], 50):8.1f} /{ms(full['t'][b], 95):7.1f}"]
            cols += [f"{ms(rest[n]['t'][b], 50):8.1f} /{ms(rest[n]['t'][b], 95):7.1f}" for n in rest]
            ratios = [np.median(np.array(rest[n]["cand"][b]) / np.maximum(1, true)) for n in rest]
            scanned = np.mean([ans[b].stats.plan.endswith("->scan") for ans in rest["bound"]["ans"]])
            rank = [ans[b].stats.rank for ans in rest["bound"]["ans"]]  # the stage each stopped at
            print(f"{b:>5}   {np.median(true):8.0f}   " + "   ".join(f"{c:>18}" for c in cols)
                  + f"   {ratios[0]:15.2f}   {scanned:7.1%}   {np.median(rank):5.0f} /{np.percentile(rank, 95):4.0f}"
                  + "".join(f"   {r:15.2f}" for r in ratios[1:]))
        exact_all = np.sum([np.array(full["t"][b]) for b in range(L)], axis=0)
        print(f"full scan, all blocks: p50 {ms(exact_all, 50):.1f} ms = "
              f"{np.median(exact_all) / (L * floor):.2f} x the floor of {1000 * L * floor:.1f} ms")
        bound_bytes = np.mean([sum(rest["bound"]["bytes"][b][i] for b in range(L)) for i in range(len(prompts))])
        print(f"bytes read per query: full scan {L * P * C * 2 / 2**20:,.0f} MiB, bound "
              f"{bound_bytes / 2**20:,.1f} MiB ({bound_bytes / (L * P * C * 2):.2f} of it)")
        print(f"bound answers identical to the full scan's on {len(few)} prompts x {L} blocks: "
              + ("yes" if same == 0 else f"NO ({same} differ)"))
        if mode == "threshold":
            check("full scan, all blocks, p50 / bandwidth floor", float(np.median(exact_all) / (L * floor)), 1.25, "x")
        whole = {"exact": time_queries(engines["exact"], few, s)}
        for n in rest:
            whole[n] = time_queries(engines[n], prompts, s)
        for n, (ts, _) in whole.items():
            print(f"full query ({n}): p50 {ms(ts, 50):.1f} ms, p95 {ms(ts, 95):.1f} ms over {len(ts)} prompts")
            RESULTS[f"{mode}_{n}_query_ms"] = {"p50": ms(ts, 50), "p95": ms(ts, 95)}
        check(f"bound full query p95, {mode} mode", ms(whole["bound"][0], 95), 60, " ms")
        check(f"bound full query p95 / full scan's, {mode} mode",
              ms(whole["bound"][0], 95) / max(1e-9, ms(whole["exact"][0], 95)), 1.1, "x")
        if "ivf" in whole:
            ivf_figures(rest, whole, mode)


def ivf_figures(rest, whole, mode) -> None:
    ex_ans, ivf_ans = rest["bound"]["ans"], rest["ivf"]["ans"]
    rec = [len(set(i.rows.tolist()) & set(e.rows.tolist())) / len(e) if len(e) else 1.0
           for ea, ia in zip(ex_ans, ivf_ans) for e, i in zip(ea, ia)]
    pooled = (sum(len(set(i.rows.tolist()) & set(e.rows.tolist())) for ea, ia in zip(ex_ans, ivf_ans)
                  for e, i in zip(ea, ia)) / max(1, sum(len(e) for ea in ex_ans for e in ea)))
    eb, ei = whole["bound"][1], whole["ivf"][1]
    top1 = np.mean([int(np.argmax(x.approx)) == int(np.argmax(y.approx)) for x, y in zip(eb, ei)])
    dh = np.mean([abs(x.hellinger - y.hellinger) for x, y in zip(eb, ei)])
    print(f"ivf against exact: recall mean {np.mean(rec):.4f} (pooled {pooled:.4f}), "
          f"top-1 unchanged {top1:.4f}, mean |dH| {dh:.5f}")
    RESULTS[f"{mode}_ivf"] = {"recall": float(np.mean(rec)), "pooled": pooled,
                              "top1_unchanged": float(top1), "mean_dH": float(dh)}
    check(f"ivf full query p95, {mode} mode", ms(whole["ivf"][0], 95), 50, " ms")
    check(f"ivf neighbour recall, {mode} mode", float(np.mean(rec)), 0.99, "", False)
    check(f"ivf top-1 unchanged, {mode} mode", float(top1), 0.995, "", False)


def bench_eval(a, engine, exact_engine, qs, flops) -> None:
    store = engine.store
    L, P, C = store.unit.shape
    print("\n== batched evaluation (reference prompts, calibrated thresholds) ==")
    rows = reference_prompts(store, a.eval_prompts)
    floor_s = 2.0 * len(rows) * P * C * L / flops
    r = evaluate(engine, rows, qs["threshold"], progress=False)
    rf = evaluate(exact_engine, rows[: a.eval_full_prompts], qs["threshold"], progress=False)
    print(f"bound: {len(rows):,} prompts in {r['seconds']:.1f} s ({r['prompts_per_s']:.0f} prompts/s); "
          f"full scan: {rf['prompts']:,} prompts in {rf['seconds']:.1f} s ({rf['prompts_per_s']:.1f} prompts/s)")
    print(f"sgemm floor of a full scan over {len(rows):,} prompts: {floor_s:.1f} s "
          f"({len(rows) / floor_s:.1f} prompts/s); Hellinger mean {r['hellinger']['mean']:.4f}")
    RESULTS["eval"] = {"prompts": len(rows), "seconds": r["seconds"], "full_scan_prompts_per_s": rf["prompts_per_s"],
                       "floor_s": floor_s, "hellinger_mean": r["hellinger"]["mean"]}
    check("full-scan evaluation / sgemm floor", (len(rows) / rf["prompts_per_s"]) / floor_s, 1.3, "x")
    check("bound evaluation / sgemm floor of a full scan", r["seconds"] / floor_s, 1.0, "x")


def bench_server(a, model, corpus, store, prompts) -> None:
    print("\n== served explorer ==")
    sv = serve_and_measure(model, corpus, prompts[:50], a.server_queries)
    on_disk = sum(v["bytes"] for v in store.manifest["files"].values())
    print(f"cold start to the first answer {sv['cold_start_s']:.2f} s; {sv['queries']} /api/query requests "
          f"p50 {sv['http_p50_ms']:.0f} ms, p95 {sv['http_p95_ms']:.0f} ms; peak RSS "
          f"{sv['peak_rss'] / 2**20:,.0f} MiB against {on_disk / 2**20:,.0f} MiB on disk")
    RESULTS["server"] = sv
    check("server cold start", sv["cold_start_s"], 3.0, " s")
    check("server peak RSS / store on disk", sv["peak_rss"] / on_disk, 1.5, "x")


def bench_model(a, model: str, corpus: str | None) -> dict:
    """Every measurement on one model's store; -> its figures and checks."""
    RESULTS.clear()
    RESULTS.update(model=model, checks=[])
    skip = set(filter(None, a.skip.split(",")))
    engine, prompts, backends = open_bench(a, model, corpus)
    few = prompts[: a.full_prompts]
    floor, flops = report_store(a, engine.store, backends, few)
    qs = {"threshold": QuerySettings().resolved(engine.store),
          "topk": QuerySettings(mode="topk", k=a.k).resolved(engine.store)}
    gather_line(engine, engine.store.n_layer // 2)
    if "blocks" not in skip:
        bench_blocks(a, engine, prompts, few, backends, qs, floor)
    if "eval" not in skip:
        bench_eval(a, engine, engine.with_search(backends["exact"]), qs, flops)
    if "server" not in skip:
        bench_server(a, model, corpus, engine.store, prompts)
    print(f"\n== {model}: PASS / FAIL ==")
    for c in RESULTS["checks"]:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['check']}")
    return json.loads(json.dumps(RESULTS, default=float))


def main() -> None:
    a = parse_args()
    out = []
    for spec in a.model or ["blog"]:
        model, _, corpus = spec.partition("=")
        print(f"\n######## {model} ########")
        out.append(bench_model(a, model, corpus or a.corpus))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")

if __name__ == "__main__":
    main()
