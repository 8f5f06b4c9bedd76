"""Where ffnlens keeps its files and which device it uses: one place, read from the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Settings:
    # Stores, training runs and trained models live here (FFNLENS_HOME; default: ./var).
    home: Path = field(default_factory=lambda: Path(os.environ.get("FFNLENS_HOME", REPO / "var")))
    # "auto" (CUDA when torch sees it), "cpu" or "cuda" (FFNLENS_DEVICE).
    device: str = field(default_factory=lambda: os.environ.get("FFNLENS_DEVICE", "auto"))
    # The model the explorer and the CLI open when none is named (FFNLENS_MODEL).
    model: str = field(default_factory=lambda: os.environ.get("FFNLENS_MODEL", "tiny"))

    @property
    def stores(self) -> Path:
        return self.home / "stores"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def models(self) -> Path:
        return self.home / "models"
