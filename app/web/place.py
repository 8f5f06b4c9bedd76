"""Where in the text a corpus position is: its line and column (any text), and for the default
corpus (eight cleaned plays, app/corpus.py) the play, act, scene and speaker, read from the text's
own headings in one pass and kept (:class:`TextIndex`). Also the corpus page's links: earlier and
later stretches, back to the page it came from (``from=``), and the string as a prompt."""
from __future__ import annotations

import re
import threading
from bisect import bisect_right
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import numpy as np
from markupsafe import Markup, escape

from ..corpus import DEFAULT_CORPUS

# Headings of the cleaned Gutenberg plays: a title line, a blank line and "by William Shakespeare";
# "ACT I." (The Tempest's acts have no numeral: they are counted); "SCENE II. Where." or "Scene II."
# (counted once an act has begun, so a cast list's "SCENE. Elsinore." is not one); and a speech's
# heading: a short capitalised name ending in a full stop, alone on its line after a blank line,
# with the speech on the next line ("Ham.", "LADY MACBETH.").
_ACT = re.compile(r"(?:ACT|Act)(?:\s+([IVXLC]+|\d+))?\.?\s*$")
_SCENE = re.compile(r"(?:SCENE|Scene)(?:\s+([IVXLC]+|\d+))?\.?(?:\s*-*\s*)(.*)$")
_SPEAKER = re.compile(r"[A-Z][A-Za-z' .]{0,30}\.")
_BY = "by william shakespeare"


def roman(k: int) -> str:
    out = ""
    for v, s in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
                 (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while k >= v:
            out, k = out + s, k - v
    return out


class TextIndex:
    """Line starts of any text; with ``plays``, where each play, act, scene and speech begins."""

    def __init__(self, text: str, plays: bool = False):
        self.length = len(text)
        lines = text.split("\n")
        starts = np.zeros(len(lines), dtype=np.int64)
        if len(lines) > 1:
            starts[1:] = np.cumsum([len(x) + 1 for x in lines[:-1]])
        self.line_starts = starts
        # Each kind: sorted start offsets and their labels.
        self.marks: dict[str, tuple[list[int], list[str]]] = {k: ([], []) for k in ("play", "act", "scene", "speaker")}
        if plays:
            self._headings(lines, starts.tolist())

    def _add(self, kind: str, at: int, label: str) -> None:
        self.marks[kind][0].append(at)
        self.marks[kind][1].append(label)

    def _headings(self, lines: list[str], starts: list[int]) -> None:
        acts = scenes = 0
        in_act = False
        n = len(lines)
        for i, line in enumerate(lines):
            if not line:
                continue
            if i + 2 < n and not lines[i + 1] and lines[i + 2].strip().lower().startswith(_BY):
                self._add("play", starts[i], line.strip())
                acts, scenes, in_act = 0, 0, False
                continue
            if (m := _ACT.match(line)) and self.marks["play"][0]:
                acts, scenes, in_act = acts + 1, 0, True
                self._add("act", starts[i], "Act " + (m.group(1) or roman(acts)))
                continue
            if in_act and (m := _SCENE.match(line)):
                scenes += 1
                where = m.group(2).strip().rstrip(".")
                self._add("scene", starts[i], "Scene " + (m.group(1) or roman(scenes)) + (f" ({where})" if where else ""))
                continue
            if i and not lines[i - 1] and i + 1 < n and lines[i + 1] and _SPEAKER.fullmatch(line):
                self._add("speaker", starts[i], line[:-1].strip())

    def line(self, pos: int) -> tuple[int, int]:
        """(line, column) of ``pos``, both from 1."""
        k = int(np.searchsorted(self.line_starts, pos, side="right"))
        return k, pos - int(self.line_starts[k - 1]) + 1

    def _last(self, kind: str, pos: int) -> tuple[int, str | None]:
        at, labels = self.marks[kind]
        k = bisect_right(at, pos) - 1
        return (at[k], labels[k]) if k >= 0 else (-1, None)

    def place(self, pos: int) -> dict | None:
        """{"play", "act", "scene", "speaker"} at ``pos`` (None where the text does not say, e.g.
        before a play's first act), or None for a text without plays."""
        if not self.marks["play"][0]:
            return None
        p_at, play = self._last("play", pos)
        a_at, act = self._last("act", pos)
        s_at, scene = self._last("scene", pos)
        w_at, who = self._last("speaker", pos)
        if a_at < p_at:
            a_at, act = p_at, None
        if s_at < a_at:
            s_at, scene = a_at, None
        if w_at < max(s_at, a_at, p_at):
            who = None
        return {"play": play, "act": act, "scene": scene, "speaker": who}


_BUILDING = threading.Lock()


def text_index(ex) -> TextIndex:
    """The explorer's corpus index, built on first use (one pass over the text; about a tenth of a
    second on the default corpus) and kept."""
    idx = getattr(ex, "_text_index", None)
    if idx is None:
        with _BUILDING:
            idx = getattr(ex, "_text_index", None)
            if idx is None:
                idx = TextIndex(ex.corpus_text(), plays=ex.about.get("corpus") == DEFAULT_CORPUS)
                ex._text_index = idx
    return idx


# --- from=: the page a stretch was opened from ----------------------------------------------------
_FROM_PATH = re.compile(r"/(?:blocks/\d{1,4})?")
_BLOCK_ONLY = ("page", "per_page", "sort")


def read_from(value: str, keys: set[str]) -> tuple[str, dict] | None:
    """``from=`` as (path, its query parameters): the main page or a block page of this explorer
    (a path from the explorer's root), only the parameters those pages take. None if it is not."""
    if not value:
        return "", {}
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.fragment or not _FROM_PATH.fullmatch(parts.path):
        return None
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=False) if k in keys | set(_BLOCK_ONLY)}
    return parts.path, params


