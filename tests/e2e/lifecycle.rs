//! Cancellation and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_a_stream_upstream() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    for (model, stats) in [("net-model", None), ("sim-model", Some(&proxy))] {
        let cancelled = || match stats {
            None => sim.stat("cancelled"),
            Some(p) => p.sim_stats()["cancelled"].as_u64().unwrap(),
        };
        let before = cancelled();
        // The upstream stalls after two tokens and would hold the request open forever.
        let resp = send(
            &proxy.url("/v1/chat/completions"),
            "POST",
            chat(model, true),
            &[("x-sim-stall-after", "2")],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.data_ref().unwrap().starts_with(b"data: "));
        drop(body);
        eventually(&format!("{model}: upstream sees the cancel"), || {
            cancelled() == before + 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_a_waiting_request_upstream() {
    let sim = SimServer::start().await;
    let proxy = Proxy::start(&config_text(Some(&sim.url()), "")).await;
    let url = proxy.url("/v1/chat/completions");
    let pending = tokio::spawn(async move {
        send(
            &url,
            "POST",
            chat("net-model", false),
            &[("x-sim-ttft-ms", "1500")],
        )
        .await
    });
    eventually("upstream got the request", || sim.stat("started") == 1).await;
    pending.abort();
    eventually("upstream sees the cancel", || sim.stat("cancelled") == 1).await;
    assert_eq!(sim.stat("completed"), 0);
}

/// Runs the real binary, starts a slow stream, sends SIGTERM mid-stream: the stream must
/// finish whole, new connections must be refused, and the process must exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let dir = std::env::temp_dir().join(format!("thinkgate-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config_text(None, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log line announcing the listener carries the port the OS chose.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut addr = String::new();
    let mut line = String::new();
    while addr.is_empty() {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before listening"
        );
        if let Some(rest) = line.split("listen=").nth(1) {
            addr = rest.split_whitespace().next().unwrap().to_string();
        }
    }
    let url = format!("http://{addr}/v1/chat/completions");
    // 30 tokens at 30 tokens/s: about a second of streaming.
    let resp = send(
        &url,
        "POST",
        chat("sim-model", true),
        &[
            ("x-sim-reasoning-tokens", "15"),
            ("x-sim-answer-tokens", "15"),
            ("x-sim-tokens-per-second", "30"),
        ],
    )
    .await;
    let mut body = resp.into_body();
    let mut seen = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once shutdown started.
    let refused = tokio::net::TcpStream::connect(&addr).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during shutdown"
    );

    while let Some(frame) = body.frame().await {
        seen.extend_from_slice(frame.unwrap().data_ref().unwrap());
    }
    let events = sse_data(&String::from_utf8(seen).unwrap());
    assert_eq!(
        events.last().unwrap(),
        "[DONE]",
        "the in-flight stream was cut"
    );
    assert_eq!(events.len(), 1 + 30 + 1 + 1);
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the binary with JSON logs and a provider key set to a sentinel: the logs are JSON
/// lines carrying the request id, and the key appears in no log line, error or `check` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_never_a_secret() {
    const SECRET: &str = "sk-sentinel-4f1c9a7e";
    let dir = std::env::temp_dir().join(format!("thinkgate-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        config_text(
            None,
            r#"
[providers.vendor]
kind = "openai-compatible"
base_url = "http://127.0.0.1:9/v1"
api_key = "${THINKGATE_TEST_SECRET}"
[models.vendor-model]
provider = "vendor"
context_window = 1000
"#,
        )
        .replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nlog_format = \"json\"\nlog_level = \"debug\"",
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(["check", "--config", cfg.to_str().unwrap()])
        .env("THINKGATE_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check_out}");
    assert!(
        check_out.contains("THINKGATE_TEST_SECRET: set"),
        "{check_out}"
    );
    assert!(!check_out.contains(SECRET));

    let mut child = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("THINKGATE_TEST_SECRET", SECRET)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let mut logs = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server logs its address");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        logs.push(line);
        if let Some(listen) = v["listen"].as_str() {
            break listen.to_string();
        }
    };
    let url = format!("http://{addr}/v1/chat/completions");
    let bad = call(
        &url,
        chat("vendor-model", false),
        &[("x-request-id", "req-secret-test")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
    assert!(!bad.text().contains(SECRET));
    let ok = call(
        &url,
        chat("sim-model", false),
        &[("x-request-id", "req-ok-test")],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    logs.extend(lines_rx.try_iter());
    let all = logs.join("\n");
    assert!(!all.contains(SECRET), "a secret reached the logs");
    let finished: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every log line is JSON"))
        .filter(|v| v["message"] == "Request finished.")
        .collect();
    assert!(
        finished
            .iter()
            .any(|v| v["request_id"] == "req-ok-test" && v["model"] == "sim-model"),
        "{all}"
    );
    assert!(
        all.contains("req-secret-test"),
        "the failed request is logged with its id: {all}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
