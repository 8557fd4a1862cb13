//! The fault soak: many clients, streamed and whole, against two simulator processes that
//! fail on purpose (503s, 429s with `Retry-After`, resets mid-stream, stalls, slow starts)
//! and one of which is killed and restarted, in front of the real `thinkgate serve` binary.
//!
//! Every answer must be whole or an OpenAI-shaped error: a stream that did not finish ends
//! with an error event, never `[DONE]`. Retries stay inside the budget, nothing stays in
//! flight, and the proxy's memory does not grow from round to round. Bounded: about half a
//! minute on two cores.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::support::*;

const CLIENTS: usize = 12;
const PER_CLIENT: usize = 30;
const ROUNDS: usize = 3;

/// A `thinkgate simulate` process on a fixed loopback port (so it can be restarted there).
struct SimProcess {
    child: Child,
    port: u16,
    config: std::path::PathBuf,
}

impl SimProcess {
    fn start(port: u16, config: &std::path::Path) -> SimProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_thinkgate"))
            .args(["simulate", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--config", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the simulator listens on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        SimProcess {
            child,
            port,
            config: config.to_path_buf(),
        }
    }

    /// SIGKILL: connections in flight are cut, as when a pod dies.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        *self = SimProcess::start(self.port, &self.config.clone());
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A deterministic draw per request, so a failing soak can be replayed.
fn draw(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// The faults one request asks the simulator for.
fn faults(n: u64) -> Vec<(&'static str, &'static str)> {
    match draw(n) % 20 {
        0..=10 => vec![],
        // Fails on every deployment and every try: the client gets the 503.
        11 => vec![("x-sim-status", "503")],
        // Fails once per simulator: a retry or the other deployment answers.
        12 | 13 => vec![("x-sim-fail-first", "1")],
        14 => vec![
            ("x-sim-fail-first", "1"),
            ("x-sim-status", "429"),
            ("x-sim-retry-after", "0"),
        ],
        15 | 16 => vec![("x-sim-reset-after", "3")],
        17 => vec![("x-sim-stall-after", "3")],
        _ => vec![("x-sim-ttft-ms", "150")],
    }
}

#[derive(Default)]
struct Tally {
    whole_ok: AtomicUsize,
    stream_ok: AtomicUsize,
    stream_error_event: AtomicUsize,
    error_status: AtomicUsize,
    /// Error answers by status and code, for the summary line.
    error_codes: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    violations: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

/// Sends one request and checks that its answer is whole or a clear error.
async fn one(url: &str, n: u64, tally: &Tally) {
    let stream = draw(n ^ 0xabc).is_multiple_of(2);
    let body = json!({
        "model": "m",
        "stream": stream,
        "messages": [{"role": "user", "content": format!("request {n}")}],
    })
    .to_string();
    let headers = faults(n);
    let resp = send(url, "POST", body, &headers).await;
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return tally.violation(format!("request {n} ({headers:?}): the body was cut: {e}"))
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    if status != StatusCode::OK {
        let error = serde_json::from_slice::<Value>(&bytes).ok();
        let shaped = error
            .as_ref()
            .is_some_and(|v| v["error"]["message"].is_string() && v["error"].get("type").is_some());
        if !shaped {
            tally.violation(format!(
                "request {n}: {status} without an OpenAI error: {text}"
            ));
        }
        let code = error.map_or(Value::Null, |v| v["error"]["code"].clone());
        *tally
            .error_codes
            .lock()
            .unwrap()
            .entry(format!("{} {code}", status.as_u16()))
            .or_default() += 1;
        tally.error_status.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if !stream {
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                return tally.violation(format!("request {n}: a 200 that is not JSON: {text}"))
            }
        };
        let finished = v["choices"][0]["finish_reason"].is_string()
            && v["choices"][0]["message"]["content"].is_string()
            && v["usage"]["total_tokens"].is_u64();
        if !finished {
            tally.violation(format!("request {n}: an incomplete whole answer: {text}"));
        }
        tally.whole_ok.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let events = sse_data(&text);
    let done = events.last().is_some_and(|e| e == "[DONE]");
    let finish = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .any(|c| c["choices"][0]["finish_reason"].is_string());
    let errored = events
        .last()
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
        .is_some_and(|v| v["error"]["message"].is_string());
    match (done, finish, errored) {
        (true, true, false) => {
            tally.stream_ok.fetch_add(1, Ordering::Relaxed);
        }
        (false, _, true) => {
            tally.stream_error_event.fetch_add(1, Ordering::Relaxed);
        }
        _ => tally.violation(format!(
            "request {n} ({headers:?}): a stream neither whole nor ended by an error (done {done}, finish {finish}): {text}"
        )),
    }
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_every_answer_is_whole_or_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("thinkgate-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim_config = dir.join("sim.toml");
    std::fs::write(
        &sim_config,
        "auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.s]\nkind = \"simulator\"\n\
         [models.m]\nprovider = \"s\"\ncontext_window = 1000\n[simulator.default]\nreasoning_tokens = 8\nanswer_tokens = 8\n",
    )
    .unwrap();
    let mut a = SimProcess::start(free_port(), &sim_config);
    let b = SimProcess::start(free_port(), &sim_config);
    // The faults are asked for per request, so breakers trip only on what no request asks
    // for: a dead deployment (connections refused in a row).
    let provider = |name: &str, port: u16| {
        format!(
            "[providers.{name}]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
             forward_headers = [\"x-sim-*\"]\nconnect_timeout = \"500ms\"\nresponse_timeout = \"2s\"\nstream_idle_timeout = \"500ms\"\n\
             [providers.{name}.breaker]\nconsecutive_failures = 10\nfailure_rate = 0.9\nmin_calls = 50\nopen_for = \"500ms\"\n"
        )
    };
    let config = format!(
        "auth = \"none\"\n[server]\nlisten = \"127.0.0.1:0\"\n[routing]\ndefault_model = \"m\"\n\
         {}{}[models.m]\ncontext_window = 100000\ndeployments = [{{ provider = \"a\" }}, {{ provider = \"b\" }}]\n",
        provider("a", a.port),
        provider("b", b.port),
    );
    let proxy = Binary::spawn("soak", &config, &[]);
    let url = Arc::new(proxy.url("/v1/chat/completions"));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut resident = Vec::new();
    for round in 0..ROUNDS {
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (url, tally) = (url.clone(), tally.clone());
            clients.push(tokio::spawn(async move {
                for i in 0..PER_CLIENT {
                    let n = ((round * CLIENTS + c) * PER_CLIENT + i) as u64;
                    one(&url, n, &tally).await;
                }
            }));
        }
        if round == 1 {
            // One deployment dies mid-round and comes back a second later.
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            a.restart();
        }
        for client in clients {
            client.await.unwrap();
        }
        resident.push(resident_kib(proxy.child.id()));
    }
    let elapsed = started.elapsed();

    let violations = tally.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "{} of {} answers broke the rule:\n{}",
        violations.len(),
        CLIENTS * PER_CLIENT * ROUNDS,
        violations
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (whole, streams, cut, errors) = (
        tally.whole_ok.load(Ordering::Relaxed),
        tally.stream_ok.load(Ordering::Relaxed),
        tally.stream_error_event.load(Ordering::Relaxed),
        tally.error_status.load(Ordering::Relaxed),
    );
    let codes = tally.error_codes.lock().unwrap().clone();
    eprintln!("soak: {whole} whole, {streams} streams, {cut} streams ended by an error event, {errors} error statuses {codes:?} in {elapsed:?}; resident KiB by round {resident:?}");
    assert_eq!(
        whole + streams + cut + errors,
        CLIENTS * PER_CLIENT * ROUNDS
    );
    assert!(
        whole > 0 && streams > 0 && cut > 0 && errors > 0,
        "every kind of outcome happened"
    );

    // Nothing stays in flight once the last answer is read (its account records at the end).
    let mut text = String::new();
    for _ in 0..100 {
        text = get(&proxy.url("/metrics")).await.text();
        if series(&text, "thinkgate_in_flight_requests", &[]) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        series(&text, "thinkgate_in_flight_requests", &[]),
        0.0,
        "{text}"
    );
    // Retries within the budget: 20 % of first tries, plus the floor of 5 a second per
    // provider over the run and its 10 s window.
    let retries = series(&text, "thinkgate_upstream_retries_total", &[]);
    let calls = series(&text, "thinkgate_upstream_requests_total", &[]);
    let floor = 2.0 * 5.0 * (elapsed.as_secs_f64() + 10.0);
    assert!(retries > 0.0, "the faults were retried");
    assert!(
        retries <= 0.2 * (calls - retries) + floor,
        "{retries} retries for {calls} calls"
    );
    // Memory settles after the first round: later rounds of the same traffic add little.
    let growth = resident[ROUNDS - 1].saturating_sub(resident[0]);
    assert!(
        growth < 16 * 1024,
        "resident memory grew {growth} KiB: {resident:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
