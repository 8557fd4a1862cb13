//! Contemplating mode: several reasoning agents in parallel, then one synthesis.
//!
//! Each agent gets the conversation with a role prompt of its own (solve directly; another
//! method; look for the flaw), no tools, and its share of the request's one reasoning budget;
//! they run side by side, so the request costs about one agent's latency. Agents still
//! running at the deadline are cancelled. With at least the quorum answered, one more call
//! (the domain's best model, or a configured one) gets the question and the agents' final
//! answers — not their reasoning — and writes the answer the client receives, streamed as it
//! is produced, with the request's tools. When the agents agree, the synthesis is skipped;
//! below the quorum the best-ranked answer is returned; with none, an error names what failed.
//!
//! A streaming client sees progress as reasoning deltas from the first moment. Usage sums
//! every call; `thinkgate.agents` reports each one. Each agent and the synthesis is recorded
//! in the metrics as its own call (endpoints `contemplate_agent`, `contemplate_synthesis`), so
//! token totals equal what clients are billed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use thinkgate_config::Mode;
use tokio::sync::mpsc;

use crate::body::{self, Body, BoxError};
use crate::canonical::{Budget, ChatRequest, Delta, Usage};
use crate::error::ApiError;
use crate::models::Route;
use crate::pipeline::{self, Ask, Call};
use crate::plan::cast::Cast;
use crate::relay::{self, sse_frame, Renderer};
use crate::telemetry::Account;
use crate::upstream::openai::{patch_usage, usage_from_json};

/// What the contemplating request needs from the chat handler.
pub struct Request {
    /// What every call of the request shares: runtime, id, headers, key, domain.
    pub call: Call,
    pub chat: ChatRequest,
    /// The models that fit, best first (for `auto`), or the one named.
    pub order: Vec<Arc<Route>>,
    pub domain: Option<String>,
    pub budget: Budget,
}

/// One agent's work, as the response reports it.
#[derive(Debug, Clone)]
struct Report {
    role: String,
    model: String,
    usage: Usage,
    latency: Duration,
    /// `answered`, `failed: …`, or `cancelled at the deadline`.
    outcome: String,
    answer: Option<String>,
    /// The models that failed before `model` answered (the call's fallbacks).
    fallback_from: Option<String>,
}

impl Report {
    fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "role": self.role,
            "tokens": usage_json(&self.usage),
            "latency_ms": self.latency.as_millis() as u64,
            "outcome": self.outcome,
            "fallback_from": self.fallback_from,
        })
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt": u.prompt_tokens,
        "completion": u.completion_tokens,
        "reasoning": u.reasoning_tokens.unwrap_or(0),
    })
}

/// A response's usage object as canonical figures (zeros when it has none).
fn usage_of(v: &Value) -> Usage {
    usage_from_json(v).unwrap_or_default()
}

fn cast(req: &Request) -> Result<Cast, ApiError> {
    let runtime = &req.call.runtime;
    crate::plan::cast::cast(
        &runtime.config.contemplating,
        req.domain.as_deref(),
        &req.order,
        &req.budget,
        runtime.tables().routes,
    )
    .ok_or_else(|| ApiError::invalid_request("no model can take this request"))
}

/// An agent's request: the conversation, its role first, no tools.
fn agent_request(chat: &ChatRequest, role: &str) -> ChatRequest {
    let mut req = chat.clone();
    for field in ["tools", "tool_choice", "parallel_tool_calls"] {
        req.body.remove(field);
    }
    req.has_tools = false;
    req.add_system_note(role);
    req
}

/// The synthesis request: the conversation, then the agents' final answers.
fn synthesis_request(chat: &ChatRequest, reports: &[&Report]) -> ChatRequest {
    let mut text = String::from(
        "Independent solvers worked on the request above. Their final answers follow.\n",
    );
    for (i, r) in reports.iter().enumerate() {
        text.push_str(&format!(
            "\nSolver {} (approach: {}):\n{}\n",
            i + 1,
            r.role,
            r.answer.as_deref().unwrap_or("").trim()
        ));
    }
    text.push_str("\nWrite the single best final answer to the original request. Where the solvers disagree, decide which is right. Do not mention the solvers.");
    chat.with_appended(vec![json!({"role": "user", "content": text})])
}

