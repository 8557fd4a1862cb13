//! The official `openai` Python SDK through the proxy, installed into a virtualenv under the
//! target directory on first run (PyPI is the only network it needs).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn venv_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = venv.join("bin").join("python");
    let has_openai = |py: &Path| {
        Command::new(py)
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_openai(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed (install python3-venv)"
        );
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "openai>=1.40"])
            .status();
        assert!(
            installed.is_ok_and(|s| s.success()),
            "pip install openai failed"
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let proxy = Proxy::start(&config_text(None, "")).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_sdk.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("THINKGATE_BASE_URL", proxy.url("/v1"))
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
