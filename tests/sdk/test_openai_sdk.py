"""The official OpenAI Python SDK against a running Drawbridge.

Started by tests/openai_sdk.rs with DRAWBRIDGE_BASE_URL and DRAWBRIDGE_API_KEY set; the client
is the stock SDK with only base_url and api_key changed (retries off so errors surface at once).
"""

import os

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_models_list(client):
    ids = [model.id for model in client.models.list()]
    assert "kiro" in ids


def test_chat_completion(client):
    reply = client.chat.completions.create(
        model="kiro", messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Hello from the SDK"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens > 0


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="kiro",
        messages=[{"role": "user", "content": "stream these words back"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, ids = "", None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "stream these words back"
    assert finish == "stop"
    assert usage is not None and usage.total_tokens > 0
    assert len(ids) == 1


def test_stream_helper_accepts_the_stream(client):
    # The SDK's higher-level helper checks role and finish_reason on its own.
    with client.beta.chat.completions.stream(
        model="kiro", messages=[{"role": "user", "content": "helper check"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "helper check"


def test_developer_role_and_max_completion_tokens(client):
    reply = client.chat.completions.create(
        model="kiro",
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": "hi"},
        ],
        max_completion_tokens=16,
    )
    assert reply.choices[0].message.content == "[Developer]\nBe terse.\n\n[User]\nhi"


def test_bad_key_raises_authentication_error():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="db-not-a-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.code == "model_not_found"


def test_bad_request_raises_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="kiro", messages=[])
    assert err.value.param == "messages"


def test_reasoning_streams_as_reasoning_content(client):
    # The agent's thought chunks (Kiro's `agent_thought_chunk`) stream beside the text as
    # `delta.reasoning_content`, which the SDK keeps as an extra field of the delta.
    stream = client.chat.completions.create(
        model="kiro",
        messages=[{"role": "user", "content": "[[mock:thought]] think first"}],
        stream=True,
    )
    reasoning, text = "", ""
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            text += delta.content or ""
    assert reasoning == "thinking..."
    assert text == "done"


def test_reasoning_in_a_whole_answer(client):
    reply = client.chat.completions.create(
        model="kiro",
        messages=[{"role": "user", "content": "[[mock:thought]] think first"}],
    )
    message = reply.choices[0].message
    assert message.content == "done"
    assert getattr(message, "reasoning_content", None) == "thinking..."


def test_usage_says_how_tokens_were_counted(client):
    # `usage.drawbridge` is an extension the SDK keeps as an extra field.
    reply = client.chat.completions.create(
        model="kiro",
        messages=[
            {
                "role": "user",
                "content": "[[mock:echo input_tokens=7 output_tokens=5 credits=0.25]] hi",
            }
        ],
    )
    assert reply.usage.prompt_tokens == 7
    assert reply.usage.completion_tokens == 5
    details = reply.usage.model_extra["drawbridge"]
    assert details["tokens"] == "reported"
    assert details["credits"] == 0.25

    reply = client.chat.completions.create(
        model="kiro", messages=[{"role": "user", "content": "estimate me"}]
    )
    assert reply.usage.model_extra["drawbridge"]["tokens"] == "estimated"