/// One call of the request, run through the attempt path with `first` tried first and the
/// other models that fit as its fallbacks, recorded as its own call.
async fn call(
    req: &Request,
    first: &Arc<Route>,
    chat: &ChatRequest,
    budget: Option<Budget>,
    endpoint: &'static str,
    stream: bool,
) -> Response<Body> {
    let account = req.call.sub_account(endpoint, Mode::Contemplating);
    let mut chat = chat.clone();
    chat.stream = stream;
    chat.body.insert("stream".into(), Value::Bool(stream));
    chat.include_usage = true;
    let prompt_tokens = crate::plan::PromptCount::later(&chat.messages(), first.counter);
    // The other models that fit are fallbacks, except for a configured synthesis model,
    // which the config names to write every answer.
    // The agent's model first, each of its deployments in the balancer's order.
    let mut order = first.arranged(std::time::Instant::now());
    let pinned = endpoint == SYNTHESIS
        && req
            .call
            .runtime
            .config
            .contemplating
            .synthesis_model
            .is_some();
    if !pinned {
        let rest: Vec<_> = req
            .order
            .iter()
            .filter(|r| !order.iter().any(|o| Arc::ptr_eq(o, r)))
            .cloned()
            .collect();
        order.extend(rest);
    }
    let ask = Ask {
        chat: &chat,
        budget: budget.as_ref(),
        suffix: Some(Mode::Contemplating),
        prompt_tokens: &prompt_tokens,
    };
    pipeline::answer(&req.call, &order, ask, account).await
}

/// A whole response's JSON, or why it has none.
async fn read_whole(resp: Response<Body>) -> Result<Value, String> {
    let status = resp.status();
    let bytes = body::collect_limited(resp.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| format!("unreadable answer: {e}"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if status.is_success() => Ok(v),
        Ok(v) => Err(v["error"]["message"]
            .as_str()
            .map_or_else(|| format!("it answered {status}"), str::to_string)),
        Err(e) => Err(format!("unreadable answer: {e}")),
    }
}

/// The metrics endpoints of an agent's call and of the synthesis.
const AGENT: &str = "contemplate_agent";
const SYNTHESIS: &str = "contemplate_synthesis";

/// Largest agent or synthesis answer read whole.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Runs one agent to its answer.
async fn agent(req: &Request, role: String, route: Arc<Route>, budget: Option<Budget>) -> Report {
    let started = Instant::now();
    let chat = agent_request(&req.chat, &role);
    let mut report = Report {
        role,
        model: route.model.id.clone(),
        usage: Usage::default(),
        latency: Duration::ZERO,
        outcome: String::new(),
        answer: None,
        fallback_from: None,
    };
    let resp = call(req, &route, &chat, budget, AGENT, false).await;
    if let Some(answered_by) = header(&resp, "x-thinkgate-model") {
        report.model = answered_by;
    }
    report.fallback_from = header(&resp, "x-thinkgate-fallback-from");
    let result = read_whole(resp).await;
    report.latency = started.elapsed();
    match result {
        Ok(v) => {
            report.usage = usage_of(&v["usage"]);
            let answer = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
            if answer.trim().is_empty() {
                report.outcome = "failed: no answer".into();
            } else {
                report.outcome = "answered".into();
                report.answer = Some(answer.to_string());
            }
        }
        Err(why) => report.outcome = format!("failed: {why}"),
    }
    report
}

/// The final answers' gist for early agreement: the last non-empty line, lowercased, with
/// only letters and digits kept.
fn normalized(answer: &str) -> String {
    let last = answer
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let last = last
        .trim()
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    let last = last
        .strip_prefix("final answer")
        .or_else(|| last.strip_prefix("answer"))
        .unwrap_or(&last);
    last.chars().filter(|c| c.is_alphanumeric()).collect()
}

/// Progress for a streaming client, as reasoning text.
type Progress = Option<mpsc::Sender<String>>;

async fn say(progress: &Progress, text: String) {
    if let Some(tx) = progress {
        let _ = tx.send(text).await;
    }
}

/// Runs the agents side by side until they finish or the deadline passes.
async fn run_agents(req: &Request, cast: &Cast, progress: &Progress) -> Vec<Report> {
    let cfg = &req.call.runtime.config.contemplating;
    let deadline = tokio::time::Instant::now() + cfg.deadline;
    let mut running: FuturesUnordered<_> = cast
        .agents
        .iter()
        .enumerate()
        .map(|(i, (role, route, budget))| {
            let fut = agent(req, role.clone(), route.clone(), budget.clone());
            async move { (i, fut.await) }
        })
        .collect();
    let mut reports: Vec<Option<Report>> = vec![None; cast.agents.len()];
    loop {
        match tokio::time::timeout_at(deadline, running.next()).await {
            Ok(Some((i, report))) => {
                let line = match &report.answer {
                    Some(a) => {
                        let gist: String = a
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("")
                            .chars()
                            .take(160)
                            .collect();
                        format!(
                            "Agent {} ({}) answered in {:.1} s: {}\n",
                            i + 1,
                            report.model,
                            report.latency.as_secs_f64(),
                            gist.trim()
                        )
                    }
                    None => format!("Agent {} ({}) {}\n", i + 1, report.model, report.outcome),
                };
                say(progress, line).await;
                reports[i] = Some(report);
            }
            Ok(None) => break,
            Err(_) => {
                say(
                    progress,
                    format!(
                        "Deadline of {} s reached; stopping the agents still thinking.\n",
                        cfg.deadline.as_secs()
                    ),
                )
                .await;
                break;
            }
        }
    }
    // Dropping `running` cancels every agent still thinking (and its upstream call).
    drop(running);
    reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| Report {
                role: cast.agents[i].0.clone(),
                model: cast.agents[i].1.model.id.clone(),
                usage: Usage::default(),
                latency: cfg.deadline,
                outcome: "cancelled at the deadline".into(),
                answer: None,
                fallback_from: None,
            })
        })
        .collect()
}

