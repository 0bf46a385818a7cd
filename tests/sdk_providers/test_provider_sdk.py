"""The official OpenAI Python SDK through Drawbridge's HTTP provider accounts.

Started by tests/providers.rs with DRAWBRIDGE_BASE_URL and DRAWBRIDGE_API_KEY set, against a
`drawbridge` whose only accounts are `kind: openai` accounts on mock-provider upstreams (which
echo "You said: <the last user message>" and count tokens in words). The client is the stock
SDK with only base_url and api_key changed (retries off so errors surface at once).
"""

import json
import os

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]
MODEL = "gpt-test"


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_models_list_has_the_provider_model(client):
    assert MODEL in [model.id for model in client.models.list()]


def test_chat_completion(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "You said: Hello from the SDK"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == 4
    assert reply.usage.completion_tokens == 6


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream these words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "You said: stream these words"
    assert finish == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 5)


def test_stream_helper_accepts_the_stream(client):
    with client.beta.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "helper"}]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "You said: helper"


def test_parameters_reach_the_upstream(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "[[provider:echo_request]]"}],
        temperature=0.5,
        top_p=0.8,
        seed=3,
        stop=["END"],
        max_completion_tokens=40,
        response_format={"type": "json_object"},
    )
    sent = json.loads(reply.choices[0].message.content)
    assert sent["temperature"] == 0.5
    assert sent["top_p"] == 0.8
    assert sent["seed"] == 3
    assert sent["stop"] == ["END"]
    assert sent["max_tokens"] == 40
    assert sent["response_format"] == {"type": "json_object"}


def test_tool_calls(client):
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": 'weather [[provider:tool args={"city":"Rome"}]]'}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}


def test_an_upstream_400_is_a_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "[[provider:status code=400]]"}],
        )
    assert "temperature" in str(refused.value)
