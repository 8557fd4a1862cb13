//! The holes a review found, each proven closed: addresses and secrets that configs and flags
//! could slip past the checks, credentials forwarded upstream, slow and lying clients,
//! budgets at their edges, and responses the proxy cannot vouch for.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

#[test]
fn listen_from_the_command_line_meets_the_loopback_rule() {
    // auth = "none" may only listen on loopback; the flag must not get around that.
    let path = write_config("listen", &config_text(None, ""));
    let out = run_binary(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("server.listen") && stderr.contains("(from --listen)"),
        "{stderr}"
    );
}

#[test]
fn a_client_key_whose_variable_is_unset_is_a_config_error_and_check_lists_keys() {
    let text = config_text(None, "").replace("auth = \"none\"\n", "")
        + "\n[keys.team-a]\nsecret = \"${TG_HARDENING_KEY}\"\nrequests_per_minute = 60\n";
    let path = write_config("keys", &text);
    let out = run_binary(&["check", "--config", path.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("keys.team-a.secret") && stderr.contains("TG_HARDENING_KEY is not set"),
        "{stderr}"
    );
    let secret = "tg-hardening-secret-value";
    let out = run_binary(
        &["check", "--config", path.to_str().unwrap()],
        &[("TG_HARDENING_KEY", secret)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("client keys (1):"), "{stdout}");
    assert!(
        stdout.contains("team-a") && stdout.contains("rpm 60"),
        "{stdout}"
    );
    assert!(!stdout.contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_pattern_never_forwards_the_clients_credentials() {
    let (url, mut heads) = fixed_upstream(json_200(&completion("hi"))).await;
    let secret = "tg-client-secret-0123456789";
    let text = config_text(None, "").replace("auth = \"none\"\n", "")
        + &format!(
            "\n[keys.k]\nsecret = \"${{TG_FWD_KEY}}\"\n\n[providers.rec]\nkind = \"openai-compatible\"\nbase_url = \"{url}\"\nforward_headers = [\"x-*\", \"a*\", \"c*\", \"p*\"]\n\n[models.rec-model]\nprovider = \"rec\"\ncontext_window = 1000\n"
        );
    let proxy = Proxy::start_with_env(&text, &[("TG_FWD_KEY", secret)]).await;
    let auth = format!("Bearer {secret}");
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("rec-model", false),
        &[
            ("authorization", &auth),
            ("x-api-key", secret),
            ("api-key", secret),
            ("cookie", "session=tg-cookie"),
            ("proxy-authorization", secret),
            ("x-team", "search"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let head = heads.recv().await.unwrap().to_lowercase();
    assert!(head.contains("x-team: search"), "{head}");
    assert!(
        !head.contains(secret),
        "the client's key went upstream: {head}"
    );
    assert!(!head.contains("tg-cookie"), "{head}");
}

/// Sends a raw HTTP/1.1 request head and part of a body, then reads what comes back.
async fn raw_exchange(addr: &str, head: &str, body: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_short_body_gets_a_408_in_openais_shape() {
    let text = config_text(None, "").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nbody_read_timeout = \"300ms\"",
    );
    let proxy = Proxy::start(&text).await;
    let addr = proxy.addr.to_string();
    // Content-Length says 200 bytes; 20 arrive and the client goes quiet.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n"
    );
    let started = std::time::Instant::now();
    let out = raw_exchange(
        &addr,
        &head,
        b"{\"model\": \"sim-model",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("\"code\":\"request_timeout\""), "{out}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_token_cap_is_a_clean_answer_not_a_panic() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let url = proxy.url("/v1/chat/completions");
    for (model, stream) in [
        ("sim-model:thinking", false),
        ("sim-model:thinking", true),
        ("sim-model:instant", false),
    ] {
        let body = serde_json::json!({
            "model": model, "stream": stream, "max_tokens": 1,
            "messages": [{"role": "user", "content": "What is two plus two?"}]
        });
        let r = call(&url, body.to_string(), &[]).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
            "{model} stream={stream}: {} {}",
            r.status,
            r.text()
        );
    }
    // The proxy is still serving.
    let r = call(&url, chat("sim-model", false), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[test]
fn zero_and_overlong_durations_are_config_errors() {
    for (key, value, why) in [
        ("request_timeout", "0s", "longer than zero"),
        ("body_read_timeout", "0ms", "longer than zero"),
        ("request_timeout", "400days", "365 days"),
    ] {
        let text = config_text(None, "").replace(
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"5s\"\n{key} = \"{value}\""),
        );
        let err = thinkgate_config::Config::parse(&text, std::path::Path::new("t.toml"), &|_| None)
            .unwrap_err();
        assert_eq!(err.key().unwrap().to_string(), format!("server.{key}"));
        assert!(err.message().contains(why), "{err}");
        assert!(err.line() > 0);
    }
    let text = config_text(None, "") + "\n[contemplating]\ndeadline = \"100000000000s\"\n";
    let err = thinkgate_config::Config::parse(&text, std::path::Path::new("t.toml"), &|_| None)
        .unwrap_err();
    assert_eq!(err.key().unwrap().to_string(), "contemplating.deadline");
}

/// An upstream on loopback that answers every connection with `response` (head and body as
/// raw bytes), then closes it; each request head it read comes out of the receiver.
async fn fixed_upstream(
    response: Vec<u8>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (heads_tx, heads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (response, heads_tx) = (response.clone(), heads_tx.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = heads_tx.send(String::from_utf8_lossy(&head).into_owned());
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, heads)
}

/// A chat completion whose answer is `content`.
fn completion(content: &str) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    })
    .to_string()
}

/// A 200 with a JSON body, as raw HTTP/1.1.
fn json_200(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Asks `model` (whole or streamed) and expects a 502 whose message says `why`.
async fn expect_502(proxy: &Proxy, model: &str, stream: bool, why: &str) {
    let r = call(&proxy.url("/v1/chat/completions"), chat(model, stream), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let message = r.error()["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains(why), "{}", r.text());
}

fn with_upstream(url: &str, server_extra: &str) -> String {
    config_text(None, "").replace(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\n{server_extra}"),
    ) + &format!(
        "\n[providers.fixed]\nkind = \"openai-compatible\"\nbase_url = \"{url}\"\n\n[models.fixed-model]\nprovider = \"fixed\"\ncontext_window = 100000\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_event_that_never_ends_is_cut_at_the_event_cap() {
    // One `data:` line of 64 KiB that never gets its blank line.
    let mut response =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {\"x\":\"".to_vec();
    response.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let (url, _) = fixed_upstream(response).await;
    let proxy = Proxy::start(&with_upstream(&url, "max_event_bytes = 4096")).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("fixed-model", true),
        &[],
    )
    .await;
    let s = r.streamed();
    assert!(!s.done);
    let last = s.chunks.last().expect("an error event");
    assert_eq!(last["error"]["code"], "upstream_stream_broken", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096 bytes"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_response_over_the_cap_is_a_502_not_an_oom() {
    let (url, _) = fixed_upstream(json_200(&completion(&"b".repeat(8 * 1024)))).await;
    let proxy = Proxy::start(&with_upstream(&url, "max_response_bytes = 4096")).await;
    expect_502(&proxy, "fixed-model", false, "4096 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_to_a_streaming_request_is_an_error_not_a_silent_json_body() {
    let (url, _) = fixed_upstream(json_200(&completion("hi"))).await;
    let proxy = Proxy::start(&with_upstream(&url, "")).await;
    expect_502(&proxy, "fixed-model", true, "instead of an event stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_or_proxy_at_its_concurrency_cap_answers_503_and_frees_the_slot() {
    let provider_cap = config_text(None, "").replace(
        "[providers.sim]\nkind = \"simulator\"",
        "[providers.sim]\nkind = \"simulator\"\nmax_concurrent_calls = 1\nresponse_timeout = \"300ms\"\nforward_headers = [\"x-sim-*\"]",
    );
    let proxy_cap = config_text(None, "")
        .replace(
            "[providers.sim]\nkind = \"simulator\"",
            "[providers.sim]\nkind = \"simulator\"\nresponse_timeout = \"300ms\"\nforward_headers = [\"x-sim-*\"]",
        )
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"5s\"\nmax_upstream_calls = 1");
    for (text, which) in [
        (provider_cap, "max_concurrent_calls"),
        (proxy_cap, "max_upstream_calls"),
    ] {
        let proxy = Proxy::start(&text).await;
        let url = proxy.url("/v1/chat/completions");
        // A slow stream holds the one slot for about a second.
        let slow = {
            let url = url.clone();
            tokio::spawn(async move {
                call(
                    &url,
                    chat("sim-model", true),
                    &[("x-sim-tokens-per-second", "12")],
                )
                .await
            })
        };
        eventually("the slow stream has reached the upstream", || {
            proxy.sim_stats()["started"].as_u64() >= Some(1)
        })
        .await;
        let r = call(&url, chat("sim-model", false), &[]).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{which}: {}",
            r.text()
        );
        assert_eq!(r.error()["code"], "upstream_overloaded");
        assert!(
            r.error()["message"].as_str().unwrap().contains(which),
            "{}",
            r.text()
        );
        assert_eq!(r.header("retry-after"), "1");
        assert!(slow.await.unwrap().streamed().done);
        // The slot is free once the stream has ended.
        let r = call(&url, chat("sim-model", false), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{which}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_answer_over_the_response_cap_is_a_502() {
    // A reasoning model under a budget is always streamed and collected by the guard for a
    // whole response; what it collects is bounded too.
    let mut sse = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
    );
    let piece = "c".repeat(1000);
    for _ in 0..10 {
        sse.push_str(&format!(
            "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n"
        ));
    }
    sse.push_str("data: [DONE]\n\n");
    let (url, _) = fixed_upstream(sse.into_bytes()).await;
    let text = with_upstream(&url, "max_response_bytes = 4096").replace(
        "[models.fixed-model]\nprovider = \"fixed\"",
        "[models.fixed-model]\nprovider = \"fixed\"\ncapabilities = [\"reasoning\"]",
    ) + "\n[modes]\ndefault = \"thinking\"\n";
    let proxy = Proxy::start(&text).await;
    expect_502(&proxy, "fixed-model", false, "4096 bytes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_at_the_idle_timeout() {
    let text = config_text(None, "").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nidle_timeout = \"300ms\"",
    );
    let proxy = Proxy::start(&text).await;
    let addr = proxy.addr.to_string();
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "a silent connection is closed: {closed:?}"
    );
    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    idle.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "an idle keep-alive connection is closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_a_431_in_openais_shape() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let addr = proxy.addr.to_string();
    let mut head =
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n");
    for i in 0..200 {
        head.push_str(&format!("x-filler-{i}: v\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    let out = raw_exchange(&addr, &head, b"", Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(
        out.contains("\"code\":\"request_header_fields_too_large\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_provider_answering_with_other_json_is_a_502_not_an_empty_200() {
    let (url, _) = fixed_upstream(json_200(r#"{"status":"ok","result":{"text":"hello"}}"#)).await;
    let text = config_text(None, "")
        + &format!("\n[providers.ant]\nkind = \"anthropic\"\nbase_url = \"{url}\"\n\n[models.ant-model]\nprovider = \"ant\"\ncontext_window = 100000\n");
    let proxy = Proxy::start(&text).await;
    expect_502(&proxy, "ant-model", false, "not an Anthropic message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_a_400_in_openais_shape() {
    let proxy = Proxy::start(&config_text(None, "")).await;
    let addr = proxy.addr.to_string();
    let duplicate = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
    );
    for head in ["NOT HTTP AT ALL\r\n\r\n", duplicate.as_str()] {
        let out = raw_exchange(&addr, head, b"", Duration::from_secs(3)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        let (_, body) = out.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["error"]["code"], "malformed_http", "{out}");
    }
}

/// `thinkgate check | head -1`: a reader that leaves early ends the command quietly, as Unix
/// tools do, not with a panic.
#[test]
fn a_closed_output_pipe_ends_a_command_without_a_panic() {
    let path = write_config("closed-pipe", &config_text(None, ""));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thinkgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the command writes its first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
