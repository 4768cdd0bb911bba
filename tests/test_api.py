import asyncio
import json
import logging
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.classifier import ExtortionClassifier
from model.data_format import Message
from serve.api import MAX_TEXT_CHARS, MicroBatcher, RateLimiter, create_api

SECRET_TEXT = "不给钱就差评秘密内容"


@pytest.fixture(scope="module")
def classifier(tiny_model_dir):
    return ExtortionClassifier.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture
def client(classifier):
    return TestClient(create_api(classifier, api_keys=["k1", "k2"]))


AUTH = {"Authorization": "Bearer k2"}


def test_classify_returns_label_and_probabilities_per_message(client, classifier):
    body = {"messages": [{"text": SECRET_TEXT}, {"text": "钱呢？", "context": [{"role": "buyer", "text": "给200就删差评"}], "id": "x"}]}
    response = client.post("/v1/classify", json=body, headers=AUTH)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == [None, "x"]
    expected = classifier.predict(body["messages"])
    assert [r["label"] for r in results] == [p.label for p in expected]
    assert results[1]["probabilities"]["extortion"] == pytest.approx(expected[1].probabilities["extortion"], abs=1e-5)
    assert "evidence" not in results[0]


def test_role_aliases_are_the_batch_readers(client):
    aliased = {
        "messages": [
            {"text": "钱呢？", "role": "买家", "context": [{"role": "客服", "text": "亲，在的"}, {"role": " Customer ", "text": "给200"}]}
        ]
    }
    plain = {
        "messages": [
            {"text": "钱呢？", "role": "buyer", "context": [{"role": "seller", "text": "亲，在的"}, {"role": "buyer", "text": "给200"}]}
        ]
    }
    results = [client.post("/v1/classify", json=body, headers=AUTH).json()["results"][0] for body in (aliased, plain)]
    assert results[0] == results[1]


def test_evidence_scores_words_and_finds_demand_details(client):
    body = {"messages": [{"text": "不给两千块就差评，转支付宝"}], "evidence": True}
    evidence = client.post("/v1/classify", json=body, headers=AUTH).json()["results"][0]["evidence"]
    assert "".join(w["word"] for w in evidence["words"]) == "不给两千块就差评，转支付宝"
    assert evidence["amounts"] == [2000.0]
    assert "支付宝" in evidence["channels"] and "bad reviews" in evidence["threats"] and evidence["identifiers"] == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "k1"}])
def test_api_key_required_when_configured(client, headers):
    assert client.post("/v1/classify", json={"messages": [{"text": "在吗"}]}, headers=headers).status_code == 401


def test_no_keys_configured_means_open(classifier):
    client = TestClient(create_api(classifier))
    assert client.post("/v1/classify", json={"messages": [{"text": "在吗"}]}).status_code == 200


