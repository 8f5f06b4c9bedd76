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


def test_make_start_sets_up_builds_and_answers(micro_model_dir, micro_corpus, tmp_path):
    venv = Path(sys.prefix)  # the environment running the tests: its setup stamp makes setup a no-op
    env = {**os.environ, "FFNLENS_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(["make", "-s", "start", f"VENV={venv}", f"MODEL={micro_model_dir}",
                        f"CORPUS={micro_corpus}", "PROMPT=the king\\n"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Hellinger distance" in p.stdout and "block 5" in p.stdout
    assert "store micro" in p.stderr  # the store build's progress bar
    assert list((tmp_path / "stores").glob("micro-*/manifest.json"))
