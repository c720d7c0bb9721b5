"""The REST API on a state directory written by real code paths (apply on the in-memory runtime,
the EventLog, the ScalerStore): each answer is what the CLI's view gives, bad input is a 4xx
naming the field, mutations need the token and, refused, change nothing."""

from __future__ import annotations

import json
import re

from enova.observe.scaler import ScalerStore
from enova.plan.render import render_json
from enova.status import build_status
from enova.spec.loader import load_specs

from .conftest import AUTH, TOKEN, deployment_doc

HARDENING = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


def test_deployments_list_is_the_status_view_with_spec_summaries(app_world):
    client = app_world.client()
    answer = client.get("/api/v1/deployments")
    assert answer.status_code == 200
    body = answer.json()
    w = app_world.world
    view = build_status(w.store, w.runtime, load_specs(w.specs_dir), clock=w.clock).to_dict()
    assert [d["name"] for d in body["deployments"]] == ["alpha", "beta"]
    for got, want in zip(body["deployments"], view["deployments"]):
        assert got["sync"] == want["sync"] and got["health"] == want["health"]
        assert got["replicas"] == want["replicas"] and got["config_hash"] == want["config_hash"]
        assert [r["id"] for r in got["replica_details"]] == [r["id"] for r in want["replica_details"]]
        assert {r["port"] for r in got["replica_details"]} == {r.port for r in w.store.replicas(got["name"])}
    beta = body["deployments"][1]
    assert beta["spec"]["source"] == "specs" and beta["spec"]["replicas"] == 2
    assert beta["spec"]["model"] == "builtin:smollm2-135m-instruct" and beta["spec"]["engine_args"] == {"max_num_seqs": 16}
    assert body["specs"] == str(w.specs_dir)
    assert all(r["health"] == "healthy" and r["state"] == "ready" for r in beta["replica_details"])


def test_one_deployment_and_an_unknown_one_is_404(app_world):
    client = app_world.client()
    alpha = client.get("/api/v1/deployments/alpha")
    assert alpha.status_code == 200 and alpha.json()["name"] == "alpha"
    missing = client.get("/api/v1/deployments/gamma")
    assert missing.status_code == 404 and "gamma" in missing.json()["detail"]


def test_a_deployment_left_out_of_the_specs_shows_its_applied_spec_and_out_of_sync(app_world):
    w = app_world.world
    w.write(deployment_doc("alpha"))  # beta leaves the specs (still running)
    beta = app_world.client().get("/api/v1/deployments/beta").json()
    assert beta["spec"]["source"] == "applied" and beta["spec"]["replicas"] == 2
    assert beta["sync"]["status"] == "OutOfSync"


def test_plan_is_what_diff_shows_and_409_without_specs(app_world):
    w = app_world.world
    w.write(deployment_doc("alpha", replicas=3), deployment_doc("beta", replicas=2))
    answer = app_world.client().get("/api/v1/plan")
    assert answer.status_code == 200
    got = answer.json()
    want = json.loads(render_json(w.plan()))
    assert {k: got[k] for k in want} == want
    assert got["in_sync"] is False and got["summary"]["scale"] == 1 and got["blocked"] == []
    none = app_world.client(specs=None).get("/api/v1/plan")
    assert none.status_code == 409 and "no specs" in none.json()["detail"]


def test_plan_of_invalid_specs_is_409_naming_the_error(app_world):
    (app_world.world.specs_dir / "specs.yaml").write_text(
        "apiVersion: enova/v1\nkind: Deployment\nmetadata: {name: alpha}\nspec: {replicas: -1, model: builtin:x}\n")
    answer = app_world.client().get("/api/v1/plan")
    assert answer.status_code == 409
    assert "specs.yaml:4" in answer.json()["detail"]
    listed = app_world.client().get("/api/v1/deployments")
    assert listed.status_code == 200 and "specs.yaml:4" in listed.json()["spec_error"]


def test_events_page_back_with_the_cursor_newest_last(app_world):
    log, clock = app_world.events, app_world.world.clock
    for i in range(7):
        log.record("Normal", "Scaled", "deployment/alpha" if i % 2 == 0 else "deployment/beta", f"step {i}")
        if i != 3:  # events 3 and 4 share a time: the cursor tells them apart
            clock.advance(1.0)
    client = app_world.client()
    seen, before = [], None
    while True:
        page = client.get("/api/v1/events", params={"limit": 3, **({"before": before} if before else {})}).json()
        seen = [e["message"] for e in page["events"]] + seen
        before = page["next_before"]
        if before is None:
            break
    assert seen == [f"step {i}" for i in range(7)]
    only_beta = client.get("/api/v1/events", params={"deployment": "beta"}).json()
    assert [e["message"] for e in only_beta["events"]] == ["step 1", "step 3", "step 5"]
    assert only_beta["next_before"] is None
    newest = client.get("/api/v1/events", params={"limit": 2}).json()
    assert [e["message"] for e in newest["events"]] == ["step 5", "step 6"]


