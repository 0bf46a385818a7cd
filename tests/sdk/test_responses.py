"""The OpenAI Responses API (`client.responses`) through Drawbridge with the official Python SDK.

The mock agent echoes the prompt; directives in the user's text steer it (`[[mock:thought]]`
reasons first, `[[mock:call tool=...]]` calls the client's tools over the worker's bridge). A
conversation of several messages reaches the agent as one transcript, so an echo that holds an
earlier turn's text shows the turn was sent.
"""

import json
import os

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def test_create_with_string_input(client):
    response = client.responses.create(model="kiro", input="Hello from responses")
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == "kiro"
    assert [item.type for item in response.output] == ["message"]
    message = response.output[0]
    assert message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert response.output_text == "Hello from responses"
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )
    assert response.usage.output_tokens > 0


def test_instructions_come_first(client):
    response = client.responses.create(
        model="kiro", instructions="Be terse.", input="hi", temperature=0.5
    )
    assert response.instructions == "Be terse."
    assert response.temperature == 0.5
    text = response.output_text
    assert text.index("Be terse.") < text.index("hi"), text


def test_stream_events_in_order(client):
    events = list(
        client.responses.create(model="kiro", input="stream these words back", stream=True)
    )
    types = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) == len(types) - 8
    assert "".join(event.delta for event in deltas) == "stream these words back"
    item_id = events[2].item.id
    assert all(event.item_id == item_id for event in deltas)
    assert events[0].response.status == "in_progress"
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == "stream these words back"
    assert completed.id == events[0].response.id


def test_stream_helper_final_response(client):
    with client.responses.stream(model="kiro", input="helper check") as stream:
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "helper check"


def test_reasoning_becomes_a_reasoning_item(client):
    response = client.responses.create(model="kiro", input="[[mock:thought]] think first")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == "thinking..."
    assert response.output_text == "done"


def test_streamed_reasoning_through_the_helper(client):
    with client.responses.stream(model="kiro", input="[[mock:thought n=2]] think first") as stream:
        summary = "".join(
            event.delta
            for event in stream
            if event.type == "response.reasoning_summary_text.delta"
        )
        final = stream.get_final_response()
    assert summary == "thinking...thinking..."
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == summary
    assert final.output_text == "done"


def test_retrieve_and_chain(client):
    first = client.responses.create(model="kiro", input="My name is Alice.")
    got = client.responses.retrieve(first.id)
    assert got.id == first.id
    assert got.output_text == first.output_text == "My name is Alice."
    second = client.responses.create(
        model="kiro", input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert "My name is Alice." in second.output_text, second.output_text
    assert second.output_text.rstrip().endswith("What is my name?"), second.output_text


def test_tools_round_trip_with_previous_response_id(client):
    directive = '[[mock:call tool=get_weather args={"city":"Paris"}]]'
    first = client.responses.create(
        model="kiro", input="What is it like in Paris? " + directive, tools=[WEATHER]
    )
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    (call,) = calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id

    second = client.responses.create(
        model="kiro",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
        tools=[WEATHER],
    )
    assert second.status == "completed"
    assert second.output_text == "get_weather: sunny, 21 C"


def test_streamed_tool_call(client):
    directive = '[[mock:call tool=get_weather args={"city":"Oslo"}]]'
    events = list(
        client.responses.create(
            model="kiro", input="Weather? " + directive, tools=[WEATHER], stream=True
        )
    )
    types = [event.type for event in events]
    assert "response.function_call_arguments.done" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Oslo"}
    final = events[-1].response
    assert events[-1].type == "response.completed"
    (call,) = [item for item in final.output if item.type == "function_call"]
    # The whole conversation instead of a stored one: the tools bridge finds the call all the same.
    second = client.responses.create(
        model="kiro",
        store=False,
        input=[
            {"role": "user", "content": "Weather? " + directive},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "snow"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "get_weather: snow"


def test_store_false_cannot_be_chained_or_retrieved(client):
    response = client.responses.create(model="kiro", input="forget me", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(
            model="kiro", input="again", previous_response_id=response.id
        )
    assert err.value.param == "previous_response_id"


def test_bad_input_names_the_field(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="kiro",
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_file", "file_id": "file-1"}],
                }
            ],
        )
    assert err.value.param == "input[0].content[0].type"


def test_an_image_for_agents_only_is_refused(client):
    # The accounts here are ACP agents, which take text: images need a provider account.
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="kiro",
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}],
                }
            ],
        )
    assert "does not take images" in err.value.message


def test_codex_request_replay(client):
    # What Codex sends: instructions, input items with input_text, several strict function
    # tools, reasoning, store false, streamed, plus fields Drawbridge ignores.
    tools = [
        {
            "type": "function",
            "name": "shell",
            "description": "Runs a shell command and returns its output.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {
                    "command": {"type": "array", "items": {"type": "string"}},
                    "workdir": {"type": "string"},
                    "timeout_ms": {"type": "number"},
                },
                "required": ["command"],
                "additionalProperties": False,
            },
        },
        {
            "type": "function",
            "name": "update_plan",
            "description": "Updates the task plan.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {
                    "explanation": {"type": "string"},
                    "plan": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["plan"],
                "additionalProperties": False,
            },
        },
        {
            "type": "function",
            "name": "view_image",
            "description": "Attach a local image.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    ]
    stream = client.responses.create(
        model="kiro",
        instructions="You are a coding agent running in the Codex CLI.",
        input=[
            {
                "type": "message",
                "role": "user",
                "content": [
                    {
                        "type": "input_text",
                        "text": "<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>",
                    }
                ],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hi from Codex."}],
            },
        ],
        tools=tools,
        tool_choice="auto",
        parallel_tool_calls=False,
        reasoning={"effort": "medium", "summary": "auto"},
        store=False,
        stream=True,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    )
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed"
    final = events[-1].response
    assert final.store is False
    assert [tool.name for tool in final.tools] == ["shell", "update_plan", "view_image"]
    assert "Say hi from Codex." in final.output_text
    assert final.output_text.index("Codex CLI") < final.output_text.index("Say hi")
