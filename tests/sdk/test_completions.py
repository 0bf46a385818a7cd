"""Legacy completions (`/v1/completions`) through the official OpenAI Python SDK.

Started by tests/openai_sdk.rs against both deployment shapes; the mock agent echoes the prompt.
"""

import os

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_completion(client):
    reply = client.completions.create(model="kiro", prompt="Say this is a test", max_tokens=64)
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    assert reply.choices[0].text == "Say this is a test"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens > 0


def test_completion_echo_and_a_list_of_one(client):
    reply = client.completions.create(model="kiro", prompt=["echo me"], echo=True)
    assert reply.choices[0].text == "echo meecho me"


def test_streamed_completion_with_usage(client):
    stream = client.completions.create(
        model="kiro",
        prompt="stream these words back",
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, ids = "", None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "text_completion"
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "stream these words back"
    assert finish == "stop"
    assert usage is not None and usage.total_tokens > 0
    assert len(ids) == 1


def test_bad_prompts_are_400s_naming_prompt(client):
    for prompt in (["one", "two"], [1, 2, 3], ""):
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model="kiro", prompt=prompt)
        assert raised.value.param == "prompt"
        assert raised.value.status_code == 400


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi")


def test_bad_key_is_401():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="db-not-a-key", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="kiro", prompt="hi")