/// How the answer is produced once the agents are done.
enum Ending {
    /// One agent's answer, returned as is (agreement, or below the quorum).
    Direct(String, &'static str),
    /// The synthesis writes it.
    Synthesis(ChatRequest),
}

fn decide(req: &Request, reports: &[Report]) -> Result<Ending, ApiError> {
    let cfg = &req.call.runtime.config.contemplating;
    let answered: Vec<&Report> = reports.iter().filter(|r| r.answer.is_some()).collect();
    if answered.is_empty() {
        let why: Vec<String> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| format!("agent {} ({}): {}", i + 1, r.model, r.outcome))
            .collect();
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!(
                "contemplating failed: no agent answered ({})",
                why.join("; ")
            ),
        )
        .with_code("agents_failed"));
    }
    let first = answered[0].answer.clone().unwrap_or_default();
    if answered.len() < cfg.quorum {
        return Ok(Ending::Direct(
            first,
            "below quorum: the answering agent's answer",
        ));
    }
    if cfg.early_agreement {
        let gist = normalized(&first);
        if !gist.is_empty()
            && answered
                .iter()
                .all(|r| normalized(r.answer.as_deref().unwrap_or("")) == gist)
        {
            return Ok(Ending::Direct(
                first,
                "the agents agreed: synthesis skipped",
            ));
        }
    }
    Ok(Ending::Synthesis(synthesis_request(&req.chat, &answered)))
}

fn extension(req: &Request, reports: &[Report], synthesis: Option<&Report>, note: &str) -> Value {
    json!({
        "mode": "contemplating",
        "reasoning_budget": req.budget.reasoning,
        "agents": reports.iter().map(Report::to_json).collect::<Vec<_>>(),
        "synthesis": synthesis.map(Report::to_json),
        "note": note,
    })
}

/// Answers a contemplating request.
pub async fn handle(req: Request, mut account: Account) -> Response<Body> {
    let cast = match cast(&req) {
        Ok(c) => c,
        Err(e) => return account.reject(e),
    };
    let synthesis_header = cast.synthesis.header.clone();
    let reported = req.budget.reported();
    let mut out = if req.chat.stream {
        stream(req, cast, account)
    } else {
        let resp = whole(&req, &cast).await;
        account.status = resp.status().as_u16();
        resp
    };
    let headers = out.headers_mut();
    headers.insert(
        "x-thinkgate-mode",
        HeaderValue::from_static(Mode::Contemplating.as_str()),
    );
    headers.insert("x-thinkgate-model", synthesis_header);
    headers.insert("x-thinkgate-reasoning-budget", reported.into());
    out
}