def test_events_bad_parameters_are_422_naming_them(app_world):
    client = app_world.client()
    for params, field in (({"limit": 0}, "limit"), ({"before": "yesterday"}, "before"),
                          ({"deployment": "Not A Name"}, "deployment")):
        answer = client.get("/api/v1/events", params=params)
        assert answer.status_code == 422, params
        assert answer.json()["detail"][0]["loc"] == ["query", field]
        assert field in answer.json()["message"]


def test_event_stream_ends_after_its_limit_and_resumes_after_last_event_id(app_world):
    log = app_world.events
    first = log.record("Normal", "Created", "deployment/alpha", "one")
    app_world.world.clock.advance(1)
    log.record("Warning", "ApplyFailed", "deployment/alpha", "two")
    client = app_world.client(stream_seconds=0.3)
    cursor = f"{first.time!r}:0"
    with client.stream("GET", "/api/v1/events/stream", headers={"Last-Event-ID": cursor}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [d["message"] for d in data] == ["two"]  # only what came after the cursor


def test_autoscaler_rows_are_scale_status_json_and_unknown_is_404(app_world):
    store = ScalerStore(app_world.settings.state_dir)
    store.write("beta", {"target": 2, "policy": "concurrency", "start_seconds": 31.5, "updated_at": 1700000000.0,
                         "last_decision": {"at": 1700000000.0, "target": 2, "previous": 1, "reason": "in flight 9 > 8",
                                           "numbers": {"in_flight": 9}},
                         "signals": {"at": 1700000000.0, "rps": 3.0, "in_flight": 9.0, "queued": 0.0, "held": 0.0,
                                     "ready": 2, "engine_running": None, "engine_waiting": None,
                                     "kv_cache_usage": None}, "last_up": 1700000000.0})
    client = app_world.client()
    rows = client.get("/api/v1/autoscaler").json()
    assert len(rows) == 1
    row = rows[0]
    assert row["deployment"] == "beta" and row["target"] == 2 and row["ready"] == 2 and row["starting"] == 0
    assert row["last_decision"]["reason"] == "in flight 9 > 8" and row["signals"]["in_flight"] == 9.0
    assert row["state"]["last_up"] == 1700000000.0
    assert client.get("/api/v1/autoscaler/beta").json() == row
    missing = client.get("/api/v1/autoscaler/alpha")
    assert missing.status_code == 404 and "alpha" in missing.json()["detail"]


def test_recommend_answers_the_recommendation_and_a_refusal_is_409_with_the_arithmetic(app_world):
    client = app_world.client()
    ok = client.post("/api/v1/recommend", json={"model": "builtin:smollm2-135m-instruct", "gpu": "L4"})
    assert ok.status_code == 200
    assert ok.json()["device"] == "gpu" and ok.json()["args"]["max_model_len"] > 0
    by_name = client.post("/api/v1/recommend", json={"model": "alpha", "gpu_memory": "24GiB"})
    assert by_name.status_code == 200 and by_name.json()["model"].startswith("builtin:smollm2-135m-instruct")
    refused = client.post("/api/v1/recommend", json={"model": "builtin:smollm2-135m-instruct",
                                                     "gpu_memory": "0.2GiB"})
    assert refused.status_code == 409
    assert refused.json()["refused"] is True and "GiB" in refused.json()["arithmetic"]


def test_recommend_bad_input_is_422_naming_the_field(app_world):
    client = app_world.client()
    cases = [({"model": "/etc"}, "model"), ({"model": "../x"}, "model"), ({"model": "no spaces"}, "model"),
             ({"model": "builtin:smollm2-135m-instruct", "gpu": "L4", "gpu_memory": "24GiB"}, "gpu_memory"),
             ({"model": "builtin:smollm2-135m-instruct", "gpus": 0}, "gpus"),
             ({"model": "builtin:smollm2-135m-instruct", "capacity_run": "nope"}, "capacity_run"),
             ({"model": "builtin:smollm2-135m-instruct", "bogus": 1}, "bogus")]
    for body, field in cases:
        answer = client.post("/api/v1/recommend", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"][0]["loc"][-1] == field, (body, answer.json())


def test_mutations_without_the_token_are_refused_and_change_nothing(app_world):
    client = app_world.client()
    runs = app_world.settings.state_dir / "app" / "runs"
    bodies = [("/api/v1/runs", {"deployment": "alpha", "rate": 1, "duration": 1}), ("/api/v1/runs", b"{not json"),
              ("/api/v1/runs/x/cancel", None), ("/api/v1/reload", None)]
    for headers, code in (({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "Basic " + TOKEN}, 401),
                          ({"Authorization": TOKEN}, 401)):
        for path, body in bodies:
            kwargs = {"content": body, "headers": {**headers, "Content-Type": "application/json"}} \
                if isinstance(body, bytes) else {"json": body, "headers": headers}
            answer = client.post(path, **kwargs)
            assert answer.status_code == code, (path, headers, answer.text)
            if code == 401:
                assert answer.headers["www-authenticate"] == "Bearer"
    assert not runs.exists()
    assert [r.id for r in app_world.world.store.replicas("alpha")] == list(app_world.world.records("alpha"))


def test_a_run_against_a_deployment_without_gateway_is_409_and_an_unknown_one_404(app_world):
    client = app_world.client()
    no_gateway = client.post("/api/v1/runs", json={"deployment": "alpha", "rate": 1}, headers=AUTH)
    assert no_gateway.status_code == 409 and "gateway" in no_gateway.json()["detail"]
    unknown = client.post("/api/v1/runs", json={"deployment": "gamma", "rate": 1}, headers=AUTH)
    assert unknown.status_code == 404 and "gamma" in unknown.json()["detail"]
    profile = client.post("/api/v1/runs", json={"profile": "nope"}, headers=AUTH)
    assert profile.status_code == 404 and "LoadProfile" in profile.json()["detail"]
    missing_rate = client.post("/api/v1/runs", json={"deployment": "alpha"}, headers=AUTH)
    assert missing_rate.status_code == 422 and missing_rate.json()["detail"][0]["loc"] == ["body", "rate"]
    bad_duration = client.post("/api/v1/runs", json={"deployment": "alpha", "rate": 1, "duration": "soon"},
                               headers=AUTH)
    assert bad_duration.status_code == 422 and bad_duration.json()["detail"][0]["loc"] == ["body", "duration"]
    assert not (app_world.settings.state_dir / "app" / "runs").exists()


def test_reload_without_a_reconciler_is_409(app_world):
    answer = app_world.client().post("/api/v1/reload", headers=AUTH)
    assert answer.status_code == 409 and "no reconciler" in answer.json()["detail"]


def test_runs_unknown_id_is_404_and_ids_never_become_paths(app_world):
    client = app_world.client()
    for run_id in ("nope", "..", "%2e%2e", "..%2f..%2fetc"):
        for suffix in ("", "/result", "/report"):
            assert client.get(f"/api/v1/runs/{run_id}{suffix}").status_code == 404
    assert client.get("/api/v1/runs").json() == {"runs": []}


def test_every_response_carries_the_hardening_headers(app_world):
    client = app_world.client()
    for path in ("/api/v1/deployments", "/api/v1/deployments/nope", "/nope", "/openapi.json", "/docs"):
        answer = client.get(path)
        for name, value in HARDENING.items():
            assert answer.headers[name] == value, (path, name)
        assert "content-security-policy" in answer.headers
    api = client.get("/api/v1/deployments")
    assert api.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in api.headers["content-security-policy"]


def test_a_foreign_host_header_is_refused_on_a_loopback_bind(app_world):
    client = app_world.client()
    answer = client.get("/api/v1/deployments", headers={"Host": "evil.example:8182"})
    assert answer.status_code == 400 and "evil.example" in answer.json()["detail"]
    assert client.get("/healthz", headers={"Host": "localhost:8182"}).status_code == 200


def test_reads_need_the_token_when_the_server_is_bound_beyond_loopback(app_world):
    client = app_world.client(reads_need_token=True, allowed_hosts=None)
    assert client.get("/api/v1/deployments").status_code == 401
    assert client.get("/api/v1/deployments", headers={"Authorization": "Bearer no"}).status_code == 403
    assert client.get("/api/v1/deployments", headers=AUTH).status_code == 200
    assert client.get("/healthz").status_code == 200
    doc = client.get("/openapi.json").json()
    assert doc["paths"]["/api/v1/deployments"]["get"]["security"] == [{"HTTPBearer": []}]


def test_openapi_marks_every_mutation_as_needing_the_token_and_docs_load_nothing_external(app_world):
    client = app_world.client()
    doc = client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "post" and path.endswith("/series"):
                continue  # the /instance page's chart data (enova.app.series) declares its own
            needs = bool(op.get("security"))
            assert needs == (method == "post" and path != "/api/v1/recommend"), (method, path)
    page = client.get("/docs")
    assert page.status_code == 200 and "/api/v1/runs/{run_id}/cancel" in page.text
    assert not re.search(r"(src|href)=\"?(https?:)?//", page.text)
    assert "<script" not in page.text
