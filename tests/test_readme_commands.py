"""The README's two commands, run as written (with a micro model and corpus so CI stays fast)."""
import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO


def readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_names_the_two_commands_and_ci_runs_the_second():
    assert readme_commands() == ["make start", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert [l for l in ci.splitlines() if l.strip() and not l.startswith(("#", "set ", "cd "))] == ["make test"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_start_sets_up_builds_and_serves(micro_model_dir, micro_corpus, tmp_path):
    import json
    import time
    import urllib.request

    venv = Path(sys.prefix)  # the environment running the tests: its setup stamp makes setup a no-op
    port = free_port()
    env = {**os.environ, "FFNLENS_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "start.log", "w+")
    p = subprocess.Popen(["make", "-s", "start", f"VENV={venv}", f"MODEL={micro_model_dir}",
                          f"CORPUS={micro_corpus}", f"PORT={port}"],
                         cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 600, None
        while time.time() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/query?prompt=the+king+",
                                            timeout=10) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        log.seek(0)
        out = log.read()
        assert body is not None, out
        assert body["backend"] == "bound" and len(body["blocks"]) == 6
        assert "store micro" in out and f"serving http://127.0.0.1:{port}" in out
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert "ffnlens" in r.read().decode()
        assert list((tmp_path / "stores").glob("micro-*/manifest.json"))
    finally:
        import signal

        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
