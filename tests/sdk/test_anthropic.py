"""The official Anthropic Python SDK against a running Drawbridge (`/v1/messages`).

Started by tests/openai_sdk.rs with DRAWBRIDGE_BASE_URL and DRAWBRIDGE_API_KEY set; the client
is the stock SDK with only base_url and the key changed (retries off so errors surface at once).
The mock agent behind it is steered by directives in the prompt (see test_tools.py): it echoes
the prompt by default, `thought` makes it reason first, `call` makes it call the client's tools.
"""

import json
import os
import urllib.request

import anthropic
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"]
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]
ADMIN_TOKEN = os.environ["DRAWBRIDGE_ADMIN_TOKEN"]

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def client():
    return anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def ask_weather():
    directive = '[[mock:call tool=get_weather args={"city":"Paris"}]]'
    return [{"role": "user", "content": "What is it like in Paris? " + directive}]


def test_messages_create(client):
    message = client.messages.create(
        model="kiro",
        max_tokens=256,
        messages=[{"role": "user", "content": "Hello from the Anthropic SDK"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "kiro"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello from the Anthropic SDK"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_messages_stream(client):
    with client.messages.stream(
        model="kiro",
        max_tokens=256,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "stream these words back"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    # With a system prompt the agent gets a transcript; the echo ends with the user's turn.
    assert text.endswith("stream these words back"), text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_bearer_token_as_claude_code_sends_it():
    # ANTHROPIC_AUTH_TOKEN: the key as `Authorization: Bearer`, no x-api-key.
    bearer = anthropic.Anthropic(
        base_url=BASE_URL, auth_token=API_KEY, max_retries=0, timeout=30
    )
    message = bearer.messages.create(
        model="kiro", max_tokens=16, messages=[{"role": "user", "content": "bearer ok"}]
    )
    assert message.content[0].text == "bearer ok"


def test_count_tokens(client):
    short = client.messages.count_tokens(
        model="kiro", messages=[{"role": "user", "content": "Hi"}]
    )
    long = client.messages.count_tokens(
        model="kiro",
        system="You are a careful assistant.",
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Hi " * 300}],
    )
    assert short.input_tokens >= 1
    assert long.input_tokens > short.input_tokens + 200


def tool_use_of(message):
    (block,) = [b for b in message.content if b.type == "tool_use"]
    return block


def test_tools_round_trip(client):
    messages = ask_weather()
    first = client.messages.create(model="kiro", max_tokens=256, messages=messages, tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = tool_use_of(first)
    assert call.name == "get_weather"
    assert call.input == {"city": "Paris"}

    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}],
        },
    ]
    second = client.messages.create(
        model="kiro", max_tokens=256, messages=messages, tools=[WEATHER]
    )
    assert second.stop_reason == "end_turn"
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "get_weather: sunny, 21 C"


def test_streamed_tools_round_trip(client):
    messages = ask_weather()
    with client.messages.stream(
        model="kiro", max_tokens=256, messages=messages, tools=[WEATHER]
    ) as stream:
        events = [event.type for event in stream]
        first = stream.get_final_message()
    assert "input_json" in events
    assert first.stop_reason == "tool_use"
    call = tool_use_of(first)
    assert call.input == {"city": "Paris"}

    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": [{"type": "text", "text": "rain"}],
                }
            ],
        },
    ]
    with client.messages.stream(
        model="kiro", max_tokens=256, messages=messages, tools=[WEATHER]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "get_weather: rain"
    assert final.stop_reason == "end_turn"


def test_thinking_blocks(client):
    messages = [{"role": "user", "content": "Think first [[mock:thought n=2]]"}]
    with client.messages.stream(model="kiro", max_tokens=256, messages=messages) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "thinking...thinking..."
    assert final.content[0].signature == ""
    assert final.content[1].text == "done"

    whole = client.messages.create(model="kiro", max_tokens=256, messages=messages)
    assert [b.type for b in whole.content] == ["thinking", "text"]

    # The thinking block sent back is transcript only: the follow-up is accepted.
    messages += [
        {"role": "assistant", "content": final.content},
        {"role": "user", "content": "and now?"},
    ]
    again = client.messages.create(model="kiro", max_tokens=256, messages=messages)
    assert again.stop_reason == "end_turn"
    assert again.content[-1].type == "text" and again.content[-1].text


def test_a_bad_key_is_an_authentication_error():
    bad = anthropic.Anthropic(base_url=BASE_URL, api_key="sk-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        bad.messages.create(
            model="kiro", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 401
    assert raised.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="kiro", messages=[{"role": "user", "content": "hi"}])


def test_a_missing_max_tokens_is_a_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.post(
            "/v1/messages",
            body={"model": "kiro", "messages": [{"role": "user", "content": "hi"}]},
            cast_to=object,
        )
    assert raised.value.status_code == 400
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in raised.value.body["error"]["message"]


def test_an_invalid_body_is_a_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model="kiro",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "not_offered"},
        )
    assert "not_offered" in raised.value.body["error"]["message"]


def test_a_rate_limited_key_raises_rate_limit_error_with_retry_after():
    request = urllib.request.Request(
        BASE_URL + "/admin/keys",
        method="POST",
        data=json.dumps({"name": "anthropic-limited", "rpm": 1}).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        key = json.loads(reply.read())["key"]
    limited = anthropic.Anthropic(base_url=BASE_URL, api_key=key, max_retries=0, timeout=30)
    ask = {"model": "kiro", "max_tokens": 16, "messages": [{"role": "user", "content": "one"}]}
    limited.messages.create(**ask)
    with pytest.raises(anthropic.RateLimitError) as raised:
        limited.messages.create(**ask)
    assert raised.value.status_code == 429
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(
            model="no-such-model", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 404
    assert raised.value.body["error"]["type"] == "not_found_error"


def claude_code_tools():
    """A dozen tools shaped like Claude Code's: input schemas, some deferred, one cached."""
    names = [
        "Task", "Bash", "Glob", "Grep", "Read", "Edit",
        "Write", "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput",
    ]
    tools = []
    for i, name in enumerate(names):
        tool = {
            "name": name,
            "description": f"The {name} tool.",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"arg": {"type": "string", "description": "What to act on"}},
                "required": ["arg"],
                "additionalProperties": False,
            },
        }
        if i >= 8:
            tool["defer_loading"] = True
        tools.append(tool)
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    return tools


def test_claude_code_request_replay(client):
    stream = client.beta.messages.create(
        model="kiro",
        max_tokens=32000,
        stream=True,
        betas=[
            "claude-code-20250219",
            "interleaved-thinking-2025-05-14",
            "context-management-2025-06-27",
            "fine-grained-tool-streaming-2025-05-14",
        ],
        system=[
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {
                "type": "text",
                "text": "You are an interactive CLI tool that helps users.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        messages=[
            {"role": "system", "content": "The working directory is /repo."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>Be careful.</system-reminder>"},
                    {
                        "type": "text",
                        "text": "replay from claude code",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            },
        ],
        tools=claude_code_tools(),
        metadata={"user_id": json.dumps({"device_id": "d-1", "session_id": "s-1"})},
        extra_body={
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "medium"},
        },
        extra_headers={"anthropic-version": "2023-06-01", "x-app": "cli"},
    )
    kinds, text, stop = [], "", None
    for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
        if event.type == "message_delta":
            stop = event.delta.stop_reason
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert text.endswith("replay from claude code"), text
    assert stop == "end_turn"