async fn whole(req: &Request, cast: &Cast) -> Response<Body> {
    let reports = run_agents(req, cast, &None).await;
    let mut usage = Usage::default();
    for r in &reports {
        usage.add_call(&r.usage);
    }
    let ending = match decide(req, &reports) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let model = &cast.synthesis.model.upstream_model;
    let (mut json, synthesis, note) = match ending {
        Ending::Direct(answer, note) => {
            let mut r = Renderer::new(model, req.call.runtime.config.server.reasoning_field);
            let deltas = [Delta::Content(answer), Delta::Finish("stop".into())];
            (r.completion(&deltas, &usage), None, note)
        }
        Ending::Synthesis(chat) => {
            let started = Instant::now();
            let resp = call(
                req,
                &cast.synthesis,
                &chat,
                cast.synthesis_budget.clone(),
                SYNTHESIS,
                false,
            )
            .await;
            let v = match read_whole(resp).await {
                Ok(v) => v,
                Err(why) => return synthesis_failed(why).into_response(),
            };
            let report = Report {
                role: "synthesis".into(),
                model: cast.synthesis.model.id.clone(),
                usage: usage_of(&v["usage"]),
                latency: started.elapsed(),
                outcome: "answered".into(),
                answer: None,
                fallback_from: None,
            };
            usage.add_call(&report.usage);
            (v, Some(report), "the synthesis wrote the answer")
        }
    };
    if let Value::Object(o) = &mut json {
        patch_usage(o, &usage);
        o.insert(
            "thinkgate".into(),
            extension(req, &reports, synthesis.as_ref(), note),
        );
    }
    body::json_response(StatusCode::OK, json.to_string())
}

/// The error when the synthesis call fails.
fn synthesis_failed(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("contemplating: the synthesis failed: {why}"),
    )
    .with_code("synthesis_failed")
}

/// Aborts the orchestration when the client's stream is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stream(req: Request, cast: Cast, account: Account) -> Response<Body> {
    let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(64);
    let task = tokio::spawn(orchestrate(req, cast, frames_tx));
    let guard = AbortOnDrop(task.abort_handle());
    body::sse_response(body::stream(until_last_frame(frames_rx, guard, account)))
}

/// The client's frames as the orchestration sends them; when it stops without a last frame
/// (`[DONE]` or an error) it failed — a panic, say — and the client gets an error event
/// rather than a stream that looks complete. Dropping the body aborts the orchestration.
fn until_last_frame(
    rx: mpsc::Receiver<Bytes>,
    guard: AbortOnDrop,
    account: Account,
) -> impl futures_util::Stream<Item = Result<Bytes, BoxError>> {
    let state = (Some(rx), guard, account, false);
    futures_util::stream::unfold(state, |(rx, guard, mut account, ended)| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(frame) => {
                let ended = is_last_frame(&frame);
                Some((Ok::<_, BoxError>(frame), (Some(rx), guard, account, ended)))
            }
            None if ended => None,
            None => {
                account.status = 500;
                let e = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "contemplating stopped before the answer was complete",
                )
                .with_code("contemplating_failed");
                let frame = sse_frame("", &e.to_json().to_string());
                Some((Ok(frame), (None, guard, account, true)))
            }
        }
    })
}

