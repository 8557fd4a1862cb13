//! OpenTelemetry export, end to end: a real OTLP/HTTP receiver on loopback decodes what the
//! proxy sends with the `opentelemetry-proto` types, and the span tree, the GenAI
//! attributes and the metric instruments are checked against what the client received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

use crate::support::*;

/// How the receiver answers.
#[derive(Clone, Copy)]
enum Behaviour {
    Accept,
    /// Answers only after this long.
    Slow(Duration),
}

/// An OTLP/HTTP (protobuf) receiver: `/v1/traces` and `/v1/metrics`.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    headers: Arc<Mutex<Option<HeaderMap>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(None));
        let (s, m, h) = (spans.clone(), metrics.clone(), headers.clone());
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let (s, m, h) = (s.clone(), m.clone(), h.clone());
            async move {
                let (parts, body) = req.into_parts();
                let bytes: Bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                if let Behaviour::Slow(wait) = behaviour {
                    tokio::time::sleep(wait).await;
                }
                let content_type = parts.headers.get("content-type").cloned();
                *h.lock().unwrap() = Some(parts.headers);
                assert_eq!(
                    content_type.as_ref().and_then(|v| v.to_str().ok()),
                    Some("application/x-protobuf")
                );
                match parts.uri.path() {
                    "/v1/traces" => {
                        let req = ExportTraceServiceRequest::decode(bytes).expect("OTLP traces");
                        for rs in req.resource_spans {
                            let service = rs.resource.as_ref().and_then(|r| {
                                r.attributes.iter().find(|kv| kv.key == "service.name")
                            });
                            assert!(service.is_some(), "a resource names its service");
                            for ss in rs.scope_spans {
                                s.lock().unwrap().extend(ss.spans);
                            }
                        }
                    }
                    "/v1/metrics" => {
                        let req = ExportMetricsServiceRequest::decode(bytes).expect("OTLP metrics");
                        m.lock().unwrap().push(req);
                    }
                    other => panic!("unexpected OTLP path {other}"),
                }
                let mut resp = Response::new(thinkgate_proxy::body::full(Bytes::new()));
                *resp.status_mut() = StatusCode::OK;
                resp.headers_mut().insert(
                    "content-type",
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limit = thinkgate_proxy::http::ConnectionLimit::new(100);
        tokio::spawn(thinkgate_proxy::http::serve(
            listener,
            service,
            limit,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        Receiver {
            url: format!("http://{addr}"),
            spans,
            metrics,
            headers,
            _stop: stop,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `n` spans have arrived, and returns them.
    async fn wait_for(&self, n: usize) -> Vec<Span> {
        let what = format!("{n} spans at the receiver");
        eventually(&what, || self.spans.lock().unwrap().len() >= n).await;
        // Let a straggler of the same batch land too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.spans()
    }
}

fn telemetry(url: &str, extra: &str) -> String {
    format!("\n[telemetry]\nendpoint = \"{url}\"\n{extra}\n")
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("{}: `{key}` is {other:?}, not text", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Any::IntValue(n)) => *n,
        other => panic!("{}: `{key}` is {other:?}, not a whole number", span.name),
    }
}

fn strings(span: &Span, key: &str) -> Vec<String> {
    match attr(span, key) {
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Any::StringValue(s)) => s.clone(),
                other => panic!("{key} holds {other:?}"),
            })
            .collect(),
        other => panic!("{}: `{key}` is {other:?}, not an array", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans whose parent is `parent`.
fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

fn server_span(spans: &[Span]) -> &Span {
    let server = opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32;
    let found: Vec<&Span> = spans.iter().filter(|s| s.kind == server).collect();
    assert_eq!(found.len(), 1, "one server span: {:?}", names(spans));
    found[0]
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_plain_request_is_a_server_span_over_a_client_span_with_the_genai_attributes() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let proxy = Proxy::start(&config_text(None, &telemetry(&otlp.url, ""))).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let body = json!({"model": "sim-model", "max_tokens": 300,
        "messages": [{"role": "user", "content": "secret prompt text"}]});
    let r = call(
        &proxy.url("/v1/chat/completions"),
        body.to_string(),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let usage = r.json()["usage"].clone();
    let spans = otlp.wait_for(2).await;
    assert_eq!(spans.len(), 2, "{:?}", names(&spans));
    let server = server_span(&spans);
    // The client's trace goes on: same trace id, the client's span as the parent.
    assert_eq!(hex(&server.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.name, "chat sim-model");
    assert_eq!(text(server, "gen_ai.operation.name"), "chat");
    assert_eq!(text(server, "gen_ai.request.model"), "sim-model");
    assert_eq!(int(server, "gen_ai.request.max_tokens"), 300);
    assert_eq!(text(server, "gen_ai.response.model"), "upstream-sim-model");
    assert_eq!(text(server, "gen_ai.provider.name"), "thinkgate.simulator");
    assert_eq!(text(server, "thinkgate.provider"), "sim");
    assert_eq!(int(server, "http.response.status_code"), 200);
    assert_eq!(
        text(server, "thinkgate.request_id"),
        r.header("x-request-id")
    );
    assert_eq!(strings(server, "gen_ai.response.finish_reasons"), ["stop"]);
    // Token attributes are the usage the client received.
    assert_eq!(
        int(server, "gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        int(server, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    let reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        .as_i64()
        .unwrap();
    assert_eq!(
        int(server, "gen_ai.usage.reasoning.output_tokens"),
        reasoning
    );
    // Content stays out unless the config opts in.
    assert!(attr(server, "gen_ai.input.messages").is_none());
    let call_spans = children(&spans, server);
    assert_eq!(call_spans.len(), 1);
    let upstream = call_spans[0];
    assert_eq!(
        upstream.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32
    );
    assert_eq!(upstream.name, "chat upstream-sim-model");
    assert_eq!(text(upstream, "gen_ai.request.model"), "upstream-sim-model");
    assert_eq!(int(upstream, "thinkgate.attempt"), 1);
    assert_eq!(
        int(upstream, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    // The call ends inside the request.
    assert!(upstream.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(upstream.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(
        series(
            &metrics_text(&proxy).await,
            "thinkgate_telemetry_spans_total",
            &[("outcome", "exported")]
        ),
        2.0
    );
}

/// A proxy whose model `fixed-model` is an OpenAI-compatible upstream on loopback that
/// answers every call with one fixed completion (and keeps the request it got).
async fn behind_fixed_upstream(telemetry: &str) -> (FixedUpstream, Proxy) {
    let upstream = FixedUpstream::start(
        "application/json",
        r#"{"id":"c1","object":"chat.completion","created":1,"model":"fixed","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
    )
    .await;
    let extra = format!(
        "[providers.fixed]\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\n\n[models.fixed-model]\nprovider = \"fixed\"\ncontext_window = 1000\n{telemetry}",
        upstream.url(),
    );
    let proxy = Proxy::start(&config_text(None, &extra)).await;
    (upstream, proxy)
}

async fn metrics_text(proxy: &Proxy) -> String {
    get(&proxy.url("/metrics")).await.text()
}

#[tokio::test]
async fn the_upstream_gets_the_call_span_as_its_parent() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let (upstream, proxy) = behind_fixed_upstream(&telemetry(&otlp.url, "")).await;
    // No traceparent from the client: the proxy starts the trace.
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("fixed-model", false),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = otlp.wait_for(2).await;
    let server = server_span(&spans);
    assert!(
        server.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    let call_span = children(&spans, server)[0];
    let (_, headers, _) = upstream.last();
    let sent = headers["traceparent"].to_str().unwrap();
    assert_eq!(
        sent,
        format!(
            "00-{}-{}-01",
            hex(&server.trace_id),
            hex(&call_span.span_id)
        )
    );
    assert_eq!(text(call_span, "gen_ai.provider.name"), "fixed");
    assert_eq!(int(call_span, "gen_ai.usage.input_tokens"), 5);
}

#[tokio::test]
async fn a_streamed_request_carries_the_streams_usage() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let proxy = Proxy::start(&config_text(None, &telemetry(&otlp.url, ""))).await;
    let body = json!({"model": "sim-model", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "stream please"}]});
    let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
    assert_eq!(r.status, 200);
    let streamed = r.streamed();
    let usage = streamed.usage().clone();
    let spans = otlp.wait_for(2).await;
    let server = server_span(&spans);
    assert_eq!(
        int(server, "gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        int(server, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
    assert_eq!(strings(server, "gen_ai.response.finish_reasons"), ["stop"]);
    let upstream = children(&spans, server)[0];
    assert_eq!(
        int(upstream, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn contemplating_traces_each_agent_and_the_synthesis_under_the_request() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let extra = format!(
        "\n[contemplating]\nagents = 3\n{}",
        telemetry(&otlp.url, "")
    );
    let proxy = Proxy::start(&config_text(None, &extra)).await;
    let body = json!({"model": "sim-model:contemplating",
        "messages": [{"role": "user", "content": "prove there are infinitely many primes"}]});
    let r = call(&proxy.url("/v1/chat/completions"), body.to_string(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The request, 3 agents and the synthesis, each of those with its upstream call.
    let spans = otlp.wait_for(9).await;
    assert_eq!(spans.len(), 9, "{:?}", names(&spans));
    let server = server_span(&spans);
    assert_eq!(text(server, "thinkgate.mode"), "contemplating");
    let orchestrated = children(&spans, server);
    let agents: Vec<_> = orchestrated
        .iter()
        .filter(|s| s.name == "invoke_agent agent")
        .collect();
    let synthesis: Vec<_> = orchestrated
        .iter()
        .filter(|s| s.name == "invoke_agent synthesis")
        .collect();
    assert_eq!(
        (agents.len(), synthesis.len()),
        (3, 1),
        "{:?}",
        names(&spans)
    );
    for s in agents.iter().chain(synthesis.iter()) {
        assert_eq!(text(s, "gen_ai.operation.name"), "invoke_agent");
        let calls = children(&spans, s);
        assert_eq!(calls.len(), 1, "{} has one upstream call", s.name);
        assert_eq!(text(calls[0], "gen_ai.operation.name"), "chat");
        assert!(int(calls[0], "gen_ai.usage.output_tokens") > 0);
    }
    assert!(spans.iter().all(|s| s.trace_id == server.trace_id));
}

/// One request to `multi` on two deployments, `s1` (model `one`) always tried first, with
/// `sim` appended to the config; the reply and the request's three spans.
async fn on_two_deployments(sim: &str, otlp: &Receiver) -> (Reply, Vec<Span>) {
    let text = deployments("balance = \"ordered\"", "", "", sim);
    let proxy = Proxy::start(&text).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("multi", false),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    (r, otlp.wait_for(3).await)
}

#[tokio::test]
async fn a_fallback_is_a_failed_call_span_then_the_one_that_answered() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    // Two deployments of one model, tried in the order listed; the first answers 503 every time.
    let sim = format!(
        "[simulator.models.one]\nfault_status = 503\n{}",
        telemetry(&otlp.url, "")
    );
    let (r, spans) = on_two_deployments(&sim, &otlp).await;
    assert_eq!(r.header("x-thinkgate-fallback-from"), "multi@s1");
    let server = server_span(&spans);
    let calls = children(&spans, server);
    assert_eq!(calls.len(), 2, "{:?}", names(&spans));
    let failed = calls.iter().find(|s| s.name == "chat one").unwrap();
    assert_eq!(text(failed, "error.type"), "503");
    assert_eq!(int(failed, "http.response.status_code"), 503);
    assert_eq!(text(failed, "thinkgate.provider"), "s1");
    let answered = calls.iter().find(|s| s.name == "chat two").unwrap();
    assert!(attr(answered, "error.type").is_none());
    assert!(failed.end_time_unix_nano <= answered.start_time_unix_nano);
    assert_eq!(text(server, "gen_ai.response.model"), "two");
}

#[tokio::test]
async fn each_retry_is_a_call_span_of_its_own() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let proxy = Proxy::start(&config_text(None, &telemetry(&otlp.url, ""))).await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("sim-model", false),
        &[("x-sim-fail-first", "1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = otlp.wait_for(3).await;
    let server = server_span(&spans);
    let mut calls = children(&spans, server);
    calls.sort_by_key(|s| int(s, "thinkgate.attempt"));
    assert_eq!(calls.len(), 2, "{:?}", names(&spans));
    assert_eq!(int(calls[0], "thinkgate.attempt"), 1);
    assert_eq!(text(calls[0], "error.type"), "503");
    assert_eq!(int(calls[1], "thinkgate.attempt"), 2);
    assert!(attr(calls[1], "error.type").is_none());
}

#[tokio::test]
async fn sampling_follows_the_ratio_and_the_clients_flag() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let proxy = Proxy::start(&config_text(
        None,
        &telemetry(&otlp.url, "sample_ratio = 0.0"),
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..5 {
        assert_eq!(call(&url, chat("sim-model", false), &[]).await.status, 200);
    }
    // A client that sampled its trace gets it continued, whatever the ratio.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = call(&url, chat("sim-model", false), &[("traceparent", &sampled)]).await;
    assert_eq!(r.status, 200);
    let spans = otlp.wait_for(2).await;
    assert_eq!(
        spans.len(),
        2,
        "only the sampled request: {:?}",
        names(&spans)
    );
    assert!(spans.iter().all(|s| hex(&s.trace_id) == CLIENT_TRACE));
}

#[tokio::test]
async fn content_is_exported_only_when_the_config_opts_in() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let telemetry = telemetry(&otlp.url, "capture_content = true");
    let proxy = Proxy::start(&config_text(None, &telemetry)).await;
    let url = proxy.url("/v1/chat/completions");
    for stream in [false, true] {
        let body = json!({"model": "sim-model", "stream": stream, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "the prompt itself"}]}]});
        let r = call(&url, body.to_string(), &[]).await;
        assert_eq!(r.status, 200);
        let answer = match stream {
            false => r.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
            true => r.streamed().text("content"),
        };
        let spans = otlp.wait_for(if stream { 4 } else { 2 }).await;
        // This round's request: the server span that arrived last.
        let server = spans
            .iter()
            .rev()
            .find(|s| {
                s.kind == opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
            })
            .unwrap();
        let input: Value = serde_json::from_str(&text(server, "gen_ai.input.messages")).unwrap();
        assert_eq!(input[0]["role"], "system");
        assert_eq!(
            input[0]["parts"][0],
            json!({"type": "text", "content": "be brief"})
        );
        assert_eq!(input[1]["parts"][0]["content"], "the prompt itself");
        let output: Value = serde_json::from_str(&text(server, "gen_ai.output.messages")).unwrap();
        assert_eq!(output[0]["role"], "assistant");
        assert_eq!(
            output[0]["parts"][0]["content"],
            answer.as_str(),
            "stream: {stream}"
        );
        assert_eq!(output[0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn configured_headers_reach_the_collector_and_never_a_log_or_metric() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let extra = telemetry(
        &otlp.url,
        "headers = { authorization = \"Bearer ${COLLECTOR_TOKEN}\" }",
    );
    let proxy = Proxy::start_with_env(
        &config_text(None, &extra),
        &[("COLLECTOR_TOKEN", "tok-123456")],
    )
    .await;
    let r = call(
        &proxy.url("/v1/chat/completions"),
        chat("sim-model", false),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    otlp.wait_for(2).await;
    let headers = otlp.headers.lock().unwrap().clone().unwrap();
    assert_eq!(headers["authorization"], "Bearer tok-123456");
    assert!(!metrics_text(&proxy).await.contains("tok-123456"));
    let config = format!("{:?}", proxy.runtime.load().config);
    assert!(!config.contains("tok-123456"));
}

#[tokio::test]
async fn a_collector_that_is_down_or_slow_never_slows_a_request_and_drops_are_counted() {
    // Down: nothing listens on the port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(&config_text(
        None,
        &telemetry(&format!("http://{closed}"), "export_timeout = \"300ms\""),
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    for _ in 0..3 {
        assert_eq!(call(&url, chat("sim-model", false), &[]).await.status, 200);
    }
    let mut failed = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while failed < 6.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        failed = series(
            &metrics_text(&proxy).await,
            "thinkgate_telemetry_spans_total",
            &[("outcome", "export_failed")],
        );
    }
    assert_eq!(failed, 6.0, "3 requests × 2 spans counted as dropped");

    // Slow: answers after 5 s, far past the export timeout, with a tiny queue.
    let slow = Receiver::start(Behaviour::Slow(Duration::from_secs(5))).await;
    let proxy = Proxy::start(&config_text(
        None,
        &telemetry(&slow.url, "export_timeout = \"200ms\"\nqueue_spans = 16"),
    ))
    .await;
    let url = proxy.url("/v1/chat/completions");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..60 {
        let one = Instant::now();
        assert_eq!(call(&url, chat("sim-model", false), &[]).await.status, 200);
        slowest = slowest.max(one.elapsed());
    }
    // Far below the collector's 5 s and the export timeout: requests never wait on it.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = metrics_text(&proxy).await;
    let dropped = series(
        &text,
        "thinkgate_telemetry_spans_total",
        &[("outcome", "queue_full")],
    );
    assert!(dropped > 0.0, "a full queue drops spans and counts them");
}

#[tokio::test]
async fn genai_metric_instruments_are_exported_when_asked() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let proxy = Proxy::start(&config_text(
        None,
        &telemetry(&otlp.url, "metrics = true\nmetrics_interval = \"1s\""),
    ))
    .await;
    let mut input = 0;
    let mut output = 0;
    for _ in 0..3 {
        let r = call(
            &proxy.url("/v1/chat/completions"),
            chat("sim-model", false),
            &[],
        )
        .await;
        assert_eq!(r.status, 200);
        input += r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
        output += r.json()["usage"]["completion_tokens"].as_u64().unwrap();
    }
    // Cumulative histograms: the latest export holds every request.
    let sums = || -> Option<(HashMap<String, f64>, u64)> {
        let exports = otlp.metrics.lock().unwrap();
        let last = exports.last()?;
        let mut tokens = HashMap::new();
        let mut durations = 0;
        for rm in &last.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                    let Some(Data::Histogram(h)) = &m.data else {
                        continue;
                    };
                    for p in &h.data_points {
                        match m.name.as_str() {
                            "gen_ai.client.token.usage" => {
                                let kind =
                                    p.attributes.iter().find(|kv| kv.key == "gen_ai.token.type");
                                let kind = match kind
                                    .and_then(|kv| kv.value.as_ref())
                                    .and_then(|v| v.value.as_ref())
                                {
                                    Some(Any::StringValue(s)) => s.clone(),
                                    _ => panic!("a token point names its type"),
                                };
                                assert_eq!(m.unit, "{token}");
                                *tokens.entry(kind).or_insert(0.0) += p.sum.unwrap_or(0.0);
                            }
                            "gen_ai.client.operation.duration" => {
                                assert_eq!(m.unit, "s");
                                durations += p.count;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Some((tokens, durations))
    };
    let what = "the token and duration instruments at the receiver";
    eventually(what, || sums().is_some_and(|(_, n)| n >= 3)).await;
    let (tokens, durations) = sums().unwrap();
    assert_eq!(durations, 3);
    assert_eq!(tokens["input"], input as f64);
    assert_eq!(tokens["output"], output as f64);
}

#[tokio::test]
async fn a_reload_points_the_export_at_the_new_collector() {
    let first = Receiver::start(Behaviour::Accept).await;
    let second = Receiver::start(Behaviour::Accept).await;
    let proxy = Proxy::start(&config_text(None, &telemetry(&first.url, ""))).await;
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(call(&url, chat("sim-model", false), &[]).await.status, 200);
    first.wait_for(2).await;
    // The same section keeps its exporter; a changed one builds a new one.
    let same = proxy
        .runtime
        .load()
        .rebuild(parse_config(&config_text(None, &telemetry(&first.url, ""))))
        .unwrap();
    let running = proxy.runtime.load_full();
    let kept = same.telemetry.as_ref().zip(running.telemetry.as_ref());
    assert!(kept.is_some_and(|(a, b)| Arc::ptr_eq(a, b)));
    let moved = proxy
        .runtime
        .load()
        .rebuild(parse_config(&config_text(
            None,
            &telemetry(&second.url, ""),
        )))
        .unwrap();
    proxy.runtime.store(Arc::new(moved));
    assert_eq!(call(&url, chat("sim-model", false), &[]).await.status, 200);
    second.wait_for(2).await;
    assert_eq!(first.spans().len(), 2);
}

#[tokio::test]
async fn an_unsampled_request_still_sends_a_valid_unsampled_parent_upstream() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let (upstream, proxy) =
        behind_fixed_upstream(&telemetry(&otlp.url, "sample_ratio = 0.0")).await;
    let url = proxy.url("/v1/chat/completions");
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    let r = call(
        &url,
        chat("fixed-model", false),
        &[("traceparent", &unsampled), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, headers, _) = upstream.last();
    let sent = headers["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", CLIENT_TRACE, "00"),
        "{sent}"
    );
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the proxy's own span is the parent: {sent}"
    );
    assert_eq!(headers["tracestate"], "vendor=abc");
    // A new trace under a ratio of 0: a fresh trace id, not sampled.
    let r = call(&url, chat("fixed-model", false), &[]).await;
    assert_eq!(r.status, 200);
    let (_, headers, _) = upstream.last();
    let sent = headers["traceparent"].to_str().unwrap().to_string();
    assert!(
        sent.ends_with("-00") && !sent.contains(CLIENT_TRACE),
        "{sent}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(otlp.spans().is_empty(), "nothing sampled, nothing exported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_is_a_call_span_and_the_loser_ends_cancelled() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    // s1 is tried first and takes 3 s; after 150 ms the call also goes to s2, which wins.
    let sim = format!(
        "[providers.s1.retry]\nhedge_after = \"150ms\"\n[simulator.models.one]\ntime_to_first_token = \"3s\"\n{}",
        telemetry(&otlp.url, "")
    );
    let (_, spans) = on_two_deployments(&sim, &otlp).await;
    let server = server_span(&spans);
    let calls = children(&spans, server);
    assert_eq!(calls.len(), 2, "{:?}", names(&spans));
    let loser = calls.iter().find(|s| s.name == "chat one").unwrap();
    let winner = calls.iter().find(|s| s.name == "chat two").unwrap();
    assert_eq!(text(loser, "error.type"), "cancelled");
    assert!(matches!(
        attr(winner, "thinkgate.hedge"),
        Some(Any::BoolValue(true))
    ));
    assert!(attr(winner, "error.type").is_none());
    assert_eq!(text(server, "gen_ai.response.model"), "two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_guard_follow_up_is_a_call_span_and_the_enforcement_is_on_the_request() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    // DeepSeek takes no per-request budget: thinking past it is stopped and the answer is
    // asked for in a follow-up call.
    let extra = format!(
        r#"
[modes.thinking]
reasoning_budget = 40
answer_reserve = 20
budget_hint = false

[providers.p-deepseek]
kind = "simulator"
dialect = "deepseek"
forward_headers = ["x-sim-*"]

[models.deepseek]
provider = "p-deepseek"
upstream_model = "deepseek-model"
context_window = 100000
capabilities = ["reasoning"]
{}"#,
        telemetry(&otlp.url, "capture_content = true")
    );
    let proxy = Proxy::start(&config_text(None, &extra)).await;
    let body = json!({"model": "deepseek:thinking",
        "messages": [{"role": "user", "content": "How many primes are below 30?"}]});
    let r = call(
        &proxy.url("/v1/chat/completions"),
        body.to_string(),
        &[("x-sim-reasoning-tokens", "400")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let spans = otlp.wait_for(3).await;
    let server = server_span(&spans);
    assert_eq!(text(server, "thinkgate.mode"), "thinking");
    assert_eq!(int(server, "thinkgate.reasoning.budget"), 40);
    assert_eq!(text(server, "thinkgate.reasoning.enforcement"), "forced");
    let usage = r.json()["usage"].clone();
    assert_eq!(
        int(server, "gen_ai.usage.reasoning.output_tokens"),
        usage["completion_tokens_details"]["reasoning_tokens"]
            .as_i64()
            .unwrap()
    );
    let calls = children(&spans, server);
    assert_eq!(calls.len(), 2, "{:?}", names(&spans));
    let follow_up = calls
        .iter()
        .find(|s| attr(s, "thinkgate.call").is_some())
        .expect("a follow-up span");
    assert_eq!(text(follow_up, "thinkgate.call"), "guard_follow_up");
    assert_eq!(int(follow_up, "http.response.status_code"), 200);
    // The answer the client got, across both calls.
    let output: Value = serde_json::from_str(&text(server, "gen_ai.output.messages")).unwrap();
    assert_eq!(output[0]["parts"][0]["content"], answer.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_is_a_server_span_alone_that_says_so() {
    let otlp = Receiver::start(Behaviour::Accept).await;
    let extra = telemetry(&otlp.url, "") + "\n[cache]\nenabled = true\n";
    let proxy = Proxy::start(&config_text(None, &extra)).await;
    let body = json!({"model": "sim-model", "temperature": 0,
        "messages": [{"role": "user", "content": "Is 91 prime?"}]})
    .to_string();
    let url = proxy.url("/v1/chat/completions");
    assert_eq!(
        call(&url, body.clone(), &[])
            .await
            .header("x-thinkgate-cache"),
        "miss"
    );
    let first = otlp.wait_for(2).await;
    assert_eq!(text(server_span(&first), "thinkgate.cache"), "miss");
    assert_eq!(
        call(&url, body, &[]).await.header("x-thinkgate-cache"),
        "hit"
    );
    let all = otlp.wait_for(3).await;
    assert_eq!(
        all.len(),
        3,
        "the hit made one span, no call span: {:?}",
        names(&all)
    );
    let hit = &all[2];
    assert_eq!(text(hit, "thinkgate.cache"), "hit");
    assert_eq!(int(hit, "http.response.status_code"), 200);
    assert!(
        attr(hit, "gen_ai.usage.output_tokens").is_none(),
        "a hit spends no tokens"
    );
}
