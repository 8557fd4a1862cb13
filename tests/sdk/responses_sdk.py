"""The official OpenAI Python SDK's Responses API against thinkgate (what Codex speaks).

Run by tests/e2e/responses.rs with THINKGATE_BASE_URL, THINKGATE_MODELS (comma-separated
`name=kind`: `followup` for a model whose budget overrun is answered by a follow-up call,
`cut` for one whose answer ends at the budget) and THINKGATE_BUDGET (a reasoning budget under
the simulated models' 8 tokens).
"""
import json
import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["THINKGATE_BASE_URL"], api_key="unused", max_retries=0)
tools = [{"type": "function", "name": "lookup", "description": "Look something up.",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def words(text):
    return len(text.split())


def reasoning_of(response):
    return "".join(s.text for item in response.output if item.type == "reasoning" for s in item.summary)


def check(model, overrun):
    r = client.responses.create(model=model, input="What is two plus two?", instructions="Be brief.")
    assert r.object == "response" and r.id.startswith("resp_"), r
    assert r.status == "completed", (model, r)
    assert words(r.output_text) == 6, (model, r.output_text)
    assert words(reasoning_of(r)) == 8, (model, r.output)
    assert r.usage.output_tokens_details.reasoning_tokens == 8, (model, r.usage)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens

    # Streamed through the SDK's own accumulator, which checks every event's place.
    with client.responses.stream(model=model, input="What is two plus two?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.reasoning_summary_text.delta" in kinds and "response.output_text.delta" in kinds
    assert words(final.output_text) == 6 and words(reasoning_of(final)) == 8, (model, final)
    assert final.usage.output_tokens_details.reasoning_tokens == 8, final.usage

    # A function call, then its output sent back on the stored conversation.
    first = client.responses.create(model=model, input="Look up two plus two.", tools=tools)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "lookup" and "query" in json.loads(call.arguments), call
    answer = client.responses.create(model=model, previous_response_id=first.id, tools=tools,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "4"}])
    assert answer.status == "completed" and words(answer.output_text) == 6, (model, answer)
    assert answer.usage.input_tokens > first.usage.input_tokens, "the history was not replayed"

    # The same loop streamed, the call's arguments arriving as deltas.
    with client.responses.stream(model=model, input="Look up two plus two.", tools=tools) as s:
        streamed = s.get_final_response()
    call = next(item for item in streamed.output if item.type == "function_call")
    assert "query" in json.loads(call.arguments), call
    with client.responses.stream(model=model, previous_response_id=streamed.id, tools=tools,
                                 input=[{"type": "function_call_output", "call_id": call.call_id,
                                         "output": "4"}]) as s:
        assert words(s.get_final_response().output_text) == 6

    # `store: false` keeps nothing to continue from.
    unstored = client.responses.create(model=model, input="Hi", store=False)
    try:
        client.responses.create(model=model, input="Again", previous_response_id=unstored.id)
        raise AssertionError("a response stored with store=false was continued")
    except openai.BadRequestError as e:
        assert e.code == "previous_response_not_found", e.body

    # The budget holds on this ingress as on chat.
    budget = int(os.environ["THINKGATE_BUDGET"])
    held = client.responses.create(model=f"{model}:thinking", input="What is two plus two?",
                                   extra_headers={"x-thinkgate-reasoning-budget": str(budget)})
    assert 0 < words(reasoning_of(held)) <= budget, (model, held.output)
    if overrun == "followup":
        assert held.status == "completed" and words(held.output_text) == 6, (model, held)
    else:
        assert held.status == "incomplete", (model, held)
        assert held.incomplete_details.reason == "max_output_tokens", held


for entry in os.environ["THINKGATE_MODELS"].split(","):
    name, overrun = entry.split("=")
    check(name, overrun)

try:
    client.responses.create(model="no-such-model", input="x")
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
try:
    client.responses.create(model="sim-model", input="x", tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
    raise AssertionError("a hosted tool was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "tools[0].type", e.body

print("all checks passed")
