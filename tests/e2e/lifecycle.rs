//! Cancellation and graceful shutdown.

use std::process::Command;
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
    let server = Binary::spawn("shutdown", &config_text(None, ""), &[("RUST_LOG", "info")]);
    // 30 tokens at 30 tokens/s: about a second of streaming.
    let slow = [
        ("x-sim-reasoning-tokens", "15"),
        ("x-sim-answer-tokens", "15"),
        ("x-sim-tokens-per-second", "30"),
    ];
    let resp = send(
        &server.url("/v1/chat/completions"),
        "POST",
        chat("sim-model", true),
        &slow,
    )
    .await;
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let mut seen = first.into_data().unwrap().to_vec();

    server.sigterm();
    // The server logs this once it has closed its listener.
    loop {
        let line = server
            .logs
            .recv_timeout(Duration::from_secs(10))
            .expect("the server says it stopped accepting");
        if line.contains("no longer accepting") {
            break;
        }
    }
    let refused = tokio::net::TcpStream::connect(&server.addr).await;
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
    assert_eq!(server.exit_code().await, Some(0));
}

/// Runs the binary with JSON logs and a provider key set to a sentinel: the logs are JSON
/// lines carrying the request id, and the key appears in no log line, error or `check` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_never_a_secret() {
    const SECRET: &str = "sk-sentinel-4f1c9a7e";
    let config = config_text(
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
    );
    let server = Binary::spawn("secrets", &config, &[("THINKGATE_TEST_SECRET", SECRET)]);

    let cfg_path =
        std::env::temp_dir().join(format!("thinkgate-check-{}.toml", std::process::id()));
    std::fs::write(&cfg_path, &config).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(["check", "--config", cfg_path.to_str().unwrap()])
        .env("THINKGATE_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&cfg_path);
    let check_out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check_out}");
    assert!(
        check_out.contains("THINKGATE_TEST_SECRET: set"),
        "{check_out}"
    );
    assert!(!check_out.contains(SECRET));

    let url = server.url("/v1/chat/completions");
    let bad = call(
        &url,
        chat("vendor-model", false),
        &[
            ("x-request-id", "req-secret-test"),
            ("traceparent", TRACEPARENT),
        ],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_GATEWAY);
    assert!(!bad.text().contains(SECRET));
    let ok = call(
        &url,
        chat("sim-model", false),
        &[
            ("x-request-id", "req-ok-test"),
            ("traceparent", TRACEPARENT),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);

    server.sigterm();
    let mut logs = server.startup.clone();
    let rest: Vec<String> = {
        let rx = &server.logs;
        let mut v = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
            v.push(line);
        }
        v
    };
    logs.extend(rest);
    assert_eq!(server.exit_code().await, Some(0));
    let all = logs.join("\n");
    assert!(!all.contains(SECRET), "a secret reached the logs");
    let parsed: Vec<serde_json::Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    // The request and trace ids once per line: in the request's span, or (a stream's end,
    // after the span) on the line itself; never both.
    let once = |v: &serde_json::Value, key: &str| match (&v[key], &v["span"][key]) {
        (serde_json::Value::Null, id) | (id, serde_json::Value::Null) => {
            id.as_str().map(str::to_string)
        }
        _ => panic!("the {key} twice on one line: {v}"),
    };
    let id_of = |v: &serde_json::Value| once(v, "request_id");
    let finished = |id: &str| {
        parsed.iter().any(|v| {
            v["message"] == "Request finished."
                && id_of(v).as_deref() == Some(id)
                && v["kind"] == "request"
                && v["api"] == "chat_completions"
                && v["status"] == 200
                && v["output_tokens"].is_u64()
                && once(v, "trace_id").as_deref() == Some("4bf92f3577b34da6a3ce929d0e0e4736")
        })
    };
    assert!(finished("req-ok-test"), "{all}");
    // Every line of a request names its trace, not only the access line.
    let failed: Vec<_> = parsed
        .iter()
        .filter(|v| id_of(v).as_deref() == Some("req-secret-test"))
        .collect();
    assert!(failed.len() >= 2, "the failure and the access line: {all}");
    for v in failed {
        assert_eq!(
            once(v, "trace_id").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{v}"
        );
    }
    assert!(
        parsed.iter().all(|v| v.get("spans").is_none()),
        "no span lists: {all}"
    );
    assert!(
        all.contains("req-secret-test"),
        "the failed request is logged with its id: {all}"
    );
}

#[test]
fn human_logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("thinkgate-colour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config_text(None, "")).unwrap();
    // NO_COLOR unset: only the pipe says there is no terminal.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let serving = line.contains("is serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(seen.iter().any(|l| l.contains("WARN")), "{seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in a pipe: {seen:?}"
    );
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A one-shot upstream on loopback that answers a fixed completion and hands back the
/// request head it read.
async fn capturing_upstream() -> (String, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).await.unwrap();
        let _ = tx.send(String::from_utf8_lossy(&buf).to_lowercase());
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_trace_context_goes_upstream_and_an_invalid_one_does_not() {
    for (parent, forwarded) in [(TRACEPARENT, true), ("00-not-a-trace-01", false)] {
        let (upstream, head) = capturing_upstream().await;
        let proxy = Proxy::start(&config_text(Some(&upstream), "")).await;
        let headers = [("traceparent", parent), ("tracestate", "vendor=abc")];
        let r = call(
            &proxy.url("/v1/chat/completions"),
            chat("net-model", false),
            &headers,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let head = head.await.unwrap();
        assert_eq!(
            head.contains(&format!("traceparent: {parent}")),
            forwarded,
            "{head}"
        );
        assert_eq!(head.contains("tracestate: vendor=abc"), forwarded, "{head}");
    }
}
