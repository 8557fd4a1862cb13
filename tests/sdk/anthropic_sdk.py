"""The official Anthropic Python SDK against thinkgate's Messages API (what Claude Code speaks).

Run by tests/e2e/messages.rs with THINKGATE_BASE_URL (the proxy's /v1), THINKGATE_MODELS
(comma-separated `name=kind`: `signed` for a model behind a simulated Anthropic upstream, whose
thinking blocks carry signatures that must come back unchanged; `translated` for one behind an
OpenAI-format upstream), THINKGATE_VISION (a model that takes images) and THINKGATE_BUDGET (a
thinking budget under what the simulated models think).
"""
import base64
import os

import anthropic
from anthropic import Anthropic

# The SDK adds /v1/messages itself.
root = os.environ["THINKGATE_BASE_URL"].removesuffix("/v1")
client = Anthropic(base_url=root, api_key="unused", max_retries=0)
question = [{"role": "user", "content": "What is two plus two?"}]
tools = [{"name": "lookup", "description": "Look something up.",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
thinking = {"type": "enabled", "budget_tokens": 1024}
# A 1x1 PNG.
pixel = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")).decode()


def words(text):
    return len(text.split())


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def check_tool_loop(model, signed, first, send):
    """A tool call under thinking, then its result sent back with the turn as received."""
    assert first.stop_reason == "tool_use", (model, first)
    kinds = [b.type for b in first.content]
    assert kinds[0] == "thinking" and kinds[-1] == "tool_use", (model, kinds)
    if signed:
        assert first.content[0].signature.startswith("sig_"), (model, first.content[0])
    call = first.content[-1]
    assert "query" in call.input, (model, call)
    history = question + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "4"}]},
    ]
    answer = send(history)
    assert answer.stop_reason == "end_turn", (model, answer)
    assert words(text_of(answer)) == 6, (model, answer)


def check(model, signed):
    message = client.messages.create(model=model, max_tokens=1024, messages=question)
    assert message.type == "message" and message.role == "assistant", (model, message)
    assert message.id.startswith("msg_"), message.id
    assert message.stop_reason == "end_turn", (model, message)
    assert words(text_of(message)) == 6, (model, message)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens >= 6, message.usage

    with client.messages.stream(model=model, max_tokens=1024, messages=question) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert words(streamed) == 6, (model, streamed)
    assert final.stop_reason == "end_turn", (model, final)
    assert final.usage.input_tokens > 0 and final.usage.output_tokens >= 6, final.usage

    def whole(history):
        return client.messages.create(model=model, max_tokens=4096, thinking=thinking,
                                      tools=tools, messages=history)

    def streamed_turn(history):
        with client.messages.stream(model=model, max_tokens=4096, thinking=thinking,
                                    tools=tools, messages=history) as s:
            return s.get_final_message()

    check_tool_loop(model, signed, whole(question), whole)
    check_tool_loop(model, signed, streamed_turn(question), streamed_turn)

    counted = client.messages.count_tokens(model=model, messages=question)
    assert counted.input_tokens > 0, counted

    # A client's budget is an ask the guard holds, also under the vendor's minimum (Claude
    # Code sends 500; Anthropic takes no less than 1,024): the thinking shown stops at the
    # budget, the answer is still whole. The simulated models think 8 tokens.
    budget = int(os.environ["THINKGATE_BUDGET"])
    ask = dict(model=model, max_tokens=1024, messages=question,
               thinking={"type": "enabled", "budget_tokens": budget})
    with client.messages.stream(**ask) as s:
        held_streamed = s.get_final_message()
    for held in (client.messages.create(**ask), held_streamed):
        shown = "".join(b.thinking for b in held.content if b.type == "thinking")
        assert 0 < words(shown) <= budget, (model, shown)
        # What happens at the budget is the model's `overrun`: Anthropic's is a follow-up
        # that answers whole; the simulator's default ends the answer there, as `max_tokens`.
        if signed:
            assert held.stop_reason == "end_turn" and words(text_of(held)) == 6, (model, held)
        else:
            assert held.stop_reason == "max_tokens" and text_of(held) == "", (model, held)


def check_errors(model):
    try:
        client.messages.create(model="no-such-model", max_tokens=10, messages=question)
        raise AssertionError("an unknown model was accepted")
    except anthropic.NotFoundError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body
    try:
        client.messages.create(model=model, max_tokens=10, messages=[])
        raise AssertionError("an empty conversation was accepted")
    except anthropic.BadRequestError as e:
        assert e.body["error"]["type"] == "invalid_request_error", e.body
        assert e.body["error"]["message"].startswith("messages"), e.body


for entry in os.environ["THINKGATE_MODELS"].split(","):
    name, kind = entry.split("=")
    check(name, kind == "signed")
check_errors(os.environ["THINKGATE_MODELS"].split(",")[0].split("=")[0])

# The model list in Anthropic's shape (Claude Code lists a gateway's models this way).
page = list(client.models.list())
assert all(m.type == "model" and m.display_name for m in page), page
listed = [m.id for m in page]
assert "sim-model" in listed and "auto" in listed, listed
named = os.environ["THINKGATE_MODELS"].split(",")[0].split("=")[0]
assert client.models.retrieve(named).id == named

vision = os.environ["THINKGATE_VISION"]
seen = client.messages.create(model=vision, max_tokens=256, messages=[{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}},
    {"type": "text", "text": "What is in this picture?"}]}])
assert seen.stop_reason == "end_turn" and words(text_of(seen)) == 6, seen

print("all checks passed")
