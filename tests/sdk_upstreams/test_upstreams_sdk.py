"""The official OpenAI Python SDK through Drawbridge's Anthropic and Gemini provider accounts.

Started by tests/providers_upstreams.rs with DRAWBRIDGE_BASE_URL and DRAWBRIDGE_API_KEY set,
against a `drawbridge` whose accounts are a `kind: anthropic` account serving `claude-test`
and a `kind: gemini` account serving `gemini-test`, on mock-provider upstreams speaking those
providers' wire formats (they echo "You said: <the last user message>" and count tokens in
words). The client is the stock SDK with only base_url and api_key changed.
"""

import json
import os

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]
MODELS = ["claude-test", "gemini-test"]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


@pytest.mark.parametrize("model", MODELS)
def test_chat_completion(client, model):
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello from the SDK"}]
    )
    assert reply.choices[0].message.content == "You said: Hello from the SDK"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 6)


@pytest.mark.parametrize("model", MODELS)
def test_streaming_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model,
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
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 5)


@pytest.mark.parametrize("model", MODELS)
def test_tool_call_round_trip(client, model):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    question = {"role": "user", "content": 'weather [[provider:tool args={"city":"Rome"}]]'}
    reply = client.chat.completions.create(model=model, messages=[question], tools=tools)
    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Rome"}
    answer = client.chat.completions.create(
        model=model,
        tools=tools,
        messages=[
            question,
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "21 degrees"},
            {"role": "user", "content": "thank you"},
        ],
    )
    assert answer.choices[0].message.content == "You said: thank you"
