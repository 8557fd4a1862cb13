//! Real agent CLIs through the proxy, with every byte on loopback: Claude Code (npm's
//! `@anthropic-ai/claude-code`, installed under the target directory on first run) runs a
//! one-shot task against the demo config inside a network namespace that has only `lo`
//! (`unshare -rn`), and its tokens must be in `/metrics` under the Messages endpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn claude_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-clis");
    let bin = dir.join("node_modules/.bin/claude");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let installed = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@anthropic-ai/claude-code")
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "npm install @anthropic-ai/claude-code failed (install npm)"
        );
    }
    bin
}

#[test]
fn claude_code_runs_a_task_through_the_proxy_on_loopback_only() {
    let claude = claude_bin();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("claude-code-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("unshare")
        .args(["-rn", "bash"])
        .arg(root.join("tests/agents/claude_code.sh"))
        .env("THINKGATE_BIN", env!("CARGO_BIN_EXE_thinkgate"))
        .env("CLAUDE_BIN", &claude)
        .env("CONFIG", root.join("config/demo.toml"))
        .env("WORK", &work)
        .output()
        .expect("unshare runs (util-linux)");
    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap_or_default();
    let context = || {
        format!(
            "{}\nclaude: {}\n{}\nproxy log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read("claude.json"),
            read("claude.err"),
            read("proxy.log")
        )
    };
    assert!(out.status.success(), "{}", context());
    let result: Value = serde_json::from_str(&read("claude.json")).unwrap_or(Value::Null);
    assert_eq!(result["subtype"], "success", "{}", context());
    assert_eq!(result["is_error"], false, "{}", context());
    assert!(
        result["usage"]["output_tokens"].as_u64() > Some(0),
        "{}",
        context()
    );
    // Its requests went through the Messages endpoint, and every kind of token was counted.
    let metrics = read("metrics.txt");
    let counted = |kind: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("thinkgate_tokens_total{") && l.contains(&format!("kind=\"{kind}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let served = metrics.lines().any(|l| {
        l.starts_with("thinkgate_requests_total{")
            && l.contains("endpoint=\"messages\"")
            && l.contains("status=\"200\"")
    });
    assert!(served, "{metrics}");
    for kind in ["prompt", "output", "reasoning"] {
        assert!(counted(kind) > 0.0, "no {kind} tokens counted:\n{metrics}");
    }
    let _ = std::fs::remove_dir_all(&work);
}
