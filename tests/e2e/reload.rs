//! Hot reload under load: editing the config (by rename, as editors and Kubernetes do) or
//! SIGHUP swaps in the new routing without a restart and without failing a request; a bad
//! edit is logged with its line and key, and the running config keeps serving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use crate::support::*;

fn config(coding_policy: &str) -> String {
    config_text(
        None,
        &format!(
            r#"
[providers.s2]
kind = "simulator"

[models.alpha]
provider = "s2"
context_window = 100000
scores = {{ general = 50, coding = 80 }}

[models.beta]
provider = "s2"
context_window = 100000
scores = {{ general = 50, coding = 70 }}

[routing.policies]
coding = {coding_policy}
"#
        ),
    )
}

/// Replaces the file the way editors do: write a sibling, rename it over.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_sighup_reload_under_load_and_bad_edits_keep_the_old_config() {
    let server = Binary::spawn("reload", &config("\"best\""), &[("RUST_LOG", "info")]);
    let url = server.url("/v1/chat/completions");
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "Write a Rust function that parses a CSV line."}]}).to_string();
    let model = |url: String, body: String| async move {
        let r = call(&url, body, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.header("x-thinkgate-model").to_string()
    };
    assert_eq!(model(url.clone(), body.clone()).await, "alpha");

    // Clients keep sending throughout; none may fail.
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, body, sent, failed, stop) = (
            url.clone(),
            body.clone(),
            sent.clone(),
            failed.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = call(&url, body.clone(), &[]).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    replace(&server.config_path(), &config("[\"beta\"]"));
    server.wait_for_log("Reloaded the config.");
    assert_eq!(model(url.clone(), body.clone()).await, "beta");

    // A bad edit: logged with file, line and key; beta keeps answering.
    let bad = config("[\"beta\"]").replace("[routing]\n", "[routing]\ndefault_modle = \"x\"\n");
    replace(&server.config_path(), &bad);
    let line = server.wait_for_log("was not reloaded");
    assert!(
        line.contains("config.toml:") && line.contains("default_modle"),
        "{line}"
    );
    assert_eq!(model(url.clone(), body.clone()).await, "beta");

    // Fixed, then SIGHUP re-reads even an unchanged file.
    replace(&server.config_path(), &config("\"best\""));
    server.wait_for_log("Reloaded the config.");
    assert_eq!(model(url.clone(), body.clone()).await, "alpha");
    server.signal("HUP");
    server.wait_for_log("Received SIGHUP");
    server.wait_for_log("Reloaded the config.");

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during reloads"
    );
    let m = get(&server.url("/metrics")).await.text();
    assert!(
        m.contains("thinkgate_config_reloads_total{result=\"ok\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("thinkgate_config_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_that_disappears_keeps_the_running_config() {
    let server = Binary::spawn("reload-gone", &config("\"best\""), &[("RUST_LOG", "info")]);
    std::fs::remove_file(server.config_path()).unwrap();
    let line = server.wait_for_log("was not reloaded");
    assert!(line.contains("cannot read the config file"), "{line}");
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "Write a Rust function that parses a CSV line."}]}).to_string();
    let r = call(&server.url("/v1/chat/completions"), body, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-thinkgate-model"), "alpha");
}

#[test]
fn a_reload_keeps_the_pools_breakers_and_limits_of_what_did_not_change() {
    let base = config_text(Some("http://127.0.0.1:9"), "").replace(
        "[models.net-model]\nprovider = \"net\"",
        "[models.net-model]\nprovider = \"net\"\nrequests_per_second = 1",
    );
    let runtime = thinkgate_proxy::Runtime::build(parse_config(&base), None).unwrap();
    let before = runtime.route("net-model").unwrap().clone();
    let now = std::time::Instant::now();
    for _ in 0..3 {
        before.breaker.record(now, false);
    }
    assert!(
        before.limiter.as_ref().unwrap().check(),
        "the one request of this second"
    );
    // An edit elsewhere: the provider, its pools, the model's breaker and limiter carry over.
    let edited = base.replace("shutdown_grace = \"5s\"", "shutdown_grace = \"6s\"");
    let next = runtime.rebuild(parse_config(&edited)).unwrap();
    let after = next.route("net-model").unwrap();
    assert!(Arc::ptr_eq(&before.upstream, &after.upstream), "pools kept");
    assert_eq!(after.breaker.consecutive_failures(), 3, "breaker kept");
    assert!(
        !after.limiter.as_ref().unwrap().check(),
        "the limiter's state kept"
    );
    // Editing the provider builds it anew, with a fresh breaker.
    let moved = edited.replace("response_timeout = \"2s\"", "response_timeout = \"3s\"");
    let third = next.rebuild(parse_config(&moved)).unwrap();
    let rebuilt = third.route("net-model").unwrap();
    assert!(!Arc::ptr_eq(&after.upstream, &rebuilt.upstream));
    assert_eq!(rebuilt.breaker.consecutive_failures(), 0);
}

#[test]
fn a_simulator_provider_without_a_linked_simulator_is_unusable_not_a_crash() {
    // The proxy crate carries no simulator: a runtime built without one says so.
    let runtime =
        thinkgate_proxy::Runtime::build(parse_config(&config_text(None, "")), None).unwrap();
    let route = runtime.route("sim-model").unwrap();
    let why = route.upstream.unusable.as_deref().unwrap_or("");
    assert!(why.contains("no in-process simulator"), "{why}");
    assert!(!runtime.ready(), "readyz reports it");
}
