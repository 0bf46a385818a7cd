"""What the gateway adds, seen through the official clients: a rate-limited key raises the
SDK's RateLimitError with a Retry-After it can use, and /metrics is read by Prometheus's own
OpenMetrics parser (prometheus_client) into the series the product page promises.

Started by tests/openai_sdk.rs with DRAWBRIDGE_BASE_URL, DRAWBRIDGE_API_KEY and
DRAWBRIDGE_ADMIN_TOKEN set.
"""

import json
import os
import time
import urllib.request

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

BASE = os.environ["DRAWBRIDGE_BASE_URL"]
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]
ADMIN_TOKEN = os.environ["DRAWBRIDGE_ADMIN_TOKEN"]


def admin(method, path, body=None):
    request = urllib.request.Request(
        BASE + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_a_rate_limited_key_raises_rate_limit_error_with_retry_after():
    key = admin("POST", "/admin/keys", {"name": "sdk-limited", "rpm": 2})["key"]
    client = openai.OpenAI(base_url=BASE + "/v1", api_key=key, max_retries=0, timeout=30)
    reply = client.chat.completions.with_raw_response.create(
        model="kiro", messages=[{"role": "user", "content": "one"}]
    )
    assert reply.headers["x-ratelimit-limit"] == "2"
    assert reply.headers["x-ratelimit-remaining"] == "1"
    client.models.list()
    try:
        client.models.list()
    except openai.RateLimitError as error:
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        headers = error.response.headers
        retry_after = int(headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert int(headers["retry-after-ms"]) <= retry_after * 1000
        assert headers["x-ratelimit-remaining"] == "0"
        assert int(headers["x-ratelimit-reset"]) >= int(time.time())
    else:
        raise AssertionError("the third request in a minute was not limited")


def test_metrics_parse_into_the_seed_series():
    client = openai.OpenAI(base_url=BASE + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
    client.chat.completions.create(model="kiro", messages=[{"role": "user", "content": "metrics"}])
    stream = client.chat.completions.create(
        model="kiro", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    for _ in stream:
        pass
    with urllib.request.urlopen(BASE + "/metrics", timeout=30) as reply:
        assert reply.headers["content-type"].startswith("application/openmetrics-text")
        text = reply.read().decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}

    requests = families["drawbridge_requests"]
    assert requests.type == "counter"
    success = [
        s for s in requests.samples
        if s.name == "drawbridge_requests_total"
        and s.labels == {"model": "kiro", "status": "success", "dialect": "openai"}
    ]
    assert success and success[0].value >= 2, requests.samples

    duration = families["drawbridge_request_duration_seconds"]
    assert duration.type == "histogram"
    bounds = {s.labels["le"] for s in duration.samples if s.name.endswith("_bucket")}
    for le in ("5.0", "30.0", "60.0", "+Inf"):
        assert le in bounds, bounds
    count = [s for s in duration.samples if s.name == "drawbridge_request_duration_seconds_count"]
    assert count and count[0].value >= 2

    first_token = families["drawbridge_time_to_first_token_seconds"]
    assert first_token.type == "histogram"
    tokens = families["drawbridge_tokens"]
    assert {s.labels["kind"] for s in tokens.samples} == {"prompt", "completion"}

    for gauge in (
        "drawbridge_account_slots",
        "drawbridge_account_busy",
        "drawbridge_account_queue_depth",
        "drawbridge_account_breaker_state",
    ):
        family = families[gauge]
        assert family.type == "gauge"
        assert {s.labels["account"] for s in family.samples} == {"acct-1", "acct-2"}, gauge
    assert "drawbridge_rejections" in families
    for family in families.values():
        for sample in family.samples:
            assert API_KEY not in str(sample.labels)