/// The streamed orchestration: the opening chunk, progress while the agents think, then
/// the ending — an agent's answer, or the synthesis relayed.
async fn orchestrate(req: Request, cast: Cast, tx: mpsc::Sender<Bytes>) {
    let reasoning_field = req.call.runtime.config.server.reasoning_field;
    let mut r = Renderer::new(&cast.synthesis.model.upstream_model, reasoning_field);
    r.id = crate::canonical::own_response_id();
    let start = Delta::Start {
        id: r.id.clone(),
        model: String::new(),
    };
    if let Some(c) = r.chunk_for(&start) {
        let _ = tx.send(sse_frame("", &c)).await;
    }
    let (progress, relay) = progress_relay(&r, req.budget.exclude, reasoning_field, &tx);
    let _relay_guard = AbortOnDrop(relay.abort_handle());
    say(&progress, opening(&cast)).await;
    let reports = run_agents(&req, &cast, &progress).await;
    let mut usage = Usage::default();
    for rep in &reports {
        usage.add_call(&rep.usage);
    }
    let ending = decide(&req, &reports);
    let last_word = match &ending {
        Ok(Ending::Direct(_, note)) => Some(format!("{note}.\n")),
        Ok(Ending::Synthesis(_)) => Some(format!(
            "Writing the answer with {}.\n",
            cast.synthesis.model.id
        )),
        Err(_) => None,
    };
    if let Some(text) = last_word {
        say(&progress, text).await;
    }
    // Progress ends before the answer starts.
    drop(progress);
    let _ = relay.await;
    match ending {
        Err(e) => {
            let _ = tx.send(sse_frame("", &e.to_json().to_string())).await;
        }
        Ok(Ending::Direct(answer, note)) => {
            let mut out = BytesMut::new();
            if let Some(c) = r.chunk_for(&Delta::Content(answer)) {
                out.extend_from_slice(&sse_frame("", &c));
            }
            let extra = extension(&req, &reports, None, note);
            out.extend_from_slice(&sse_frame("", &r.finish_chunk("stop", extra)));
            if req.chat.include_usage {
                out.extend_from_slice(&sse_frame("", &r.usage_chunk(&usage)));
            }
            out.extend_from_slice(relay::DONE);
            let _ = tx.send(out.freeze()).await;
        }
        Ok(Ending::Synthesis(chat)) => {
            let started = Instant::now();
            let budget = cast.synthesis_budget.clone();
            let resp = call(&req, &cast.synthesis, &chat, budget, SYNTHESIS, true).await;
            if !resp.status().is_success() {
                let why = read_whole(resp).await.err().unwrap_or_default();
                let e = synthesis_failed(why);
                let _ = tx.send(sse_frame("", &e.to_json().to_string())).await;
                return;
            }
            let done = Done {
                reports: &reports,
                usage,
                started,
            };
            relay_synthesis(resp, &r, &req, &cast, done, &tx).await;
        }
    }
}

/// The first progress text: who thinks, with which approach.
fn opening(cast: &Cast) -> String {
    let roles: String = cast
        .agents
        .iter()
        .map(|(role, route, _)| {
            let approach = role.split(',').next().unwrap_or(role);
            format!("- {} — {approach}\n", route.model.id)
        })
        .collect();
    format!(
        "Contemplating with {} agents in parallel:\n{roles}\n",
        cast.agents.len()
    )
}

/// Progress text as reasoning chunks under the response's id, relayed by a task of its own
/// so agents never wait on the client; `None` when the client asked for no reasoning.
fn progress_relay(
    r: &Renderer,
    exclude: bool,
    reasoning_field: thinkgate_config::ReasoningField,
    tx: &mpsc::Sender<Bytes>,
) -> (Progress, tokio::task::JoinHandle<()>) {
    let (ptx, mut prx) = mpsc::channel::<String>(16);
    let relay_tx = tx.clone();
    let mut relay_r = Renderer::new(&r.model, reasoning_field);
    relay_r.id = r.id.clone();
    relay_r.created = r.created;
    let relay = tokio::spawn(async move {
        while let Some(text) = prx.recv().await {
            if let Some(c) = relay_r.chunk_for(&Delta::Reasoning(text)) {
                if relay_tx.send(sse_frame("", &c)).await.is_err() {
                    break;
                }
            }
        }
    });
    ((!exclude).then_some(ptx), relay)
}

/// What the agents did, for the last chunk of the synthesis.
struct Done<'a> {
    reports: &'a [Report],
    /// The agents' usage, summed.
    usage: Usage,
    started: Instant,
}

