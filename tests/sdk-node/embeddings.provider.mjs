// The official OpenAI Node SDK's embeddings through Drawbridge's provider accounts, run with
// Node's own test runner. Started by tests/embeddings.rs (not by tests/node_sdk.rs: its stacks
// have no provider account, hence the name outside `*.test.mjs`) with DRAWBRIDGE_BASE_URL and
// DRAWBRIDGE_API_KEY set, against a `drawbridge` whose `kind: openai` account serves
// `embed-test` on a mock-provider upstream (8-value vectors derived from each input's text).
//
// Without `encoding_format` the SDK asks for base64 and decodes the little-endian float32s
// itself: the vectors must equal the ones asked as floats.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const BASE_URL = required('DRAWBRIDGE_BASE_URL') + '/v1';
const API_KEY = required('DRAWBRIDGE_API_KEY');
const MODEL = 'embed-test';
const INPUTS = ['hello from node', 'a second input'];

const client = new OpenAI({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, timeout: 30_000 });

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: tests/embeddings.rs starts a stack and sets it`);
  }
  return value;
}

test('embeddings asked as floats', async () => {
  const reply = await client.embeddings.create({ model: MODEL, input: INPUTS, encoding_format: 'float' });
  assert.equal(reply.object, 'list');
  assert.equal(reply.data.length, 2);
  assert.equal(reply.data[0].embedding.length, 8);
  assert.equal(reply.usage.prompt_tokens, 6);
});

test('embeddings by default are asked in base64 and decoded by the SDK', async () => {
  let asked;
  const watching = new OpenAI({
    baseURL: BASE_URL,
    apiKey: API_KEY,
    maxRetries: 0,
    timeout: 30_000,
    fetch: async (url, init) => {
      asked = JSON.parse(init.body);
      return fetch(url, init);
    },
  });
  const decoded = await watching.embeddings.create({ model: MODEL, input: INPUTS });
  assert.equal(asked.encoding_format, 'base64', 'the SDK asks base64 itself');
  const floats = await client.embeddings.create({ model: MODEL, input: INPUTS, encoding_format: 'float' });
  assert.equal(decoded.data.length, 2);
  for (const [i, item] of decoded.data.entries()) {
    assert.ok(Array.isArray(item.embedding), 'decoded to an array of numbers');
    // float32 values, read back from JSON doubles: equal once rounded to float32.
    assert.deepEqual(item.embedding, Array.from(Float32Array.from(floats.data[i].embedding)));
  }
});

test('an ACP model refuses embeddings with a 400 naming the model', async () => {
  await assert.rejects(client.embeddings.create({ model: 'kiro', input: 'x' }), (error) => {
    assert.ok(error instanceof OpenAI.BadRequestError, String(error));
    assert.match(error.message, /does not serve embeddings/);
    assert.equal(error.param, 'model');
    return true;
  });
});
