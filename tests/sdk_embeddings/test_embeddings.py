"""The official OpenAI Python SDK's embeddings and images through Drawbridge.

Started by tests/embeddings.rs with DRAWBRIDGE_BASE_URL and DRAWBRIDGE_API_KEY set, against a
`drawbridge` with one `kind: openai` account (serving `embed-test`) on a mock-provider upstream
(deterministic 8-value vectors derived from each input's text; usage in words; a 1x1 PNG per
image) and one ACP account serving `kiro`. The client is the stock SDK with only base_url and
api_key changed (retries off so errors surface at once).
"""

import base64
import os
import struct

import openai
import pytest

BASE_URL = os.environ["DRAWBRIDGE_BASE_URL"] + "/v1"
API_KEY = os.environ["DRAWBRIDGE_API_KEY"]
MODEL = "embed-test"
INPUTS = ["hello from the sdk", "second input"]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=30)


def floats_of(client):
    reply = client.embeddings.create(model=MODEL, input=INPUTS, encoding_format="float")
    return [item.embedding for item in reply.data]


def test_float_embeddings(client):
    reply = client.embeddings.create(model=MODEL, input=INPUTS, encoding_format="float")
    assert reply.object == "list"
    assert [item.index for item in reply.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in reply.data)
    assert all(isinstance(v, float) for v in reply.data[0].embedding)
    assert reply.usage.prompt_tokens == 6
    assert reply.usage.total_tokens == 6


def test_base64_embeddings_asked_explicitly(client):
    reply = client.embeddings.create(model=MODEL, input=INPUTS, encoding_format="base64")
    raw = reply.data[0].embedding
    assert isinstance(raw, str)
    decoded = struct.unpack("<8f", base64.b64decode(raw))
    assert list(decoded) == pytest.approx(floats_of(client)[0], abs=0)


def test_default_embeddings_are_asked_in_base64_and_decoded(client):
    # Without encoding_format the SDK asks base64 itself and decodes it to floats.
    reply = client.embeddings.create(model=MODEL, input=INPUTS)
    assert [item.embedding for item in reply.data] == floats_of(client)


def test_image_generation(client):
    reply = client.images.generate(
        model=MODEL, prompt="a lighthouse at dusk", n=2, response_format="b64_json"
    )
    assert len(reply.data) == 2
    png = base64.b64decode(reply.data[0].b64_json)
    assert png.startswith(b"\x89PNG")
    assert reply.usage.input_tokens == 4
    assert reply.usage.output_tokens == 200


def test_an_acp_model_refuses_embeddings(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="kiro", input="x", encoding_format="float")
    assert "does not serve embeddings" in str(refused.value)
    assert refused.value.body["param"] == "model"
