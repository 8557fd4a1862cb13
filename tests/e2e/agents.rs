//! Real agent CLIs through the proxy, with every byte on loopback: Claude Code (npm's
//! `@anthropic-ai/claude-code`, over the Messages API) and Codex (`@openai/codex`, over the
//! Responses API), installed under the target directory on first run, each run a one-shot
//! task against the demo config inside a network namespace that has only `lo`
//! (`unshare -rn`); their tokens must be in `/metrics` under their endpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The versions checked: pinned, so a new CLI release changes this file, not CI's result.
const CLAUDE_CODE: &str = "@anthropic-ai/claude-code@2.1.197";
const CODEX: &str = "@openai/codex@0.171.0";

/// The CLI `bin` of npm package `package` (`name@version`), installed once under the
/// target directory (each version in a directory of its own).
fn agent_bin(package: &str, bin: &str) -> PathBuf {
    // The tests run in parallel; npm must not install into one prefix twice at once.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("agent-clis")
        .join(package.replace(['@', '/'], "_"));
    let path = dir.join("node_modules/.bin").join(bin);
    if !path.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let installed = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(package)
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "npm install {package} failed (install npm)"
        );
    }
    path
}

/// What a run left behind in its scratch directory.
struct Run {
    out: String,
    metrics: String,
}

/// Runs `tests/agents/<script>` for `agent` in its own loopback-only network namespace.
fn run(script: &str, agent: &Path) -> Run {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{script}-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let status = Command::new("unshare")
        .args(["-rn", "bash"])
        .arg(root.join("tests/agents").join(script))
        .env("THINKGATE_BIN", env!("CARGO_BIN_EXE_thinkgate"))
        .env("AGENT_BIN", agent)
        .env("CONFIG", root.join("config/demo.toml"))
        .env("WORK", &work)
        .output()
        .expect("unshare runs (util-linux)");
    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap_or_default();
    assert!(
        status.status.success(),
        "{script}: {}\nout: {}\nerr: {}\nproxy log:\n{}",
        String::from_utf8_lossy(&status.stderr),
        read("agent.out"),
        read("agent.err"),
        read("proxy.log")
    );
    let run = Run {
        out: read("agent.out"),
        metrics: read("metrics.txt"),
    };
    let _ = std::fs::remove_dir_all(&work);
    run
}

/// The agent's requests went through `endpoint` and every kind of token was counted.
fn assert_counted(metrics: &str, endpoint: &str) {
    let endpoint = format!("endpoint=\"{endpoint}\"");
    let served = metrics.lines().any(|l| {
        l.starts_with("thinkgate_requests_total{")
            && l.contains(&endpoint)
            && l.contains("status=\"200\"")
    });
    assert!(served, "no 200 on {endpoint}:\n{metrics}");
    for kind in ["prompt", "output", "reasoning"] {
        let kind = format!("kind=\"{kind}\"");
        let counted: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("thinkgate_tokens_total{") && l.contains(&kind))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(counted > 0.0, "no {kind} tokens counted:\n{metrics}");
    }
}

#[test]
fn claude_code_runs_a_task_through_the_proxy_on_loopback_only() {
    let claude = agent_bin(CLAUDE_CODE, "claude");
    let run = run("claude_code.sh", &claude);
    let result: serde_json::Value = serde_json::from_str(&run.out).unwrap_or_default();
    assert_eq!(result["subtype"], "success", "{}", run.out);
    assert_eq!(result["is_error"], false, "{}", run.out);
    assert!(
        result["usage"]["output_tokens"].as_u64() > Some(0),
        "{}",
        run.out
    );
    assert_counted(&run.metrics, "messages");
}

#[test]
fn codex_runs_a_task_through_the_proxy_on_loopback_only() {
    let codex = agent_bin(CODEX, "codex");
    let run = run("codex.sh", &codex);
    // `codex exec` prints the model's last message on stdout.
    assert!(!run.out.trim().is_empty(), "no answer from codex");
    assert_counted(&run.metrics, "responses");
}
