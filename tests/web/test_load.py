"""Load and memory on a live server: 50 concurrent clients get their own answers (503s retried), and
10,000 requests leave memory bounded."""
import http.client
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

from ..conftest import micro_text


def _prompts(count: int, seed: int = 0) -> list[str]:
    text = micro_text()
    rng = np.random.default_rng(seed)
    out = set()
    while len(out) < count:
        a = int(rng.integers(0, len(text) - 40))
        out.add(text[a : a + int(rng.integers(4, 32))])
    return sorted(out)


def _get(conn_box: list, port: int, url: str) -> tuple[int, bytes]:
    for attempt in range(3):
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn_box[0].request("GET", url)
            r = conn_box[0].getresponse()
            return r.status, r.read()
        except (ConnectionError, http.client.HTTPException):
            if conn_box[0] is not None:
                conn_box[0].close()
            conn_box[0] = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def test_50_concurrent_clients(live):
    port, app = live
    prompts = _prompts(400)
    urls = [f"/api/query?" + urlencode({"prompt": p, **({"mode": "topk", "k": "20"} if i % 3 == 0 else {})})
            for i, p in enumerate(prompts)]
    n_req, n_clients = 2000, 50
    todo = iter(range(n_req))
    take = threading.Lock()
    latencies, statuses, busy, failures = [], {}, [0], []
    answers: dict[str, set] = {}  # url -> the distinct answers it got (one each: no mixing)

    def client():
        conn, rng = [None], np.random.default_rng(threading.get_ident())
        while True:
            with take:
                i = next(todo, None)
            if i is None:
                break
            t0 = time.perf_counter()
            for attempt in range(400):
                status, body = _get(conn, port, urls[i % len(urls)])
                statuses[status] = statuses.get(status, 0) + 1
                if status != 503:
                    break
                busy[0] += 1
                time.sleep(0.05 + 0.1 * rng.random())  # a short pause, not Retry-After's second
            d = json.loads(body) if status == 200 else {}
            if d.get("prompt") == prompts[i % len(prompts)]:
                latencies.append(time.perf_counter() - t0)
                answers.setdefault(urls[i % len(urls)], set()).add(
                    (d["hellinger"], tuple((b["neighbours"], tuple(t["row"] for t in b["top"])) for b in d["blocks"])))
            else:
                failures.append((i, status, body[:200]))
        if conn[0] is not None:
            conn[0].close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    print(f"\nload: {n_req:,} requests from {n_clients} clients in {wall:.1f} s "
          f"({n_req / wall:.0f}/s); statuses {dict(sorted(statuses.items()))}; {busy[0]:,} answered "
          f"503 and retried; failed {len(failures)}; latency p50 {np.percentile(lat, 50):.0f} ms, "
          f"p99 {np.percentile(lat, 99):.0f} ms, max {lat.max():.0f} ms")
    assert not failures, failures[:5]
    assert set(statuses) <= {200, 503} and len(latencies) == n_req
    assert all(len(a) == 1 for a in answers.values())  # the same URL, the same answer, however busy
    assert app.state.explorer.gate.active == 0 and app.state.explorer.gate.queued == 0


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_memory_stays_bounded_over_10000_requests(live):
    port, _ = live
    prompts = _prompts(96, seed=1)  # the cache keeps 64: about two requests in three are hits
    rng = np.random.default_rng(2)
    paths = ["/api/query?" + urlencode({"prompt": prompts[int(i)]}) for i in rng.integers(0, 96, 10_000)]
    conn = [None]
    for p in paths[:300]:  # warm: caches full, lazy structures built
        assert _get(conn, port, p)[0] == 200
    before = _rss_mb()
    t0 = time.perf_counter()
    for p in paths:
        status, _ = _get(conn, port, p)
        assert status == 200
    wall = time.perf_counter() - t0
    after = _rss_mb()
    print(f"\nmemory: 10,000 requests in {wall:.1f} s; RSS {before:.0f} MB before, {after:.0f} MB after "
          f"({after - before:+.0f} MB)")
    assert after - before < 100
