"""Crash safety of an index build: kill -9 twice during `ffnlens index`, no store that loads is
left, and the resumed build gives the same store bit for bit."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import REPO


def test_kill_9_during_an_index_build_then_rebuild(workspace, engine, micro_model_dir, micro_corpus,
                                                   tmp_path):
    import torch

    from app.approx import Engine, QuerySettings
    from app.search import make_search
    from app.store import StoreError, open_store

    # The session's store was built in this process with torch's thread count: the same here, so the
    # rebuilt vectors can be compared bit for bit.
    env = {**os.environ, "FFNLENS_HOME": str(tmp_path), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "app.cli", "index", "--model", str(micro_model_dir), "--corpus",
           str(micro_corpus), "--ivf", "none", "--quiet"]
    store_dir = tmp_path / "stores" / workspace.spec.dirname()
    part = store_dir.with_name(store_dir.name + ".partial")
    # Killed twice: as soon as the build's folder appears, then, resumed, once its arrays are
    # allocated and being filled (progress.json); neither leaves a store that loads.
    for stage in (part, part / "progress.json"):
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while not stage.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        assert stage.exists(), proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        print(f"\nkill -9: the build left {part.name} with {sorted(p.name for p in part.iterdir())}")
        with pytest.raises(StoreError, match="only partly built; run `ffnlens index`"):
            open_store(store_dir, workspace.spec)

    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not part.exists()
    st = open_store(store_dir, workspace.spec, corpus_ids=workspace.ids)
    assert np.array_equal(np.asarray(st.unit), np.asarray(engine.store.unit))
    assert st.defaults["thresholds"] == engine.store.defaults["thresholds"]
    rebuilt = Engine(workspace.model, workspace.tok, st, make_search(st, "exact"), "cpu")
    reference = engine.with_search(make_search(engine.store, "exact"))
    for prompt, s in (("the king ", QuerySettings()), ("my lord", QuerySettings(mode="topk", k=9))):
        a, b = rebuilt.query(prompt, s), reference.query(prompt, s)
        assert a.hellinger == b.hellinger and np.array_equal(a.approx, b.approx)
        for x, y in zip(a.blocks, b.blocks):
            assert np.array_equal(x.neighbours.rows, y.neighbours.rows)
            assert np.array_equal(x.neighbours.sims, y.neighbours.sims)
