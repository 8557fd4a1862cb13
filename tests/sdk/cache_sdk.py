"""The official OpenAI and Anthropic Python SDKs against thinkgate's response cache.

Run by tests/e2e/sdk.rs in two phases (THINKGATE_PHASE): `fill` (miss then hit, whole and
streamed; another key; random sampling; the key's limits untouched by hits; the byte cap
under a scan of one-off answers), then, after the test moved the cache's clock past the
TTL, `expired`. Exits non-zero on the first failure.
"""
import os
import urllib.request

import anthropic
from openai import OpenAI

base = os.environ["THINKGATE_BASE_URL"]
alpha = OpenAI(base_url=base, api_key=os.environ["THINKGATE_ALPHA"], max_retries=0)
beta = OpenAI(base_url=base, api_key=os.environ["THINKGATE_BETA"], max_retries=0)
messages = [{"role": "user", "content": "What is two plus two?"}]


def whole(client, **extra):
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model", messages=messages, temperature=0, **extra
    )
    return raw.headers, raw.parse()


def metric(name, labels=""):
    text = urllib.request.urlopen(base.removesuffix("/v1") + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line and line[len(name)] in "{ ":
            total += float(line.rsplit(" ", 1)[1])
    return total


if os.environ["THINKGATE_PHASE"] == "expired":
    headers, _ = whole(alpha)
    assert headers["x-thinkgate-cache"] == "miss", "the entry outlived its TTL"
    print("all checks passed")
    raise SystemExit(0)

# Whole: a miss, then a hit with the same answer and usage and an id of its own.
h1, first = whole(alpha)
h2, second = whole(alpha)
assert h1["x-thinkgate-cache"] == "miss", h1
assert h2["x-thinkgate-cache"] == "hit", h2
assert second.choices[0].message.content == first.choices[0].message.content
assert second.usage == first.usage, (second.usage, first.usage)
assert second.id != first.id and second.id.startswith("chatcmpl-")
assert second.model_extra["thinkgate"]["cache"]["status"] == "hit", second.model_extra
quota = int(h1["x-ratelimit-remaining-tokens"])
assert "x-ratelimit-remaining-tokens" not in h2, "a hit is not admitted"

# Streamed: the replay's content is identical, every chunk carries the hit's id.
def streamed(client):
    raw = client.chat.completions.with_raw_response.create(
        model="sim-model", messages=messages, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    content, ids, usage = [], set(), None
    for chunk in raw.parse():
        ids.add(chunk.id)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
    return raw.headers["x-thinkgate-cache"], "".join(content), ids, usage


s1 = streamed(alpha)
s2 = streamed(alpha)
assert (s1[0], s2[0]) == ("miss", "hit"), (s1[0], s2[0])
assert s2[1] == s1[1] and s1[1], (s1[1], s2[1])
assert len(s2[2]) == 1 and s2[2] != s1[2], (s1[2], s2[2])
assert s2[3] == s1[3], (s1[3], s2[3])

# Another key does not see alpha's entries.
h, _ = whole(beta)
assert h["x-thinkgate-cache"] == "miss", h

# Random sampling without the opt-in bypasses the cache.
for _ in range(2):
    raw = alpha.chat.completions.with_raw_response.create(
        model="sim-model", messages=messages, temperature=0.7
    )
    assert raw.headers["x-thinkgate-cache"] == "bypass", raw.headers
# The daily output quota was spent by the calls that reached upstream (the two misses and
# the first bypass), not by the hits in between.
spent = first.usage.completion_tokens + s1[3].completion_tokens + first.usage.completion_tokens
left = int(raw.headers["x-ratelimit-remaining-tokens"])
assert left == quota - spent, (quota, left, spent)

# The Anthropic SDK through /v1/messages: the same, in Anthropic's shape (opted in by
# header: this SDK's `create` takes no `temperature`).
claude = anthropic.Anthropic(
    base_url=base.removesuffix("/v1"), api_key=os.environ["THINKGATE_ALPHA"], max_retries=0
)
replies = []
for _ in range(2):
    raw = claude.messages.with_raw_response.create(
        model="sim-model", max_tokens=256, extra_headers={"x-thinkgate-cache": "on"},
        messages=[{"role": "user", "content": "Name a prime number."}],
    )
    replies.append((raw.headers["x-thinkgate-cache"], raw.parse()))
assert [r[0] for r in replies] == ["miss", "hit"], replies
assert replies[1][1].content == replies[0][1].content
assert replies[1][1].id != replies[0][1].id

# A scan of one-off answers fills the byte cap: it holds after every insert, the cache
# evicts (it keeps fewer entries than it was given), and the entry asked again survives
# the scan (S3-FIFO evicts what was not read again first).
cap = 131072
stored_before = metric("thinkgate_cache_stores_total", 'outcome="stored"')
for seed in range(60):
    alpha.chat.completions.create(
        model="sim-model", messages=messages, seed=seed,
        extra_headers={"x-sim-answer-tokens": "400"},
    )
    assert metric("thinkgate_cache_bytes") <= cap
stored = metric("thinkgate_cache_stores_total", 'outcome="stored"')
assert stored - stored_before == 60, (stored_before, stored)
assert metric("thinkgate_cache_entries") < stored, (metric("thinkgate_cache_entries"), stored)
h, _ = whole(alpha)
assert h["x-thinkgate-cache"] == "hit", "the entry read twice survived the scan"
print("all checks passed")
