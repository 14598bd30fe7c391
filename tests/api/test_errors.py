"""Every error leaves as the OpenAI envelope, with the right status; never a 422 or an HTML page."""

from __future__ import annotations

from tuneforge.api.errors import INVALID_JSON
from tuneforge.errors import RateLimited


def assert_envelope(r, status: int, *, param=None, code=None, type="invalid_request_error"):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert r.headers["x-request-id"]
    return body["error"]["message"]


def test_query_validation_is_400_naming_the_param(app_client, auth_headers):
    msg = assert_envelope(app_client.get("/v1/files?limit=abc", headers=auth_headers), 400, param="limit")
    assert "limit" in msg
    assert_envelope(app_client.get("/v1/files?limit=10001", headers=auth_headers), 400, param="limit")
    assert_envelope(app_client.get("/v1/files?order=sideways", headers=auth_headers), 400, param="order")


def test_body_validation_is_400(app_client, auth_headers):
    r = app_client.post("/v1/uploads", headers=auth_headers, json={"filename": "a.jsonl"})
    assert assert_envelope(r, 400, param="purpose") == "Missing required parameter: 'purpose'."
    r = app_client.post(
        "/v1/uploads",
        headers=auth_headers,
        json={"filename": "a.jsonl", "purpose": "fine-tune", "bytes": "many", "mime_type": "text/jsonl"},
    )
    assert_envelope(r, 400, param="bytes")
    r = app_client.post("/v1/uploads", headers=auth_headers, json=[1, 2])
    assert_envelope(r, 400)


def test_malformed_json_is_400(app_client, auth_headers):
    r = app_client.post(
        "/v1/uploads", content=b'{"filename": ', headers={**auth_headers, "content-type": "application/json"}
    )
    assert assert_envelope(r, 400) == INVALID_JSON


def test_unknown_route_and_wrong_method(app_client, auth_headers):
    assert "Invalid URL" in assert_envelope(app_client.get("/v1/nope", headers=auth_headers), 404)
    assert_envelope(app_client.get("/nope"), 404)
    assert_envelope(app_client.put("/v1/files", headers=auth_headers), 405)


def test_auth_failures(app_client, auth_headers):
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer sk-tf-wrongwrongwrongwrongwrong"},
    ):
        msg = assert_envelope(app_client.get("/v1/files", headers=headers), 401, code="invalid_api_key")
        assert "wrongwrongwrong" not in msg  # the key is redacted in the message
    scheme_case = {"Authorization": auth_headers["Authorization"].replace("Bearer", "bearer")}
    assert app_client.get("/v1/files", headers=scheme_case).status_code == 200


def test_unexpected_exception_is_a_500_envelope_with_request_id(app_client, caplog):
    def boom():
        raise RuntimeError("kaboom")

    app_client.app.add_api_route("/v1/boom", boom)
    r = app_client.get("/v1/boom", headers={"x-request-id": "req_trace42"})
    assert_envelope(r, 500, type="server_error")
    assert "kaboom" not in r.text  # internals are logged, not sent
    assert r.headers["x-request-id"] == "req_trace42"
    assert any("req_trace42" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_rate_limited_carries_retry_after(app_client):
    def limited():
        raise RateLimited("Slow down.", retry_after=7)

    app_client.app.add_api_route("/v1/limited", limited)
    r = app_client.get("/v1/limited")
    assert_envelope(r, 429, code="rate_limit_exceeded", type="requests")
    assert r.headers["retry-after"] == "7"


def test_request_id_echo_and_generation(app_client):
    assert app_client.get("/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = app_client.get("/health").headers["x-request-id"]
    assert generated.startswith("req_")
    # a hostile id (header injection, huge) is replaced, not echoed
    assert (
        app_client.get("/health", headers={"x-request-id": "a b" * 100})
        .headers["x-request-id"]
        .startswith("req_")
    )


def test_nul_characters_are_a_client_mistake(app_client, auth_headers):
    # PostgreSQL text cannot hold NUL: without a check these reach the database and fail there.
    for method, path in [
        ("GET", "/v1/files?after=a%00b"),
        ("GET", "/v1/files/file-%00"),
        ("GET", "/v1/files?purpose=%00"),
        ("POST", "/v1/uploads/up%00/cancel"),
    ]:
        assert_envelope(app_client.request(method, path, headers=auth_headers), 400)
    r = app_client.post(
        "/v1/uploads",
        headers=auth_headers,
        json={"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 1, "mime_type": "text/\u0000"},
    )
    assert_envelope(r, 400, param="mime_type")
    up = app_client.post(
        "/v1/uploads",
        headers=auth_headers,
        json={"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 1, "mime_type": "text/jsonl"},
    ).json()
    r = app_client.post(
        f"/v1/uploads/{up['id']}/complete", headers=auth_headers, json={"part_ids": ["part_\u0000"]}
    )
    assert_envelope(r, 400, param="part_ids.0")


def test_a_base_url_without_v1_gets_a_hint(app_client, auth_headers):
    for method, path in (
        ("GET", "/files"),
        ("POST", "/fine_tuning/jobs"),
        ("POST", "/chat/completions"),
        ("GET", "/fine_tuning/jobs/ftjob-x"),
    ):
        r = app_client.request(method, path, headers=auth_headers, json={})
        msg = assert_envelope(r, 404)
        assert f"Did you mean /v1{path}?" in msg and 'base_url="http://testserver/v1"' in msg
    # a path that is not under /v1 either gets no hint
    assert "Did you mean" not in assert_envelope(app_client.get("/nope", headers=auth_headers), 404)
