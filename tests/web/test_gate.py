"""The gate in front of the engine (app/web/gate.py): it turns away at once when full, queues first
come first served, never lets more than ``running`` in, and a full gate is an immediate 503."""
import threading
import time

import pytest

from app.web.gate import Busy, Gate


def test_gate_turns_away_at_once_when_full():
    g = Gate(running=1, waiting=0)
    with g:
        t0 = time.perf_counter()
        with pytest.raises(Busy) as e:
            g.acquire()
        assert time.perf_counter() - t0 < 0.1 and e.value.retry_after >= 1
    with g:  # free again
        pass
    assert g.rejected == 1 and g.active == 0


def test_gate_queues_first_come_first_served_and_times_out():
    g = Gate(running=1, waiting=3, timeout=5)
    order, threads = [], []
    g.acquire()
    for i in range(3):
        def wait(i=i):
            with g:
                order.append(i)
        threads.append(threading.Thread(target=wait))
        threads[-1].start()
        while g.queued < i + 1:
            time.sleep(0.001)
    with pytest.raises(Busy):  # 1 running, 3 waiting: the fifth is turned away
        g.acquire()
    g.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2] and g.active == 0 and g.queued == 0
    impatient = Gate(running=1, waiting=1, timeout=0.05)
    with impatient:
        t0 = time.perf_counter()
        with pytest.raises(Busy):
            impatient.acquire()
        assert 0.04 < time.perf_counter() - t0 < 2 and impatient.queued == 0


def test_gate_never_lets_more_than_running_in():
    g = Gate(running=2, waiting=64, timeout=None)
    now, peak, lock = [0], [0], threading.Lock()

    def work():
        for _ in range(200):
            with g:
                with lock:
                    now[0] += 1
                    peak[0] = max(peak[0], now[0])
                time.sleep(0)
                with lock:
                    now[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and g.active == 0 and g.rejected == 0


def test_a_full_gate_is_an_immediate_503(client, monkeypatch):
    full = Gate(running=1, waiting=0)
    monkeypatch.setattr(client.app.state.explorer, "gate", full)
    with full:  # someone else's query holds the only place
        for path in ("/api/query", "/api/blocks/1", "/", "/results", "/blocks/1"):
            t0 = time.perf_counter()
            r = client.get(path, params={"prompt": "the king "})
            assert r.status_code == 503 and r.headers["retry-after"] == "1", path
            assert time.perf_counter() - t0 < 2
            if path.startswith("/api/"):
                assert r.json()["detail"] == "the server is busy; try again"
            else:
                assert "the server is busy; try again" in r.text and 'class="error"' in r.text
        assert client.get("/api/info").status_code == 200  # no engine work: not gated
    assert client.get("/api/query", params={"prompt": "the king "}).status_code == 200
