#!/usr/bin/env bash
# Codex through thinkgate with every byte on loopback: run inside a network namespace of its
# own (`unshare -rn`), where only `lo` exists. Starts the proxy on the demo config, points
# Codex's Responses API provider at it, runs one `codex exec` task, then saves the proxy's
# metrics. Run by tests/e2e/agents.rs with THINKGATE_BIN, AGENT_BIN, CONFIG and WORK.
set -euo pipefail
ip link set lo up
"$THINKGATE_BIN" serve --config "$CONFIG" --listen 127.0.0.1:8080 >"$WORK/proxy.log" 2>&1 &
proxy=$!
trap 'kill $proxy 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8080/healthz >/dev/null && break
  sleep 0.1
done
export HOME="$WORK/home" CODEX_HOME="$WORK/codex" THINKGATE_API_KEY=unused
mkdir -p "$HOME" "$CODEX_HOME" "$WORK/project"
cat >"$CODEX_HOME/config.toml" <<'TOML'
model = "auto"
model_provider = "thinkgate"

[model_providers.thinkgate]
name = "thinkgate"
base_url = "http://127.0.0.1:8080/v1"
wire_api = "responses"
env_key = "THINKGATE_API_KEY"
TOML
cd "$WORK/project"
status=0
timeout 120 "$AGENT_BIN" exec --skip-git-repo-check "Say hello in one short sentence." \
  </dev/null >"$WORK/agent.out" 2>"$WORK/agent.err" || status=$?
curl -s http://127.0.0.1:8080/metrics >"$WORK/metrics.txt"
exit $status
