import json
import shutil

import numpy as np
import pytest
import torch

from app.store import StoreError, StoreSpec, build_store, open_store
from app.workspace import build_index, open_workspace

from .test_model import reference_forward


def test_store_holds_the_ffn_outputs_of_an_independent_forward_pass(engine):
    store, model = engine.store, engine.model
    rows = np.array([0, 1, 2, 100, store.size // 2, store.size - 1])
    idx = torch.from_numpy(store.pool.strings(store.corpus_ids, rows).astype(np.int64))
    _, ffns = reference_forward(model, idx)
    for b, f in enumerate(ffns):
        want = f[:, -1].numpy()
        got = store.ffn(b, rows)
        assert np.allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_manifest_records_what_the_store_was_built_from(engine, workspace):
    m = engine.store.manifest
    assert m["model_sha256"] == workspace.model_info["sha256"]
    assert m["corpus_sha256"] == workspace.corpus.sha256
    assert (m["n"], m["mode"], m["dtype"]) == (10, "reference", "float16")
    d = m["defaults"]
    assert d["rule"] == "reference-sizes" and len(d["thresholds"]) == 6
    assert all(-1 <= t <= 1 for t in d["thresholds"])


def copy_store(engine, tmp_path):
    dst = tmp_path / "store"
    shutil.copytree(engine.store.path, dst)
    return dst


def test_mismatched_store_is_refused_with_a_rebuild_hint(engine, workspace, tmp_path):
    dst = copy_store(engine, tmp_path)
    other = StoreSpec(**{**workspace.spec.__dict__, "model_sha256": "f" * 64})
    with pytest.raises(StoreError, match="another model or corpus.*ffnlens index"):
        open_store(dst, other)
    other = StoreSpec(**{**workspace.spec.__dict__, "mode": "heldout"})
    with pytest.raises(StoreError, match="mode"):
        open_store(dst, other)


def test_truncated_or_corrupt_files_are_refused(engine, workspace, tmp_path):
    dst = copy_store(engine, tmp_path)
    with open(dst / "ffn_unit.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(StoreError, match="truncated"):
        open_store(dst, workspace.spec)
    dst2 = tmp_path / "s2"
    shutil.copytree(engine.store.path, dst2)
    counts = np.load(dst2 / "counts_n.npy")
    counts[0] += 1
    np.save(dst2 / "counts_n.npy", counts)
    with pytest.raises(StoreError, match="hash"):
        open_store(dst2, workspace.spec)
    (dst2 / "manifest.json").unlink()
    with pytest.raises(StoreError, match="no store"):
        open_store(dst2, workspace.spec)


def test_interrupted_build_resumes_to_the_same_store(engine, settings, micro_model_dir,
                                                     micro_corpus, tmp_path):
    ws = open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus),
                        store=str(tmp_path / "resumed"))
    part = build_store(ws.model, ws.ids, ws.spec, ws.store_dir, batch_size=512, progress=False,
                       flush_every=1)
    # Pretend the build died after 1,024 strings: a later run must redo only the rest.
    prog = json.loads((part / "progress.json").read_text())
    prog["done"] = 1024
    (part / "progress.json").write_text(json.dumps(prog))
    unit = np.load(part / "ffn_unit.npy", mmap_mode="r+")
    unit[:, 1024:] = 0
    unit.flush()
    with pytest.raises(StoreError, match="partly built"):
        open_store(ws.store_dir, ws.spec)
    path = build_index(ws, batch_size=512, progress=False, calibration_prompts=32)
    st = open_store(path, ws.spec)
    assert np.array_equal(np.asarray(st.unit), np.asarray(engine.store.unit))
    assert not part.exists()


def test_a_store_of_attention_outputs_for_the_baselines(settings, micro_model_dir, micro_corpus, engine):
    from model.gpt import Trace

    from app.workspace import open_engine

    ws = open_workspace(settings, model=str(micro_model_dir), corpus=str(micro_corpus), activation="attn")
    assert ws.store_dir.name.endswith("-attn") and ws.store_dir != engine.store.path
    build_index(ws, batch_size=512, progress=False, calibration_prompts=32)
    att = open_engine(ws, progress=False)
    assert att.activation == "attn" and att.store.manifest["activation"] == "attn"
    rows = np.array([0, 7, att.store.size - 1])
    idx = torch.from_numpy(att.store.pool.strings(att.store.corpus_ids, rows).astype(np.int64))
    trace = Trace(last_position=True)
    with torch.no_grad():
        att.model(idx, trace=trace)
    _, q = att.forward(idx.numpy())
    for b in range(att.store.n_layer):
        want = trace.attn[b][:, -1].numpy()
        assert np.allclose(att.store.ffn(b, rows), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
        assert np.allclose(q[b].numpy(), want, atol=1e-5)
    with pytest.raises(StoreError, match="another model or corpus"):
        open_store(ws.store_dir, engine_spec := StoreSpec(**{**ws.spec.__dict__, "activation": "ffn"}))
    assert open_store(engine.store.path, engine_spec).size == engine.store.size
