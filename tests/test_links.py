"""The settings <-> URL codec (app/links.py): encode is the study's permalink, decode checks every
parameter with a message that says what to fix, and the two leave out the same defaults."""
import ast
import itertools
import subprocess
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from app.approx import QueryError, QuerySettings
from app.links import DEFAULTS, ORDER, canonical, decode, encode, encode_items

from .conftest import REPO

BLANK = {"prompt": "", "mode": "threshold", "thresholds": "", "k": "200", "weights": "", "blend": "raw",
         "exclude_self": "", "show": "10", "backend": "", "exact": "", "store": ""}
DEFAULTS6 = QuerySettings(thresholds=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4], weights=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


def _settings():
    for mode, k, ths, ws, blend, ex in itertools.product(
            ("threshold", "topk"), (200, 1, 50), (None, DEFAULTS6.thresholds, [0.5, 0.25, 1 / 3, -1.0, 1.0, 0.0]),
            (None, DEFAULTS6.weights, [0.01, 0.01, 0.1, 1.5, 6, 0.01]), ("raw", "normalised"), (False, True)):
        yield QuerySettings(mode=mode, k=k, thresholds=ths, weights=ws, blend=blend, exclude_self=ex)


# The report's permalink before the codec existed, kept as the oracle the codec must equal.
def _num_list(vals) -> str:
    """Numbers as the URL writes them: exact reprs, comma-separated."""
    return ",".join(repr(float(v)) for v in vals)


def _same(a, b) -> bool:
    """Both given, of one length and equal within 1e-12."""
    return a is not None and b is not None and len(a) == len(b) and \
        all(abs(float(x) - float(y)) <= 1e-12 for x, y in zip(a, b))


def old_permalink(prompt: str, settings: QuerySettings | None = None, base_url: str = "/",
              defaults: QuerySettings | None = None, backend: str | None = None) -> str:
    """The explorer's URL for ``prompt`` under ``settings``: only parameters that differ from the
    explorer's defaults are written (mode, thresholds, k, weights, blend, exclude_self=1, backend;
    thresholds and weights are left out when None or equal to ``defaults``' resolved values)."""
    s = settings or QuerySettings()
    items = {"prompt": prompt}
    if s.mode != "threshold":
        items["mode"] = s.mode
    if s.thresholds is not None and not (defaults is not None and _same(s.thresholds, defaults.thresholds)):
        items["thresholds"] = _num_list(s.thresholds)
    if s.weights is not None and not (defaults is not None and _same(s.weights, defaults.weights)):
        items["weights"] = _num_list(s.weights)
    if s.k != 200:
        items["k"] = str(int(s.k))
    if s.blend != "raw":
        items["blend"] = s.blend
    if s.exclude_self:
        items["exclude_self"] = "1"
    if backend:
        items["backend"] = backend
    sep = "&" if "?" in base_url else "?"
    return base_url + sep + urlencode(items)


def test_encode_is_the_reports_permalink():
    permalink = old_permalink
    n = 0
    for s in _settings():
        for prompt, base, defaults, backend in itertools.product(
                ("the king ", "", "To be, or &not?\n#é"), ("/", "http://host:8000/", "/m/x/?a=1"),
                (None, DEFAULTS6), (None, "", "exact", "ivf")):
            assert encode(prompt, s, base, defaults, backend) == permalink(prompt, s, base, defaults, backend)
            n += 1
    assert encode("abc") == permalink("abc") == "/?prompt=abc"
    assert n > 5000


@pytest.mark.parametrize("s", list(_settings())[::7])
def test_decode_reads_back_what_encode_writes(s):
    url = encode("the king ", s, "/", DEFAULTS6, backend="exact")
    items = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    vp = decode({**BLANK, **items})
    assert vp.raw == items  # the same items, in the same order: one rule for what is left out
    assert vp.prompt == "the king " and vp.backend == "exact" and vp.store is None
    got, want = vp.settings, s
    assert (got.mode, got.k, got.blend, got.exclude_self) == (want.mode, want.k, want.blend, want.exclude_self)
    for name in ("thresholds", "weights"):
        written = getattr(want, name) is not None and getattr(want, name) != getattr(DEFAULTS6, name)
        assert getattr(got, name) == (getattr(want, name) if written else None)  # exact float round trip


def test_defaults_are_left_out_in_both_directions():
    vp = decode({**BLANK, "prompt": "ab", "store": "pool", "k": "0200", "exclude_self": "no"})
    assert vp.raw == {"prompt": "ab"} and vp.settings == QuerySettings() and vp.store == "pool"
    assert decode(BLANK).raw == {} and vp.query_string(page=2, sort=None) == "prompt=ab&page=2"
    assert encode_items("ab", QuerySettings()) == {"prompt": "ab"}
    assert canonical(DEFAULTS) == {} and list(canonical({n: 7 for n in ORDER})) == list(ORDER)
    full = decode({**BLANK, "prompt": "ab", "mode": "topk", "thresholds": " reference ", "weights": "1,2",
                   "k": "7", "show": "3", "blend": "normalised", "exclude_self": "on", "exact": "1",
                   "store": "context16"})
    assert full.raw == {"prompt": "ab", "mode": "topk", "thresholds": "reference", "weights": "1,2", "k": "7",
                        "show": "3", "blend": "normalised", "exclude_self": "1", "backend": "exact",
                        "store": "context16"}
    # "reference" stays a name until the engine resolves it against the model's depth (issue 16)
    assert full.settings.thresholds == "reference" and full.settings.show == 3
    assert encode_items("ab", full.settings)["thresholds"] == "reference"


@pytest.mark.parametrize("params, message", [
    ({"prompt": "x" * 1001}, "the prompt has 1001 characters; at most 1000 are accepted"),
    ({"mode": "best"}, "mode must be 'threshold' or 'topk', not 'best'"),
    ({"thresholds": "a,b"}, "thresholds must be comma-separated numbers, e.g. 0.99,0.99,0.98,0.98,0.98,0.9"),
    ({"weights": "1,inf"}, "weights must be finite numbers (no NaN or infinity)"),
    ({"k": "many"}, "k and show must be whole numbers"),
    ({"show": "1.5"}, "k and show must be whole numbers"),
    ({"show": "101"}, "show must be between 0 and 100"),
    ({"blend": "mean"}, "blend must be 'raw' or 'normalised', not 'mean'"),
    ({"exclude_self": "maybe"}, "exclude_self must be 1 or 0, not 'maybe'"),
    ({"exact": "2"}, "exact must be 1 or 0, not '2'"),
    ({"exact": "1", "backend": "ivf"}, "exact=1 asks for the full scan, backend='ivf' for another: give one of them"),
    ({"backend": "annoy"}, "backend must be one of bound, exact, ivf, not 'annoy'"),
    ({"store": "../etc"}, "store must be a store's name such as 'pool' or 'context256', not '../etc'"),
])
def test_decode_says_what_to_fix(params, message):
    with pytest.raises(QueryError) as e:
        decode({**BLANK, "prompt": "the king ", **params})
    assert str(e.value) == message


def test_the_codec_is_below_the_web():
    tree = ast.parse((REPO / "app" / "links.py").read_text())
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.split(".")[0] in ("fastapi", "starlette", "web") or m.startswith(".web") for m in modules)
    code = "import sys, app.links; assert not [m for m in sys.modules if m.startswith(('fastapi', 'app.web'))]"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