/// Forwards the synthesis stream under the request's id, with the summed usage and the
/// agents' report on the last chunk.
async fn relay_synthesis(
    resp: Response<Body>,
    r: &Renderer,
    req: &Request,
    cast: &Cast,
    done: Done<'_>,
    tx: &mpsc::Sender<Bytes>,
) {
    let mut events = relay::Events::new(
        resp.into_body().into_data_stream().boxed(),
        relay::OWN_EVENT_BYTES,
    );
    let mut finish: Option<Map<String, Value>> = None;
    let mut own = Usage::default();
    let mut complete = false;
    while let Some(Ok(event)) = events.next().await {
        if event.data() == "[DONE]" {
            complete = true;
            break;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(event.data()) else {
            break;
        };
        let frame = match sort(chunk, r) {
            Synth::Error => {
                let _ = tx.send(event.raw().clone()).await;
                return;
            }
            Synth::Skip => continue,
            Synth::Usage(u) => {
                own = u;
                continue;
            }
            // Held until the usage is known.
            Synth::Finish(chunk) => {
                finish = Some(chunk);
                continue;
            }
            Synth::Forward(chunk) => sse_frame("", &Value::Object(chunk).to_string()),
        };
        if tx.send(frame).await.is_err() {
            return;
        }
    }
    let frames = match finish.filter(|_| complete) {
        Some(chunk) => last_frames(chunk, own, r, req, cast, done),
        // Cut off, or not a stream the proxy can read: never a made-up ending.
        None => sse_frame(
            "",
            &synthesis_failed("its stream ended before the answer was complete")
                .to_json()
                .to_string(),
        ),
    };
    let _ = tx.send(frames).await;
}

/// What one chunk of the synthesis stream is to the client's stream.
enum Synth {
    /// The upstream's error: passed on, and the stream ends.
    Error,
    /// The synthesis's own role chunk (the client had its own).
    Skip,
    Usage(Usage),
    /// The chunk with the finish reason.
    Finish(Map<String, Value>),
    /// Passed on under the request's id.
    Forward(Map<String, Value>),
}

fn sort(mut chunk: Map<String, Value>, r: &Renderer) -> Synth {
    if chunk.contains_key("error") {
        return Synth::Error;
    }
    chunk.insert("id".into(), r.id.clone().into());
    chunk.insert("created".into(), r.created.into());
    let choice = chunk.get_mut("choices").and_then(|c| c.get_mut(0));
    if let Some(Value::Object(delta)) = choice.and_then(|c| c.get_mut("delta")) {
        if delta.remove("role").is_some()
            && delta.get("content").is_none_or(|c| c.as_str() == Some(""))
            && delta.len() <= 1
        {
            return Synth::Skip;
        }
    }
    if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
        return Synth::Usage(usage_of(u));
    }
    let finishes = chunk
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("finish_reason"))
        .is_some_and(|f| !f.is_null());
    if finishes {
        Synth::Finish(chunk)
    } else {
        Synth::Forward(chunk)
    }
}

/// The finish chunk with the agents' report, the summed usage, and `[DONE]`.
fn last_frames(
    mut chunk: Map<String, Value>,
    own: Usage,
    r: &Renderer,
    req: &Request,
    cast: &Cast,
    done: Done<'_>,
) -> Bytes {
    let mut usage = done.usage;
    usage.add_call(&own);
    let synthesis = Report {
        role: "synthesis".into(),
        model: cast.synthesis.model.id.clone(),
        usage: own,
        latency: done.started.elapsed(),
        outcome: "answered".into(),
        answer: None,
        fallback_from: None,
    };
    let note = "the synthesis wrote the answer";
    let extra = extension(req, done.reports, Some(&synthesis), note);
    chunk.insert("thinkgate".into(), extra);
    let mut out = BytesMut::new();
    out.extend_from_slice(&sse_frame("", &Value::Object(chunk).to_string()));
    if req.chat.include_usage {
        out.extend_from_slice(&sse_frame("", &r.usage_chunk(&usage)));
    }
    out.extend_from_slice(relay::DONE);
    out.freeze()
}

/// A frame that ends a contemplating stream: `[DONE]`, or an error event.
fn is_last_frame(frame: &[u8]) -> bool {
    frame.ends_with(relay::DONE) || frame.starts_with(b"data: {\"error\"")
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use thinkgate_metrics::{Buckets, Metrics};

    async fn frames_when(sent: Vec<&'static [u8]>) -> Vec<Bytes> {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let task = tokio::spawn(async move {
            for f in sent {
                let _ = tx.send(Bytes::from_static(f)).await;
            }
            // Dropping `tx` here is the orchestration ending (or dying).
        });
        let account = Account::open(Arc::new(Metrics::new(&Buckets::default())), "test");
        let out: Vec<_> = until_last_frame(rx, AbortOnDrop(task.abort_handle()), account)
            .map(|f| f.unwrap())
            .collect()
            .await;
        out
    }

    #[tokio::test]
    async fn an_orchestration_that_stops_early_ends_with_an_error_event() {
        let out = frames_when(vec![b"data: {\"choices\":[]}\n\n"]).await;
        assert_eq!(out.len(), 2);
        assert!(out[1].starts_with(b"data: {\"error\""), "{:?}", out[1]);
        let done = frames_when(vec![b"data: {\"choices\":[]}\n\n", relay::DONE]).await;
        assert_eq!(done.len(), 2, "a finished stream gets nothing more");
    }
}
