"""Several models served side by side by one app: the first at /, the others under /m/{name}/."""
from fastapi.testclient import TestClient

from ..test_nanogpt import nanogpt_checkpoint


def test_two_models_in_one_app(tmp_path, workspace, engine, settings):
    from app.settings import Settings
    from app.web import create_app
    from app.workspace import about, build_index, open_engine, open_workspace

    ckpt, _, corpus, _, _ = nanogpt_checkpoint(tmp_path, True, False)
    other_settings = Settings(home=tmp_path / "home", device="cpu")
    ws2 = open_workspace(other_settings, model=f"nanogpt:{ckpt}", corpus=str(corpus))
    build_index(ws2, progress=False, calibration_prompts=16)
    eng2 = open_engine(ws2, progress=False)
    name2 = ws2.spec.model_name
    app = create_app(engine, about(workspace, engine),
                     models={name2: (eng2, about(ws2, eng2), None, {})})
    client = TestClient(app)

    first, second = client.get("/api/info").json(), client.get(f"/m/{name2}/api/info").json()
    assert first["model"] == workspace.spec.model_name and second["model"] == name2
    assert first["models"] == {first["model"]: "", name2: f"/m/{name2}"} == second["models"]
    assert first["pool_size"] != second["pool_size"] and second["store"] != first["store"]

    a = client.get("/api/query", params={"prompt": "the king "}).json()
    b = client.get(f"/m/{name2}/api/query", params={"prompt": "the king "}).json()
    assert a["model"] != b["model"]  # two different softmaxes
    assert a["store"]["path"] != b["store"]["path"]
    assert b["permalink"].startswith(f"/m/{name2}/?prompt=")

    page = client.get(f"/m/{name2}/", params={"prompt": "the king "})
    assert page.status_code == 200
    assert f'href="/m/{name2}/static/style.css"' in page.text and f'data-results="/m/{name2}/results"' in page.text
    assert f'href="/m/{name2}/blocks/0?' in page.text  # links stay inside the model's explorer
    assert f'<a href="/m/{name2}/" aria-current="page">{name2}</a>' in page.text  # the switcher
    assert client.get(f"/m/{name2}/static/style.css").status_code == 200
    assert client.get(f"/m/{name2}/blocks/1", params={"prompt": "the king "}).status_code == 200
    root = client.get("/", params={"prompt": "the king "})
    assert 'href="/blocks/0?' in root.text and f'href="/m/{name2}/"' in root.text
    assert client.get("/m/nope/api/info").status_code == 404


def test_report_permalinks_follow_the_model_they_are_served_under():
    from app.web.views import rebase_urls

    report = {"interesting": {"worst": [{"prompt": "a", "url": "/?prompt=a"}]}, "url": "https://x/",
              "rows": [{"url": "/?prompt=b&mode=topk"}]}
    rebase_urls(report, "/m/other")
    assert report["interesting"]["worst"][0]["url"] == "/m/other/?prompt=a"
    assert report["rows"][0]["url"] == "/m/other/?prompt=b&mode=topk" and report["url"] == "https://x/"