def test_too_many_messages_or_too_large_body_is_413(client):
    many = {"messages": [{"text": "在吗"}] * 65}
    assert client.post("/v1/classify", json=many, headers=AUTH).status_code == 413
    large = json.dumps({"messages": [{"text": "在" * 400_000}]}).encode()  # unicode escapes make it over 1 MB
    response = client.post("/v1/classify", content=large, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", "not valid JSON"),
        (b'{"msgs": []}', "messages: Field required"),
        (b'{"messages": []}', "at least 1 item"),
        (b"[1, 2]", "body: Input should be"),
        (b'{"messages": [{"txt": "a"}]}', "messages[0].text: Field required"),
        (b'{"messages": [{"text": "  "}]}', "messages[0].text: String should match pattern"),
        (b'{"messages": [{"text": "\\u001d"}]}', "messages[0].text"),
        (b'{"messages": [{"text": 5}]}', "messages[0].text: Input should be a valid string"),
        (b'{"messages": [{"text": "a", "context": [{"role": "boss", "text": "b"}]}]}', "messages[0].context[0].role"),
        (b'{"messages": [{"text": "a"}], "evidence": "yes"}', "evidence: Input should be a valid boolean"),
        (b'{"messages": [{"text": "a", "context": {"role": "buyer"}}]}', "messages[0].context"),
    ],
)
def test_malformed_body_is_422_with_the_reason(client, body, reason):
    response = client.post("/v1/classify", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422 and reason in response.json()["error"]


def test_long_message_is_cut_and_flagged(client):
    text = "质量问题" * 600
    assert len(text) > MAX_TEXT_CHARS
    result = client.post("/v1/classify", json={"messages": [{"text": text}, {"text": "在吗"}]}, headers=AUTH).json()["results"]
    assert result[0]["truncated"] is True and result[1]["truncated"] is False


def test_healthz_and_metrics(client):
    assert client.get("/healthz").json()["status"] == "ok"
    client.post("/v1/classify", json={"messages": [{"text": "在吗"}]}, headers=AUTH)
    client.post("/v1/classify", json={"messages": [{"text": "在吗"}]})
    text = client.get("/metrics").text
    assert 'extortion_guard_requests_total{endpoint="/v1/classify",status="200"} 1.0' in text
    assert 'extortion_guard_requests_total{endpoint="/v1/classify",status="401"} 1.0' in text
    assert "extortion_guard_request_seconds_bucket" in text and "extortion_guard_labels_total" in text


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(classifier):
    app = create_api(classifier, max_wait=0.05)
    texts = [f"第{i}次，不给钱就差评" if i % 2 else f"在吗{i}" for i in range(24)]

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*(http.post("/v1/classify", json={"messages": [{"text": t, "id": t}]}) for t in texts))

    responses = asyncio.run(fire())
    assert [r.json()["results"][0]["id"] for r in responses] == texts
    expected = classifier.predict_proba(texts)[:, 0]
    got = [r.json()["results"][0]["probabilities"]["extortion"] for r in responses]
    assert got == pytest.approx(list(expected), abs=1e-5)
    calls = app.state.metrics.registry.get_sample_value("extortion_guard_batch_messages_count")
    assert app.state.metrics.registry.get_sample_value("extortion_guard_batch_messages_sum") == len(texts)
    assert calls < len(texts)  # some requests shared a model call


def test_a_lone_request_does_not_wait_for_the_micro_batch_window(classifier):
    app = create_api(classifier, max_wait=60)

    async def one():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.wait_for(http.post("/v1/classify", json={"messages": [{"text": "在吗"}]}), 20)

    assert asyncio.run(one()).status_code == 200


def test_a_request_cancelled_during_its_model_call_does_not_stop_the_batcher():
    release = threading.Event()

    class SlowScorer:
        def score(self, messages):
            release.wait(5)
            return np.full((len(messages), 4), 0.25), [False] * len(messages)

    batcher = MicroBatcher(SlowScorer(), max_wait=0)

    async def cancel_one_of_two_then_ask_again():
        first = asyncio.ensure_future(batcher.score([Message("甲")]))
        second = asyncio.ensure_future(batcher.score([Message("乙"), Message("丙")]))
        await asyncio.sleep(0.2)  # both are now inside one model call
        first.cancel()
        release.set()
        answered = await asyncio.wait_for(second, 5)
        later = await asyncio.wait_for(batcher.score([Message("丁")]), 5)
        return first.cancelled(), answered, later

    cancelled, (probs, truncated), (later_probs, _) = asyncio.run(cancel_one_of_two_then_ask_again())
    assert cancelled and probs.shape == (2, 4) and truncated == [False, False]
    assert later_probs.shape == (1, 4)


def test_openapi_documents_the_request_and_response_bodies(client):
    schema = client.get("/v1/openapi.json").json()
    operation = schema["paths"]["/v1/classify"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ClassifyRequest"}
    components = schema["components"]["schemas"]
    assert {"ClassifyRequest", "MessageIn", "TurnIn", "ClassifyResponse", "Result", "Problem"} <= set(components)
    assert components["TurnIn"]["properties"]["role"]["enum"] == ["buyer", "seller"]
    assert set(operation["responses"]) == {"200", "401", "413", "422", "429", "503"}


def test_rate_limiter_refills_at_its_rate_and_keeps_clients_apart():
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(4)] == [0, 0, 0, pytest.approx(0.5)]
    assert limiter.retry_after("b") == 0  # another key has its own bucket
    now[0] = 0.5  # one token back
    assert limiter.retry_after("a") == 0 and limiter.retry_after("a") == pytest.approx(0.5)
    assert all(RateLimiter(rate=0).retry_after("a") == 0 for _ in range(100))


