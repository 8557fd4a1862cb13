//! The official `openai` Python SDK through the proxy, installed (with the `anthropic` SDK,
//! which `messages.rs` runs) into a virtualenv under the target directory on first run (PyPI
//! is the only network it needs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// The test virtualenv's python, with the SDKs (and `kubernetes-validate`, which
/// `deploy.rs` runs) installed on first use.
pub fn venv_python() -> PathBuf {
    // The SDK tests run in parallel; on a fresh checkout only one may build the virtualenv.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = venv.join("bin").join("python");
    let has_sdks = |py: &Path| {
        Command::new(py)
            .args(["-c", "import openai, anthropic, kubernetes_validate"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_sdks(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed (install python3-venv)"
        );
        let installed = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "openai>=1.40",
                "anthropic>=0.40",
                "kubernetes-validate>=1.30",
            ])
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "pip install openai anthropic kubernetes-validate failed"
        );
    }
    python
}

/// Runs one of the `tests/sdk` scripts against `proxy` and checks it passed.
pub async fn run_script(proxy: &Proxy, script: &str, env: &[(&str, &str)]) {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("THINKGATE_BASE_URL", proxy.url("/v1"))
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    run_script(&proxy, "openai_sdk.py", &[]).await;
}

/// Simulated upstreams in every format and dialect, each behind one model id.
const UPSTREAMS: [(&str, &str); 10] = [
    ("anthropic", "format = \"anthropic\""),
    ("gemini", "format = \"gemini\""),
    ("openai", "dialect = \"openai\""),
    ("vllm", "dialect = \"vllm\""),
    ("sglang", "dialect = \"sglang\""),
    ("deepseek", "dialect = \"deepseek\""),
    ("llamacpp", "dialect = \"llamacpp\""),
    ("ollama", "dialect = \"ollama\""),
    ("openrouter", "dialect = \"openrouter\""),
    ("muse-spark", "dialect = \"muse-spark\""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_against_every_upstream_format_and_dialect() {
    let mut extra = String::new();
    for (name, setting) in UPSTREAMS {
        extra.push_str(&format!(
            "[providers.up-{name}]\nkind = \"simulator\"\n{setting}\n\n\
             [models.{name}]\nprovider = \"up-{name}\"\nupstream_model = \"{name}-model\"\n\
             context_window = 100000\ncapabilities = [\"tools\", \"reasoning\"]\n\n"
        ));
    }
    // `<model>:thinking` runs under a budget below what the simulated models think (8).
    extra.push_str("[modes.thinking]\nreasoning_budget = 5\nanswer_reserve = 64\n");
    let proxy = Proxy::start(&config_text(None, &extra)).await;
    // OpenAI hides reasoning (`!`): only its count arrives.
    let models: Vec<String> = UPSTREAMS
        .iter()
        .map(|(name, _)| match *name {
            "openai" => format!("{name}!"),
            _ => name.to_string(),
        })
        .collect();
    run_script(
        &proxy,
        "upstream_formats.py",
        &[
            ("THINKGATE_MODELS", &models.join(",")),
            ("THINKGATE_BUDGET", "5"),
        ],
    )
    .await;
}

/// The response cache through the official SDKs: the script fills it, the test moves the
/// cache's clock past the TTL, and the script finds the entry gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_against_the_response_cache() {
    const ALPHA: &str = "tg-sdk-alpha-0123456789abcdef";
    const BETA: &str = "tg-sdk-beta-0123456789abcdef0";
    let text = config_text(None, "").replace("auth = \"none\"\n", "")
        + "\n[keys.alpha]\nsecret = \"${ALPHA}\"\noutput_tokens_per_day = 1000000\n\n\
           [keys.beta]\nsecret = \"${BETA}\"\n\n\
           [cache]\nenabled = true\nttl = \"10m\"\nmax_bytes = 131072\nmax_entry_bytes = 8192\n";
    let proxy = Proxy::start_with_env(&text, &[("ALPHA", ALPHA), ("BETA", BETA)]).await;
    let env = [("THINKGATE_ALPHA", ALPHA), ("THINKGATE_BETA", BETA)];
    let phase = |p: &'static str| {
        let mut all = env.to_vec();
        all.push(("THINKGATE_PHASE", p));
        all
    };
    run_script(&proxy, "cache_sdk.py", &phase("fill")).await;
    let cache = proxy.runtime.load().cache.clone().unwrap();
    cache.clock.advance(Duration::from_secs(601));
    run_script(&proxy, "cache_sdk.py", &phase("expired")).await;
}
