#!/usr/bin/env bash
# Claude Code through thinkgate with every byte on loopback: run inside a network namespace
# of its own (`unshare -rn`), where only `lo` exists. Starts the proxy on the demo config,
# runs one `claude -p` task, then saves the proxy's metrics. Run by tests/e2e/agents.rs with
# THINKGATE_BIN, AGENT_BIN (the claude CLI), CONFIG and WORK (a scratch directory).
set -euo pipefail
ip link set lo up
"$THINKGATE_BIN" serve --config "$CONFIG" --listen 127.0.0.1:8080 >"$WORK/proxy.log" 2>&1 &
proxy=$!
trap 'kill $proxy 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8080/healthz >/dev/null && break
  sleep 0.1
done
export HOME="$WORK/home"
mkdir -p "$HOME"
export ANTHROPIC_BASE_URL=http://127.0.0.1:8080 ANTHROPIC_API_KEY=unused
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1
status=0
timeout 120 "$AGENT_BIN" -p "Say hello in one short sentence." --output-format json \
  >"$WORK/agent.out" 2>"$WORK/agent.err" || status=$?
curl -s http://127.0.0.1:8080/metrics >"$WORK/metrics.txt"
exit $status
