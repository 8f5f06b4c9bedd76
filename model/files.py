"""Writing files so that a crash never leaves half of one, and hashing them: the one helper the
model's checkpoints and the store's manifests share."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` beside ``path`` and rename it into place (fsync first unless ``sync=False``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj, sync: bool = True) -> None:
    """``obj`` as indented JSON (with a final newline), written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode(), sync=sync)
