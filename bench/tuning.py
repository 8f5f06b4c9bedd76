"""The tuning instrument (/tune, app/study/tuning.py), timed with PASS / FAIL against issue 20's targets.

    python bench/tuning.py --model tiny [--home DIR] [--moves 60] [--json OUT]
    python bench/tuning.py --model blog --corpus ../shared/data/tinyshakespeare.txt --home DIR

One run, for one model (its store must exist):
1. the precomputation: the sample's table built from scratch (the default sample, 500 prompts),
   in seconds, and its memory; target <= 60 s on 2 cores. The table is then written where the
   server reads it (beside the store), so the server starts on it;
2. a slider moved in Chromium (``ffnlens serve`` in a subprocess, FFNLENS_HOME=--home): --moves
   key presses on the threshold and weight sliders of every block in turn, each timed from the
   key press to the new figures on screen (the figures region swapped and no longer dimmed);
   target p95 <= 200 ms. The server's own time (Server-Timing "lookup") is printed beside it, and
   whether any request other than /tune/figures went out (a slider must not search).
"""
from __future__ import annotations

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402,F401  (its thread policies must be set before numpy and torch load, as the server's are)

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.browser import free_port, pct  # noqa: E402

TARGET_BUILD_S = 60.0
TARGET_MOVE_MS = 200.0

WAIT = """() => { window.__painted = new Promise(resolve => {
  const t = document.getElementById('tune-figures');
  const done = () => { if (!t.classList.contains('stale')) { ob.disconnect(); resolve(performance.now()); } };
  const ob = new MutationObserver(done);
  ob.observe(t, {childList: true, attributes: true, attributeFilter: ['class']});
}); return performance.now(); }"""


def build(args) -> dict:
    from app.settings import Settings
    from app.study.tuning import build_table, cache_path, sample_prompts
    from app.workspace import open_engine, open_workspace

    env_home = os.environ.get("FFNLENS_HOME")
    if args.home:
        os.environ["FFNLENS_HOME"] = args.home
    try:
        ws = open_workspace(Settings(), model=args.model, corpus=args.corpus, device="cpu")
        engine = open_engine(ws, backend="auto", progress=False)
        prompts, describe = sample_prompts(engine, args.prompts)
        t0 = time.perf_counter()
        table = build_table(engine, prompts, describe)
        seconds = time.perf_counter() - t0
        table.save(cache_path(engine, args.prompts))
    finally:
        if args.home:
            os.environ.pop("FFNLENS_HOME") if env_home is None else os.environ.update(FFNLENS_HOME=env_home)
    return {"seconds": seconds, "bytes": table.nbytes(), "prompts": table.n, "sample": describe,
            "levels": [len(lv) for lv in table.levels], "capped": table.info["capped"],
            "backend": engine.search.name}


def move_sliders(args) -> dict:
    import subprocess
    import urllib.request

    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ)
    if args.home:
        env["FFNLENS_HOME"] = args.home
    cmd = [sys.executable, "-m", "app.cli", "serve", "--model", args.model, "--port", str(port), "--quiet"]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(base + "/api/tune", timeout=5).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        lat, server, other = [], [], []
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=shutil.which("chromium"),
                                   args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/tune?prompt=" + urllib.request.quote(args.prompt))
            page.wait_for_selector(".tune-figs")

            def seen(r):
                if "/tune/figures?" not in r.url:
                    other.append(r.url)

            def timing(resp):
                if "/tune/figures?" in resp.url:
                    st = resp.headers.get("server-timing", "")
                    for part in st.split(","):
                        name, _, dur = part.strip().partition(";dur=")
                        if name == "lookup":
                            server.append(float(dur))
            page.on("request", seen)
            page.on("response", timing)
            sliders = page.locator("input[type=range]")
            n = sliders.count()
            for i in range(args.moves):
                el = sliders.nth(i % n)
                el.focus()
                key = "ArrowLeft" if (i // n) % 2 == 0 else "ArrowRight"
                t0 = page.evaluate(WAIT)  # arms the observer; the promise is awaited below
                page.keyboard.press(key)
                t1 = page.evaluate("() => window.__painted")
                lat.append(t1 - t0)
                page.wait_for_timeout(args.pause_ms)
            b.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return {"moves": len(lat), "p50": pct(lat, 50), "p95": pct(lat, 95), "max": max(lat),
            "server_p50": pct(server, 50), "server_p95": pct(server, 95), "other_requests": other}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--home", default=None, help="FFNLENS_HOME (where the store is)")
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--moves", type=int, default=60)
    ap.add_argument("--pause-ms", type=int, default=150, help="between slider moves")
    ap.add_argument("--prompt", default="To be, or not to be", help="the prompt watched on the page")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = {"model": args.model, "build": build(args)}
    b = out["build"]
    ok_build = b["seconds"] <= TARGET_BUILD_S
    print(f"{args.model}: tuning table for {b['sample']}: {b['seconds']:.1f} s, "
          f"{b['bytes'] / 2**20:.1f} MiB, levels per block {b['levels']}{' (capped)' if b['capped'] else ''}, "
          f"search {b['backend']}")
    print(f"  [{'PASS' if ok_build else 'FAIL'}] precomputation {b['seconds']:.1f} s (target <= {TARGET_BUILD_S:.0f} s)")
    m = out["moves"] = move_sliders(args)
    ok_move = m["p95"] <= TARGET_MOVE_MS
    print(f"  [{'PASS' if ok_move else 'FAIL'}] slider moved -> new figures on screen, {m['moves']} moves: "
          f"p50 {m['p50']:.0f} ms, p95 {m['p95']:.0f} ms, max {m['max']:.0f} ms (target p95 <= {TARGET_MOVE_MS:.0f} ms)")
    print(f"  server lookup p50 {m['server_p50']:.1f} ms, p95 {m['server_p95']:.1f} ms; requests other than "
          f"/tune/figures while moving: {len(m['other_requests'])}")
    out["pass"] = ok_build and ok_move and not m["other_requests"]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
