"""The official OpenAI Python SDK's embeddings and legacy completions against thinkgate.

Run by tests/e2e/embeddings.rs with THINKGATE_BASE_URL, THINKGATE_MODEL (an embeddings model)
and THINKGATE_CHAT_MODEL (a chat model, which embeddings must refuse and completions serve).
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

# Legacy text completions, on the chat model: whole, streamed with and without usage, cut.
chat_model = os.environ["THINKGATE_CHAT_MODEL"]
c = client.completions.create(model=chat_model, prompt="Say hello.", max_tokens=50)
assert c.object == "text_completion", c
assert len(c.choices[0].text.split()) == 6 and c.choices[0].finish_reason == "stop", c
assert c.usage.completion_tokens == 6 and c.usage.prompt_tokens > 0, c.usage
chunks = list(client.completions.create(model=chat_model, prompt="Say hello.", max_tokens=50,
                                        stream=True, stream_options={"include_usage": True}))
# The simulator's words follow the body, so a stream says other words: count them.
assert len("".join(ch.choices[0].text for ch in chunks if ch.choices).split()) == 6, chunks
assert chunks[-1].usage.completion_tokens == 6, chunks[-1]
bare = list(client.completions.create(model=chat_model, prompt="Say hello.", max_tokens=50, stream=True))
assert all(ch.choices and ch.usage is None for ch in bare), bare[-1]
cut = client.completions.create(model=chat_model, prompt="Say hello.", max_tokens=3)
assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].text.split()) == 3, cut
try:
    client.completions.create(model=model, prompt="x")
    raise AssertionError("an embeddings model completed text")
except openai.BadRequestError as e:
    assert e.code == "model_not_supported", e.body

print("all checks passed")
