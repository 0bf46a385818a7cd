// The official OpenAI Node SDK against a running Drawbridge, run with Node's own test runner
// (`node --test`). Started by tests/node_sdk.rs with DRAWBRIDGE_BASE_URL and DRAWBRIDGE_API_KEY
// set; the client is the stock SDK with only baseURL and apiKey changed (retries off so errors
// surface at once).
//
// Function calling: the `call` directive in the user's message makes the mock agent call the
// listed tools over the worker's MCP tool bridge; the answer ends with `tool_calls`, and the
// follow-up carrying the `tool` messages is answered `NAME: RESULT`, one line per call.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const BASE_URL = required('DRAWBRIDGE_BASE_URL') + '/v1';
const API_KEY = required('DRAWBRIDGE_API_KEY');
const MODEL = 'kiro';
const TIMEOUT_MS = 60_000;

const client = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, timeout: 30_000 });

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    },
  },
};

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: tests/node_sdk.rs starts a stack and sets it`);
  }
  return value;
}

/** The user's question, with the directive that makes the mock agent call get_weather. */
function askWeather() {
  return [
    {
      role: 'user',
      content: 'What is it like in Paris? [[mock:call tool=get_weather args={"city":"Paris"}]]',
    },
  ];
}

test('plain chat completion', { timeout: TIMEOUT_MS }, async () => {
  const reply = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'Hello from the Node SDK' }],
  });
  assert.equal(reply.object, 'chat.completion');
  assert.equal(reply.choices[0].message.role, 'assistant');
  assert.equal(reply.choices[0].message.content, 'Hello from the Node SDK');
  assert.equal(reply.choices[0].finish_reason, 'stop');
  assert.ok(reply.usage.total_tokens > 0, JSON.stringify(reply.usage));
});

test('streamed chat completion with usage', { timeout: TIMEOUT_MS }, async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'stream these words back' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  const ids = new Set();
  for await (const chunk of stream) {
    chunks += 1;
    ids.add(chunk.id);
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) {
      // The usage chunk is the last one and has no choices.
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
    }
  }
  assert.ok(chunks > 1, `${chunks} chunk(s)`);
  assert.equal(text, 'stream these words back');
  assert.equal(finish, 'stop');
  assert.ok(usage !== null && usage.total_tokens > 0, JSON.stringify(usage));
  assert.equal(ids.size, 1);
});

test('stream helper without tools', { timeout: TIMEOUT_MS }, async () => {
  // The helper checks the stream's shape (role first, a finish_reason) on its own.
  const stream = client.chat.completions.stream({
    model: MODEL,
    messages: [{ role: 'user', content: 'helper check' }],
  });
  const final = await stream.finalChatCompletion();
  assert.equal(final.choices[0].message.content, 'helper check');
  assert.equal(final.choices[0].finish_reason, 'stop');
});

test('stream helper: tool call, then the follow-up with its result', { timeout: TIMEOUT_MS }, async () => {
  const messages = askWeather();
  const stream = client.chat.completions.stream({ model: MODEL, messages, tools: [WEATHER] });
  const done = [];
  stream.on('tool_calls.function.arguments.done', (event) => done.push(event));
  const final = await stream.finalChatCompletion();

  const choice = final.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.tool_calls.length, 1, JSON.stringify(choice.message));
  const [call] = choice.message.tool_calls;
  assert.equal(call.type, 'function');
  assert.ok(call.id, 'the tool call has an id');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  // The helper saw the call's arguments complete, as it does against OpenAI.
  assert.equal(done.length, 1);
  assert.equal(done[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(done[0].arguments), { city: 'Paris' });

  // The follow-up: the assistant's message as the SDK assembled it, then the tool's result.
  messages.push(choice.message);
  messages.push({ role: 'tool', tool_call_id: call.id, content: 'sunny' });
  const followUp = client.chat.completions.stream({ model: MODEL, messages, tools: [WEATHER] });
  const answer = await followUp.finalChatCompletion();
  assert.equal(answer.choices[0].finish_reason, 'stop');
  assert.equal(answer.choices[0].message.content, 'get_weather: sunny');
  assert.equal(await followUp.finalContent(), 'get_weather: sunny');
});

/** get_weather for the SDK's tool runner; `calls` records the arguments it was called with. */
function runnableWeather(calls) {
  return {
    type: 'function',
    function: {
      name: 'get_weather',
      description: WEATHER.function.description,
      parameters: WEATHER.function.parameters,
      parse: JSON.parse,
      function: (args) => {
        calls.push(args);
        return 'sunny';
      },
    },
  };
}

test('runTools: the SDK runs the whole loop (call, result, continuation)', { timeout: TIMEOUT_MS }, async () => {
  const calls = [];
  const runner = client.chat.completions.runTools({
    model: MODEL,
    messages: askWeather(),
    tools: [runnableWeather(calls)],
  });
  const content = await runner.finalContent();
  assert.equal(content, 'get_weather: sunny');
  assert.deepEqual(calls, [{ city: 'Paris' }]);
  const completions = runner.allChatCompletions();
  assert.equal(completions.length, 2);
  assert.equal(completions[0].choices[0].finish_reason, 'tool_calls');
  assert.equal(completions[1].choices[0].finish_reason, 'stop');
  assert.equal(await runner.finalFunctionToolCallResult(), 'sunny');
});

test('runTools streamed: the same loop over streams', { timeout: TIMEOUT_MS }, async () => {
  const calls = [];
  const runner = client.chat.completions.runTools({
    model: MODEL,
    messages: askWeather(),
    tools: [runnableWeather(calls)],
    stream: true,
  });
  let streamed = '';
  runner.on('content', (delta) => {
    streamed += delta;
  });
  const content = await runner.finalContent();
  assert.equal(content, 'get_weather: sunny');
  assert.equal(streamed, 'get_weather: sunny');
  assert.deepEqual(calls, [{ city: 'Paris' }]);
  assert.equal(runner.allChatCompletions().length, 2);
});

test('a tool message without tool_call_id is a BadRequestError naming the field', { timeout: TIMEOUT_MS }, async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'tool', content: 'orphan' },
      ],
    }),
    (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.status, 400);
      assert.equal(error.param, 'messages[1].tool_call_id', JSON.stringify(error.error));
      return true;
    },
  );
});
