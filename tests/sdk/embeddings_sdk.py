"""The official OpenAI Python SDK's embeddings against thinkgate.

Run by tests/e2e/embeddings.rs with THINKGATE_BASE_URL, THINKGATE_MODEL (an embeddings model)
and THINKGATE_CHAT_MODEL (a chat model, which embeddings must refuse).
"""
import math
import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["THINKGATE_BASE_URL"], api_key="unused", max_retries=0)
model = os.environ["THINKGATE_MODEL"]

r = client.embeddings.create(model=model, input=["first text", "second text"])
assert [d.index for d in r.data] == [0, 1], r
assert all(len(d.embedding) == 8 for d in r.data), r
assert all(abs(math.sqrt(sum(x * x for x in d.embedding)) - 1) < 1e-6 for d in r.data)
assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens, r.usage

again = client.embeddings.create(model=model, input="first text", dimensions=8)
assert again.data[0].embedding == r.data[0].embedding, "the same text embeds the same"
wide = client.embeddings.create(model=model, input="first text", dimensions=16)
assert len(wide.data[0].embedding) == 16
# The SDK's default base64 encoding is the client's business: the body goes as sent.
encoded = client.embeddings.create(model=model, input="x", encoding_format="float")
assert len(encoded.data[0].embedding) == 8

try:
    client.embeddings.create(model="no-such-model", input="x")
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
try:
    client.embeddings.create(model=os.environ["THINKGATE_CHAT_MODEL"], input="x")
    raise AssertionError("a chat model embedded")
except openai.BadRequestError as e:
    assert e.code == "model_not_supported", e.body

print("all checks passed")