def test_a_key_over_its_rate_gets_429_with_retry_after(classifier):
    client = TestClient(create_api(classifier, api_keys=["k1", "k2"], rate_per_key=0.01, burst_per_key=2))
    body = {"messages": [{"text": "在吗"}]}
    statuses = [client.post("/v1/classify", json=body, headers=AUTH).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.post("/v1/classify", json=body, headers=AUTH)
    assert int(limited.headers["Retry-After"]) >= 1 and "requests a second" in limited.json()["error"]
    assert client.post("/v1/classify", json=body, headers={"Authorization": "Bearer k1"}).status_code == 200


def test_requests_over_the_in_flight_cap_get_503_and_the_rest_are_answered(classifier):
    release = threading.Event()

    class Slow:
        version = classifier.version

        def score(self, messages):
            release.wait(5)
            return classifier.score(messages)

    app = create_api(Slow(), max_in_flight=1)

    async def two_at_once():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            first = asyncio.ensure_future(http.post("/v1/classify", json={"messages": [{"text": "在吗"}]}))
            await asyncio.sleep(0.2)
            second = await http.post("/v1/classify", json={"messages": [{"text": "好的"}]})
            release.set()
            return await first, second

    first, second = asyncio.run(two_at_once())
    assert first.status_code == 200
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"


def test_message_text_never_reaches_the_logs(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/classify", json={"messages": [{"text": SECRET_TEXT}], "evidence": True}, headers=AUTH)
        client.post("/v1/classify", content=b'{"messages": [{"text": "' + SECRET_TEXT.encode() + b'", "context": 5}]}', headers=AUTH)
    assert SECRET_TEXT not in caplog.text


def test_limits_come_from_the_settings_file(tmp_path):
    from serve.settings import load_settings

    (tmp_path / "serve.toml").write_text("requests_per_second_per_key = 5\nburst_per_key = 3\nmax_in_flight = 9\n")
    settings = load_settings(tmp_path / "serve.toml", environ={})
    assert (settings.requests_per_second_per_key, settings.burst_per_key, settings.max_in_flight) == (5.0, 3, 9)
    assert load_settings(None, environ={}).requests_per_second_per_key == 0  # no limit unless asked


def test_login_is_refused_for_a_while_after_repeated_failures():
    from serve.settings import LoginThrottle, ServeSettings, hash_password

    settings = ServeSettings(users={"alice": hash_password("correct horse")})
    now = [0.0]
    login = LoginThrottle(settings.check_login, attempts=3, lockout=60, clock=lambda: now[0])
    assert login("alice", "correct horse")
    assert not any(login("alice", f"guess {i}") for i in range(3))
    assert not login("alice", "correct horse")  # locked, even with the right password
    assert login("bob", "x") is False and not login("alice", "correct horse")
    now[0] = 61
    assert login("alice", "correct horse")


def test_the_apps_old_scored_uploads_are_removed(tmp_path, monkeypatch):
    import os
    import tempfile

    from serve.app import UPLOAD_PREFIX, remove_old_uploads

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old, fresh, other = tmp_path / f"{UPLOAD_PREFIX}old", tmp_path / f"{UPLOAD_PREFIX}new", tmp_path / "someone-elses"
    for folder in (old, fresh, other):
        folder.mkdir()
        (folder / "predictions.csv").write_text("x")
    os.utime(old, (1_000, 1_000))
    os.utime(other, (1_000, 1_000))
    assert remove_old_uploads(now=1_000 + 7_200) == 1
    assert not old.exists() and fresh.exists() and other.exists()
