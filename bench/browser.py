"""Typing in a real browser: keydown -> the answer for that prompt painted, with PASS/FAIL.

    python bench/browser.py [--model tiny] [--corpus FILE] [--home DIR] [--url http://HOST:PORT]
                            [--slow-ms 200] [--fast-ms 60] [--keys 130] [--json OUT]

Serves the model (``ffnlens serve`` in a subprocess, FFNLENS_HOME=--home when given; or measures an
explorer already running at --url), drives Debian's Chromium through Playwright, and types prompts
into the main page's box character by character, once at about --slow-ms a key (human speed) and
once at about --fast-ms a key. Each prompt starts from a fresh page.

Measured in the page's own clock (performance.now()):
- keydown: a capture listener on the box records the time of each keydown; the next input event
  ties it to the prompt the key produced;
- painted: a MutationObserver on #results notes which prompt the region now shows (its
  data-prompt attribute, or on older pages the prompt in its permalink), and after the next
  animation frame records (prompt, time) the first time that prompt is shown;
- latency of a keystroke: keydown -> the first paint of that prompt or of a later one typed after
  it (typing fast, a prompt may be overtaken by the next before it is painted: the screen has then
  caught up with it). "exact" counts the keystrokes whose own prompt was painted;
- the longest gap between paints while typing (from the first keydown to the last one), and
  after the last key, the time until the final prompt is painted;
- the Server-Timing parts of every /results response (resource timing entries), p50/p95 each, and
  the page's own part: a response's end -> its prompt painted (parsing, swapping, layout, a frame).

Targets (issue 17): at human speed, p95 keydown -> painted <= 150 ms (`tiny`; 200 ms for the
reference shape, `blog` and `blog-cpu`);
typing fast, a fresh paint at least every 300 ms; /results server time (Server-Timing "app" or
"total") p95 <= 40 ms (`tiny`; 60 ms `blog`, `blog-cpu`). The other figures are printed for information.
Anything else (a micro model from a test) is held to `tiny`'s targets.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGETS = {name: {"latency": 200, "server": 60} for name in ("blog", "blog-cpu")}
DEFAULT_TARGETS = {"latency": 150, "server": 40}
GAP_TARGET = 300
# Lines typed when the corpus is the default one (Shakespeare); with --corpus, lines of that text.
PROMPTS = ["To be, or not to be, that is", "Now is the winter of our discontent",
           "What light through yonder window breaks", "Friends, Romans, countrymen, lend me",
           "All the world's a stage, and all the men", "If music be the food of love, play on",
           "Once more unto the breach, dear friends", "The quality of mercy is not strained",
           "But soft, what light is this that breaks", "Is this a dagger which I see before me"]

# Runs in the page before its own scripts (a CDP init script: the page's CSP does not apply to it).
PROBE = r"""
(() => {
  const S = window.__bench = {keys: [], paints: [], seen: new Set()};
  let pending = null;
  const shown = () => {
    const r = document.getElementById("results");
    if (!r) return null;
    if (r.dataset.prompt !== undefined) return r.dataset.prompt;
    const a = r.querySelector("a.permalink");  // pages from before data-prompt
    if (!a) return null;
    return new URL(a.getAttribute("href"), location.href).searchParams.get("prompt") || "";
  };
  const check = () => {
    const p = shown();
    if (p === null || S.seen.has(p)) return;
    S.seen.add(p);
    requestAnimationFrame(() => S.paints.push({prompt: p, t: performance.now()}));
  };
  document.addEventListener("keydown", (e) => {
    if (e.target && e.target.id === "prompt") pending = performance.now();
  }, true);
  document.addEventListener("input", (e) => {
    if (!e.target || e.target.id !== "prompt" || pending === null) return;
    S.lastTyped = e.target.value;
    S.keys.push({prompt: e.target.value, t: pending});
    pending = null;
  }, true);
  const start = () => {
    const r = document.getElementById("results");
    if (!r) return;
    new MutationObserver(check).observe(r, {subtree: true, childList: true, attributes: true,
                                            characterData: true});
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[i]


def serve(args) -> tuple[str, subprocess.Popen | None]:
    if args.url:
        return args.url.rstrip("/"), None
    port = free_port()
    cmd = [sys.executable, "-m", "app.cli", "serve", "--model", args.model, "--port", str(port), "--quiet"]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    env = dict(os.environ)
    if args.home:
        env["FFNLENS_HOME"] = args.home
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + args.start_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(base + "/api/info", timeout=2).read()
            return base, proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not answer within {args.start_timeout} s (is the store built? "
                     f"`ffnlens index --model {args.model}`)")


def prompts_for(args, base: str, limit: int) -> list[str]:
    """Lines to type, in the model's vocabulary and context, about ``limit`` keys in all."""
    info = json.loads(urllib.request.urlopen(base + "/api/query?prompt=" + urllib.parse.quote("a")).read())
    vocab = set(info["model"])
    lines = PROMPTS
    if args.corpus:
        text = Path(args.corpus).read_text(encoding="utf-8", errors="replace")
        lines = [ln.strip() for ln in text.splitlines() if 18 <= len(ln.strip()) <= 40][:: 7][:60]
    out, n = [], 0
    for ln in lines:
        ln = "".join(c for c in ln if c in vocab)[: args.max_prompt]
        if len(ln) < 8:
            continue
        out.append(ln)
        n += len(ln)
        if n >= limit:
            break
    return out


def type_prompt(page, base: str, text: str, every_ms: float) -> dict:
    page.goto(base + "/")
    page.wait_for_selector("#prompt")
    page.focus("#prompt")
    page.wait_for_timeout(300)
    t0 = time.perf_counter()
    for i, ch in enumerate(text):
        due = t0 + i * every_ms / 1000
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        page.keyboard.type(ch)
    # Let the last answer land (or give up after 5 s).
    try:
        page.wait_for_function("(p) => window.__bench.paints.some(x => x.prompt === p)", arg=text,
                               timeout=5000, polling=20)
    except Exception:
        pass
    page.wait_for_timeout(100)
    return page.evaluate("""() => ({keys: window.__bench.keys, paints: window.__bench.paints,
        timing: performance.getEntriesByType("resource")
          .filter(e => new URL(e.name).pathname.endsWith("/results"))
          .map(e => ({total: e.responseStart - e.requestStart, end: e.responseEnd,
                      prompt: new URL(e.name).searchParams.get("prompt"),
                      parts: (e.serverTiming || []).map(s => [s.name, s.duration])}))})""")


def measure(runs: list[dict]) -> dict:
    lat, exact, gaps, tails, server, client = [], 0, [], [], {}, []
    for r in runs:
        keys, paints = r["keys"], sorted(r["paints"], key=lambda p: p["t"])
        order = {k["prompt"]: i for i, k in enumerate(keys)}
        first = {}
        for p in paints:
            first.setdefault(p["prompt"], p["t"])
        for i, k in enumerate(keys):
            later = [first[q["prompt"]] for q in keys[i:] if q["prompt"] in first
                     and first[q["prompt"]] >= k["t"]]
            if later:
                lat.append(min(later) - k["t"])
            else:
                lat.append(float("inf"))
            exact += k["prompt"] in first and first[k["prompt"]] >= k["t"]
        if keys:
            t_first, t_last = keys[0]["t"], keys[-1]["t"]
            marks = [t_first] + [p["t"] for p in paints if t_first <= p["t"] <= t_last
                                 and p["prompt"] in order] + [t_last]
            gaps.append(max(b - a for a, b in zip(marks, marks[1:])) if len(marks) > 1 else 0.0)
            final = first.get(keys[-1]["prompt"])
            tails.append(final - t_last if final is not None else float("inf"))
        for t in r["timing"]:
            for name, dur in t["parts"]:
                server.setdefault(name, []).append(dur)
            if t["prompt"] in first and first[t["prompt"]] >= t["end"]:  # the page's own share
                client.append(first[t["prompt"]] - t["end"])
    return {"keys": len(lat), "exact": exact, "p50": pct(lat, 50), "p95": pct(lat, 95),
            "max": max(lat) if lat else float("nan"), "gap": max(gaps) if gaps else float("nan"),
            "tail": max(tails) if tails else float("nan"),
            "server": server, "client": (pct(client, 50), pct(client, 95))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="committed model name or model directory (default: tiny)")
    ap.add_argument("--corpus", default=None, help="the corpus (default: the model's own); its lines are typed")
    ap.add_argument("--home", default=None, help="FFNLENS_HOME for the server (where the store is)")
    ap.add_argument("--url", default=None, help="measure an explorer already running here instead")
    ap.add_argument("--slow-ms", type=float, default=200, help="ms between keys at human speed")
    ap.add_argument("--fast-ms", type=float, default=60, help="ms between keys typing fast")
    ap.add_argument("--keys", type=int, default=130, help="about how many keys to type at each speed")
    ap.add_argument("--max-prompt", type=int, default=40, help="longest prompt typed")
    ap.add_argument("--start-timeout", type=float, default=180)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    base, proc = serve(args)
    name = Path(args.model).name
    targets = TARGETS.get(name, DEFAULT_TARGETS)
    results = {}
    try:
        lines = prompts_for(args, base, 2 * args.keys)
        prompts = (lines[0::2], lines[1::2])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(PROBE)
            # Warm the server's and the browser's caches off the clock (a different first letter).
            type_prompt(page, base, "wa", 100)
            # Each speed types its own lines: the server's answer cache must not flatter the second.
            for n, (label, ms) in enumerate((("slow", args.slow_ms), ("fast", args.fast_ms))):
                runs = [type_prompt(page, base, p, ms) for p in prompts[n]]
                results[label] = measure(runs)
                results[label]["every_ms"] = ms
            browser.close()
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=20)

    ok = True
    print(f"\nbrowser benchmark: model {name}, {base}, {len(prompts[0])} + {len(prompts[1])} prompts, "
          f"{results['slow']['keys']} + {results['fast']['keys']} keys")
    print(f"{'what':<44} {'measured':<38} {'target':<22} verdict")

    def row(what, measured, target, passed):
        nonlocal ok
        ok &= passed
        print(f"{what:<44} {measured:<38} {target:<22} {'PASS' if passed else 'FAIL'}")

    # The rows: at human speed the latency is judged, typing fast the gaps between paints.
    for label in ("slow", "fast"):
        r = results[label]
        judged = label == "slow"
        row(f"keydown -> painted, ~{r['every_ms']:.0f} ms a key",
            f"p50 {r['p50']:.0f} ms, p95 {r['p95']:.0f} ms, max {r['max']:.0f} ms",
            f"p95 <= {targets['latency']} ms" if judged else "(information)",
            r["p95"] <= targets["latency"] if judged else True)
        row(f"  own prompt painted, ~{r['every_ms']:.0f} ms a key", f"{r['exact']} of {r['keys']} keys",
            "(information)", True)
        row("  response received -> painted (the page's part)",
            f"p50 {r['client'][0]:.0f} ms, p95 {r['client'][1]:.0f} ms", "(information)", True)
        row(f"longest gap between paints, ~{r['every_ms']:.0f} ms a key",
            f"{r['gap']:.0f} ms (after the last key {r['tail']:.0f} ms)",
            f"<= {GAP_TARGET} ms" if not judged else "(information)",
            r["gap"] <= GAP_TARGET if not judged else True)
    parts = {}
    for label in ("slow", "fast"):
        for k, v in results[label]["server"].items():
            parts.setdefault(k, []).extend(v)
    if not parts:
        print(f"{'Server-Timing of /results':<44} {'(the server sends none)':<38}")
    for k, vs in parts.items():
        p50, p95, n = pct(vs, 50), pct(vs, 95), len(vs)
        total = k in ("app", "total")
        row(f"Server-Timing {k} ({n} responses)", f"p50 {p50:.0f} ms, p95 {p95:.0f} ms",
            f"p95 <= {targets['server']} ms" if total else "(a part)",
            p95 <= targets["server"] if total else True)
    print("\nALL PASS" if ok else "\nSOME FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": name, "targets": targets, "results": results},
                                              indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
