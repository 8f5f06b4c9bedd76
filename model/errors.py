"""The one base class of every error a user can cause (a bad file, prompt, setting or store).

The CLI turns these, and only these, into exit code 2 with a one-line message, and the web into a
400 with that message; anything else is a bug and shows its traceback. It subclasses ValueError so
that callers which already catch a bad value keep working."""
from __future__ import annotations


class FfnlensError(ValueError):
    """Something the user can fix; the message says what and how."""
