"""The official OpenAI Python SDK against thinkgate: plain, streamed and tool calls.

Run by tests/e2e/sdk.rs with THINKGATE_BASE_URL set; exits non-zero on the first failure.
"""
import json
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["THINKGATE_BASE_URL"], api_key="unused", max_retries=0)
messages = [{"role": "user", "content": "What is two plus two?"}]

# Plain call.
resp = client.chat.completions.create(model="sim-model", messages=messages)
assert resp.object == "chat.completion", resp
assert resp.model == "upstream-sim-model", resp.model
assert resp.choices[0].finish_reason == "stop"
assert len(resp.choices[0].message.content.split()) == 6, resp.choices[0].message.content
assert resp.usage.completion_tokens == 14, resp.usage
assert resp.usage.completion_tokens_details.reasoning_tokens == 8, resp.usage
# Fields the SDK does not model still arrive (reasoning text as the upstream sent it).
assert resp.choices[0].message.model_extra.get("reasoning_content"), resp.choices[0].message

# Raw response: the proxy's headers are visible to SDK users.
raw = client.chat.completions.with_raw_response.create(model="auto:thinking", messages=messages)
assert raw.headers["x-thinkgate-model"] == "sim-model"
assert raw.headers["x-thinkgate-mode"] == "thinking"
assert len(raw.headers["x-request-id"]) == 32

# Streamed call with usage.
stream = client.chat.completions.create(
    model="sim-model", messages=messages, stream=True, stream_options={"include_usage": True}
)
content, reasoning, usage, finish = [], [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            content.append(choice.delta.content)
        extra = choice.delta.model_extra or {}
        if extra.get("reasoning_content"):
            reasoning.append(extra["reasoning_content"])
        finish = choice.finish_reason or finish
assert len("".join(content).split()) == 6, content
assert len("".join(reasoning).split()) == 8, reasoning
assert finish == "stop"
assert usage is not None and usage.completion_tokens == 14, usage

# Tool call, streamed arguments reassembled by the SDK's stream helper.
tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}]
resp = client.chat.completions.create(model="sim-model", messages=messages, tools=tools)
call = resp.choices[0].message.tool_calls[0]
assert call.function.name == "lookup"
assert "query" in json.loads(call.function.arguments)
with client.beta.chat.completions.stream(model="sim-model", messages=messages, tools=tools) as s:
    final = s.get_final_completion()
assert "query" in json.loads(final.choices[0].message.tool_calls[0].function.arguments)

# Errors surface as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    sys.exit("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body

# A stream that breaks upstream raises in the SDK instead of looking complete.
try:
    for _ in client.chat.completions.create(
        model="sim-model", messages=messages, stream=True, extra_headers={"x-sim-reset-after": "3"}
    ):
        pass
    sys.exit("expected the broken stream to raise")
except openai.APIError as e:
    assert "broke off" in str(e), e

print("openai SDK: all checks passed")
