"""ffnlens: see how a small language model's feed-forward blocks predict its next character."""

__version__ = "0.1.0"
