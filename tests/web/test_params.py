"""The routes' typed parameters (app/web/params.py) and their refusals (app/web/errors.py): every bad
parameter on every route is a 400 in plain words, JSON under /api/ and inline on pages, and /docs
documents every parameter and answer."""
import pytest

from app.web.errors import plain_message, sentence

PYDANTIC_WORDING = ("Input should", "Field required", "valid integer")


@pytest.mark.parametrize("path, params, message", [
    ("/blocks/abc", {"prompt": "the king "}, "block must be a whole number, not 'abc'"),
    ("/blocks/1", {"prompt": "the king ", "page": "0"}, "page must be between 1 and 1000000"),
    ("/blocks/1", {"prompt": "the king ", "page": "1.5"}, "page must be a whole number, not '1.5'"),
    ("/blocks/1", {"prompt": "the king ", "per_page": "x"}, "per_page must be a whole number, not 'x'"),
    ("/blocks/1", {"prompt": "the king ", "per_page": "0"}, "per_page must be between 1 and 500"),
    ("/blocks/1", {"prompt": "the king ", "sort": "x"}, "sort must be one of similarity, frequency, not 'x'"),
    ("/corpus", {}, "pos is required: a position in the corpus, a whole number from 0"),
    ("/corpus", {"pos": "x"}, "pos must be a whole number, not 'x'"),
    ("/corpus", {"pos": "3", "width": "y"}, "width must be a whole number, not 'y'"),
    ("/corpus", {"pos": "3", "width": "0"}, "width must be between 1 and 5000"),
    ("/corpus", {"pos": "9" * 5000}, "pos must be a whole number of at most a few digits, not '99999999999999999999'"),
    ("/corpus", {"pos": "3", "from": "https://elsewhere.example/"},
     "from must be a page of this explorer: '/' or '/blocks/N' with its query string, e.g. /blocks/3?prompt=the+king"),
])
def test_every_bad_parameter_is_a_400_in_plain_words(client, path, params, message):
    for prefix in ("/api", ""):
        r = client.get(prefix + path, params=params)
        assert r.status_code == 400, (prefix + path, r.status_code)
        text = r.json()["detail"] if prefix else r.text
        if prefix:
            assert text == message
        else:
            assert 'class="error"' in text and message.replace("'", "&#39;") in text
        assert not any(w in text for w in PYDANTIC_WORDING)


def test_sentences_for_each_kind_of_error():
    assert sentence({"type": "missing", "loc": ("query", "x")}) == "x is required: give it in the URL"
    assert sentence({"type": "greater_than_equal", "loc": ("query", "n"), "ctx": {"ge": 2}}) == "n must be at least 2"
    assert sentence({"type": "less_than_equal", "loc": ("query", "n"), "ctx": {"le": 9}}) == "n must be at most 9"
    assert sentence({"type": "literal_error", "loc": ("query", "sort"), "input": "up"}) == \
        "sort must be one of similarity, frequency, not 'up'"
    assert sentence({"type": "string_type", "loc": ("query", "q"), "msg": "Input should be a valid string"}) == \
        "q is not accepted: input should be a valid string"
    two = [{"type": "int_parsing", "loc": ("query", "page"), "input": "a"}] * 2 + \
        [{"type": "int_parsing", "loc": ("path", "block"), "input": "b"}]
    assert plain_message(two) == "page must be a whole number, not 'a'; block must be a whole number, not 'b'"


def test_the_docs_describe_every_parameter_and_answer(client):
    schema = client.get("/openapi.json").json()
    assert "422" not in str({p: {m: op["responses"] for m, op in ops.items()} for p, ops in schema["paths"].items()})
    for path, ops in schema["paths"].items():
        for p in ops["get"].get("parameters", []):
            assert p.get("description"), (path, p["name"])
        if path.startswith("/api/"):
            content = ops["get"]["responses"]["200"]["content"]["application/json"]
            assert content["schema"]["$ref"].startswith("#/components/schemas/"), path
            if ops["get"].get("parameters"):
                assert "400" in ops["get"]["responses"], path
    names = {p["name"] for p in schema["paths"]["/api/blocks/{block}"]["get"]["parameters"]}
    assert names == {"block", "prompt", "mode", "thresholds", "k", "weights", "blend", "exclude_self", "show",
                     "backend", "exact", "store", "drop_attn", "drop_ffn", "on", "page", "per_page", "sort"}


def test_the_answer_models_describe_the_answers(client):
    from app.web.schemas import BlockPage, CorpusStretch, Info, QueryAnswer

    q = client.get("/api/query", params={"prompt": "the king "}).json()
    b = client.get("/api/blocks/4", params={"prompt": "the king ", "per_page": "3"}).json()
    c = client.get("/api/corpus", params={"pos": "5", "width": "20"}).json()
    i = client.get("/api/info").json()
    for model, data in ((QueryAnswer, q), (BlockPage, b), (CorpusStretch, c), (Info, i)):
        model.model_validate(data)
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert required <= set(data), (model.__name__, required - set(data))


def test_the_report_model_describes_the_report(report_client):
    from app.web.schemas import Report

    data = report_client.get("/api/report").json()
    Report.model_validate(data)
    assert {n for n, f in Report.model_fields.items() if f.is_required()} <= set(data)
    r = report_client.get("/api/report", params={"mode": "nope"})
    assert r.status_code == 400 and r.json() == {"detail": "mode must be one of reference, not 'nope'"}
