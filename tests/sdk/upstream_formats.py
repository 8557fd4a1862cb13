"""The official OpenAI Python SDK against thinkgate in front of every upstream format.

Run by tests/e2e/sdk.rs with THINKGATE_BASE_URL and THINKGATE_MODELS (comma-separated model
ids; a `!` suffix marks a model whose upstream hides its reasoning). Each model is served by a
simulated upstream speaking another wire format or dialect; the client only speaks OpenAI.
"""
import json
import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["THINKGATE_BASE_URL"], api_key="unused", max_retries=0)
question = [{"role": "user", "content": "What is two plus two?"}]
tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}]


def reasoning_of(obj):
    return (obj.model_extra or {}).get("reasoning_content") or ""


def check(model, shows_reasoning):
    want_reasoning = 8 if shows_reasoning else 0

    resp = client.chat.completions.create(model=model, messages=question)
    message = resp.choices[0].message
    assert resp.object == "chat.completion", (model, resp)
    assert resp.choices[0].finish_reason == "stop", (model, resp)
    assert len(message.content.split()) == 6, (model, message)
    assert len(reasoning_of(message).split()) == want_reasoning, (model, message)
    assert resp.usage.completion_tokens_details.reasoning_tokens == 8, (model, resp.usage)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    stream = client.chat.completions.create(
        model=model, messages=question, stream=True, stream_options={"include_usage": True}
    )
    content, reasoning, usage, finish = [], [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append(reasoning_of(choice.delta))
            finish = choice.finish_reason or finish
    assert len("".join(content).split()) == 6, (model, content)
    assert len("".join(reasoning).split()) == want_reasoning, (model, reasoning)
    assert finish == "stop", (model, finish)
    assert usage.completion_tokens_details.reasoning_tokens == 8, (model, usage)

    # A tool call, then its result sent back: the model answers in text.
    resp = client.chat.completions.create(model=model, messages=question, tools=tools)
    assert resp.choices[0].finish_reason == "tool_calls", (model, resp)
    turn = resp.choices[0].message
    call = turn.tool_calls[0]
    assert call.function.name == "lookup"
    assert "query" in json.loads(call.function.arguments)
    history = question + [turn.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": "4"}]
    answer = client.chat.completions.create(model=model, messages=history, tools=tools)
    assert answer.choices[0].finish_reason == "stop", (model, answer)
    assert len(answer.choices[0].message.content.split()) == 6, (model, answer)

    # Streamed tool-call arguments, reassembled by the SDK's stream helper.
    with client.beta.chat.completions.stream(model=model, messages=question, tools=tools) as s:
        final = s.get_final_completion()
    args = final.choices[0].message.tool_calls[0].function.arguments
    assert "query" in json.loads(args), (model, args)

    # The upstream's rate limit is the SDK's typed error.
    try:
        client.chat.completions.create(
            model=model, messages=question, extra_headers={"x-sim-status": "429"}
        )
        raise SystemExit(f"{model}: expected RateLimitError")
    except openai.RateLimitError:
        pass


def check_budget(model, budget):
    """Under a thinking budget the upstream's reasoning is cut at it; every answer stays whole."""
    m = f"{model}:thinking"
    resp = client.chat.completions.create(model=m, messages=question)
    assert resp.choices[0].message.content.strip(), (m, resp)
    assert resp.usage.completion_tokens_details.reasoning_tokens <= budget, (m, resp.usage)
    assert resp.model_extra["thinkgate"]["budget_enforcement"] in ("native", "forced", "cut"), resp

    stream = client.chat.completions.create(
        model=m, messages=question, stream=True, stream_options={"include_usage": True}
    )
    content, reasoning, usage, finish, ids = [], [], None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append(reasoning_of(choice.delta))
            finish = choice.finish_reason or finish
    assert "".join(content).strip(), (m, content)
    assert len("".join(reasoning).split()) <= budget, (m, reasoning)
    assert finish == "stop" and len(ids) == 1, (m, finish, ids)
    assert usage.completion_tokens_details.reasoning_tokens <= budget, (m, usage)

    # The tool loop under the budget.
    resp = client.chat.completions.create(model=m, messages=question, tools=tools)
    assert resp.choices[0].finish_reason == "tool_calls", (m, resp)
    turn = resp.choices[0].message
    history = question + [turn.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": turn.tool_calls[0].id, "content": "4"}]
    answer = client.chat.completions.create(model=m, messages=history, tools=tools)
    assert answer.choices[0].message.content.strip(), (m, answer)
    with client.beta.chat.completions.stream(model=m, messages=question, tools=tools) as s:
        final = s.get_final_completion()
    assert "query" in json.loads(final.choices[0].message.tool_calls[0].function.arguments)


budget = int(os.environ.get("THINKGATE_BUDGET", "0"))
for entry in os.environ["THINKGATE_MODELS"].split(","):
    check(entry.rstrip("!"), shows_reasoning=not entry.endswith("!"))
    if budget:
        check_budget(entry.rstrip("!"), budget)
    print(f"{entry}: ok")
print("upstream formats: all checks passed")
