"""Function calling through Drawbridge with the official OpenAI Python SDK.

The mock agent is a real MCP client of the worker's tool bridge: the `call` directive in the
user's message makes it call the listed tools over MCP; the call is held open while the client
runs the tool, and the agent's answer after the results is `NAME: RESULT` per call (a fresh
session answering from the transcript would say `result ID: RESULT` instead).
"""

import json
import os

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def ask(tools):
    names = ",".join(t["function"]["name"] for t in tools)
    directive = '[[mock:call tool=%s args={"city":"Paris"}]]' % names
    return [{"role": "user", "content": "What is it like in Paris? " + directive}]


def results_for(message, answers):
    """The assistant's tool-call message and one tool message per call, answered by name."""
    out = [message.model_dump(exclude_none=True)]
    for call in message.tool_calls:
        out.append(
            {"role": "tool", "tool_call_id": call.id, "content": answers[call.function.name]}
        )
    return out


def test_round_trip(client):
    messages = ask([WEATHER])
    first = client.chat.completions.create(model="kiro", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    messages += results_for(choice.message, {"get_weather": "sunny, 21 C"})
    second = client.chat.completions.create(model="kiro", messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "get_weather: sunny, 21 C"
    assert second.usage.total_tokens > 0


def test_streamed_round_trip(client):
    messages = ask([WEATHER])
    stream = client.chat.completions.create(
        model="kiro", messages=messages, tools=[WEATHER], stream=True
    )
    calls, finish = {}, None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = delta.id or entry["id"]
            if delta.function and delta.function.name:
                entry["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    call = calls[0]
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}

    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "rain"})
    stream = client.chat.completions.create(
        model="kiro", messages=messages, tools=[WEATHER], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "get_weather: rain"


def test_stream_helper_collects_tool_calls(client):
    # The SDK's helper assembles the tool-call deltas itself and checks the stream's shape.
    with client.beta.chat.completions.stream(
        model="kiro", messages=ask([WEATHER]), tools=[WEATHER]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}


def test_parallel_calls_end_one_answer(client):
    messages = ask([WEATHER, TIME])
    first = client.chat.completions.create(
        model="kiro", messages=messages, tools=[WEATHER, TIME]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    names = sorted(c.function.name for c in choice.message.tool_calls)
    assert names == ["get_time", "get_weather"]
    assert len({c.id for c in choice.message.tool_calls}) == 2

    messages += results_for(choice.message, {"get_weather": "sunny", "get_time": "noon"})
    second = client.chat.completions.create(
        model="kiro", messages=messages, tools=[WEATHER, TIME]
    )
    assert second.choices[0].message.content == "get_weather: sunny\nget_time: noon"


def test_tool_choice_none_offers_no_tools(client):
    reply = client.chat.completions.create(
        model="kiro", messages=ask([WEATHER]), tools=[WEATHER], tool_choice="none"
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == "no MCP server"


def test_tool_choice_required_is_asked_for_and_checked(client):
    # The agent is asked to call a tool; this one answers in text, which the usage says.
    reply = client.chat.completions.create(
        model="kiro",
        messages=[{"role": "user", "content": "just say hi"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    assert reply.choices[0].finish_reason == "stop"
    assert "call at least one" in reply.choices[0].message.content.lower()
    assert reply.usage.model_extra["drawbridge"]["tool_choice_unmet"] is True

    named = client.chat.completions.create(
        model="kiro",
        messages=ask([WEATHER]),
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert named.choices[0].finish_reason == "tool_calls"
    assert "tool_choice_unmet" not in (named.usage.model_extra.get("drawbridge") or {})


@pytest.mark.parametrize(
    "body, param",
    [
        ({"tools": "x"}, "tools"),
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "content": "orphan"},
                ]
            },
            "messages[1].tool_call_id",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "tool", "tool_call_id": "call_unknown", "content": "x"},
                ]
            },
            "messages[1].tool_call_id",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_bad_tool_input_is_a_400_naming_the_field(client, body, param):
    request = {"model": "kiro", "messages": [{"role": "user", "content": "hi"}]}
    request.update(body)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=request.pop("model"), messages=request.pop("messages"), extra_body=request
        )
    assert raised.value.status_code == 400
    assert raised.value.param == param, raised.value.body