def here_for(path: str, qs: str) -> str:
    """A page's ``from=`` value, quoted for a URL: its path (from the explorer's root) and query."""
    return quote(f"{path}?{qs}" if qs else path, safe="")


def links(base: str, pos: int, width: int, length: int, n: int, match: str, came: tuple[str, dict]) -> dict:
    """The corpus page's links: earlier / later stretches (a whole view away), back to the page it
    came from, and the string at ``pos`` as the main page's prompt (with the settings it came with)."""
    path, params = came
    keep = f"&width={width}" if width != 1500 else ""
    if path:
        keep += "&from=" + quote(f"{path}?{urlencode(params)}" if params else path, safe="")
    step = 2 * width + n
    corpus = lambda p: f"{base}/corpus?pos={p}{keep}#here"
    settings = {k: v for k, v in params.items() if k not in _BLOCK_ONLY and k != "prompt"}
    return {
        "earlier": corpus(max(0, pos - step)) if pos > 0 else None,
        "later": corpus(min(length - n, pos + step)) if pos + n < length else None,
        "back": (base + path + ("?" + urlencode(params) if params else "")) if path else None,
        "back_to": ("block " + path.rsplit("/", 1)[1]) if path.startswith("/blocks/") else ("the prompt" if path else None),
        "use_as_prompt": base + "/?" + urlencode({"prompt": match, **settings}),
    }


def numbered(before: str, match: str, after: str, first_line: int) -> Markup:
    """The stretch as HTML with a line number at the start of each line (drawn by CSS from
    data-n, so copying the text leaves them out) and the string at the position marked."""
    k = first_line

    def lined(s: str) -> str:
        nonlocal k
        pieces = s.split("\n")
        out = [str(escape(pieces[0]))]
        for p in pieces[1:]:
            k += 1
            out.append(f'\n<span class="ln" data-n="{k}" aria-hidden="true"></span>{escape(p)}')
        return "".join(out)

    head = f'<span class="ln" data-n="{first_line}" aria-hidden="true"></span>'
    return Markup(head + lined(before) + '<mark id="here">' + lined(match) + "</mark>" + lined(after))
