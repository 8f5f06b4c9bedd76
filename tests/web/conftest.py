"""The web tests' shared fixtures: a small real report, a client serving it, and the explorer on
loopback (one each per session: the fuzzing, the safety checks, the browser and the load tests share
them)."""
import threading
import time

import pytest

from ..test_readme_commands import free_port


@pytest.fixture(scope="session")
def reports(engine, tmp_path_factory):
    """A small real report (16 prompts), as `ffnlens eval --report` writes it."""
    from app.approx import QuerySettings
    from app.study.baselines.unigram import Unigram
    from app.study.prompts import reference_prompts
    from app.study.report import build_report
    from app.study.storage import write_report

    out = tmp_path_factory.mktemp("reports")
    rows = reference_prompts(engine.store, 16, seed=3)
    report, figs = build_report(engine, rows, QuerySettings(),
                                {"unigram": Unigram(engine.store.corpus_ids, engine.store.counts.vocab_size)},
                                "reference", sweep_prompts=8, fit_steps=10, single_blocks=False)
    write_report(out / "reference", report, figs)
    return out


@pytest.fixture(scope="session")
def report_client(workspace, engine, reports):
    from fastapi.testclient import TestClient

    from app.web import create_app
    from app.workspace import about

    return TestClient(create_app(engine, about(workspace, engine), reports=reports))


@pytest.fixture(scope="session")
def live(workspace, engine, reports):
    """The explorer on loopback (uvicorn in a thread), with its default gate, and its app."""
    import uvicorn

    from app.web import create_app
    from app.workspace import about

    app = create_app(engine, about(workspace, engine), reports=reports)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield port, app
    srv.should_exit = True
    t.join(timeout=10)
