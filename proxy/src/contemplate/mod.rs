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
use eventsource_stream::Eventsource;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use thinkgate_config::{AgentModels, Mode};
use tokio::sync::mpsc;

use crate::account::{Account, MODES};
use crate::body::{self, Body, BoxError};
use crate::canonical::{ChatRequest, Delta, Usage};
use crate::egress::{self, sse_frame, Guard, Renderer};
use crate::error::ApiError;
use crate::plan::budget::Budget;
use crate::providers::openai::{patch_usage, usage_from_json};
use crate::runtime::{Route, Runtime};

/// What the contemplating request needs from the chat handler.
pub struct Request {
    pub runtime: Arc<Runtime>,
    pub chat: ChatRequest,
    /// The models that fit, best first (for `auto`), or the one named.
    pub order: Vec<Arc<Route>>,
    pub domain: Option<String>,
    pub budget: Budget,
    pub request_id: HeaderValue,
    pub headers: HeaderMap,
    /// The client key every agent and the synthesis are charged to.
    pub key: Option<Arc<crate::server::keys::KeyState>>,
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
}

impl Report {
    fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "role": self.role,
            "tokens": usage_json(&self.usage),
            "latency_ms": self.latency.as_millis() as u64,
            "outcome": self.outcome,
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

/// The plan: who thinks, under which budget, and who writes the answer.
struct Cast {
    agents: Vec<(String, Arc<Route>, Option<Budget>)>,
    synthesis: Arc<Route>,
    synthesis_budget: Option<Budget>,
}

fn cast(req: &Request) -> Result<Cast, ApiError> {
    let cfg = &req.runtime.config.contemplating;
    let n = cfg.agents_for(req.domain.as_deref());
    let first = req
        .order
        .first()
        .cloned()
        .ok_or_else(|| ApiError::invalid_request("no model can take this request"))?;
    let total = req.budget.reasoning;
    let synthesis_share = (total as f64 * cfg.synthesis_share) as u64;
    let per_agent = ((total - synthesis_share) / n as u64).max(1);
    let with = |route: &Route, reasoning: u64| {
        route.model.reasoning.then(|| Budget {
            reasoning,
            hint: false,
            ..req.budget.clone()
        })
    };
    let agents = (0..n)
        .map(|i| {
            let route = match cfg.models {
                AgentModels::Same => first.clone(),
                AgentModels::Top => req.order[i % req.order.len()].clone(),
            };
            let role = cfg.roles[i % cfg.roles.len()].clone();
            let budget = with(&route, per_agent);
            (role, route, budget)
        })
        .collect();
    let synthesis = cfg
        .synthesis_model
        .as_deref()
        .and_then(|id| req.runtime.route(id).cloned())
        .unwrap_or(first);
    let synthesis_budget = with(&synthesis, synthesis_share.max(1));
    Ok(Cast {
        agents,
        synthesis_budget,
        synthesis,
    })
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

/// One upstream call run to the end as a whole response, recorded as its own call.
async fn call(
    req: &Request,
    route: &Arc<Route>,
    chat: &ChatRequest,
    budget: Option<Budget>,
    endpoint: &'static str,
    stream: bool,
) -> Result<Response<Body>, String> {
    let runtime = &req.runtime;
    let modes = &runtime.config.modes;
    let mut account = Account::open(runtime.metrics.clone(), endpoint);
    // Every agent and the synthesis is charged to the client's key, in contemplating mode.
    account.key = req.key.clone().map(|k| (k, Some(Mode::Contemplating)));
    account.model = Some(route.metrics.clone());
    account.mode = MODES
        .iter()
        .position(|m| *m == "contemplating")
        .unwrap_or(0);
    account.domain = req
        .domain
        .as_deref()
        .and_then(|d| runtime.domains.iter().position(|x| x == d))
        .unwrap_or(0);
    let mut chat = chat.clone();
    chat.stream = stream;
    chat.body.insert("stream".into(), Value::Bool(stream));
    chat.include_usage = true;
    let prompt_estimate = crate::plan::prompt_tokens(&chat, route.counter).await;
    let upstream_req = match &budget {
        Some(_) => chat.streaming(),
        None => chat,
    };
    let policy = budget.as_ref().map(|b| (b, modes));
    let (body, control) = route
        .upstream
        .body(&upstream_req, &route.model, policy)
        .map_err(|e| e.message)?;
    account.upstream = Some(crate::account::UpstreamCall {
        sent: Instant::now(),
        outcome: usize::MAX,
    });
    let resp = route
        .upstream
        .send(
            body,
            &route.model.upstream_model,
            upstream_req.stream,
            &req.request_id,
            &req.headers,
        )
        .await
        .map_err(|e| e.into_api(&route.upstream.name).message)?;
    if !resp.status().is_success() {
        account.upstream_outcome("error_status");
        account.status = resp.status().as_u16();
        route.health.failed();
        return Err(format!("`{}` answered {}", route.model.id, resp.status()));
    }
    route.health.succeeded();
    let server = &runtime.config.server;
    let ctx = egress::Context {
        request_id: req.request_id.clone(),
        route: route.clone(),
        include_usage: true,
        started: account.started(),
        request_timeout: server.request_timeout,
        prompt_estimate,
        account,
        format: route.upstream.format,
        reasoning_field: server.reasoning_field,
    };
    let guard = budget.zip(control).map(|(budget, control)| Guard {
        budget,
        control,
        config: runtime.config.clone(),
        request: upstream_req,
        client_headers: req.headers.clone(),
    });
    Ok(egress::respond(ctx, resp, guard, stream).await)
}

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
    };
    let result = match call(req, &route, &chat, budget, "contemplate_agent", false).await {
        Ok(resp) => {
            let status = resp.status();
            match body::collect_limited(resp.into_body(), 16 << 20).await {
                Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) if status.is_success() => Ok(v),
                    Ok(v) => Err(v["error"]["message"]
                        .as_str()
                        .unwrap_or("failed")
                        .to_string()),
                    Err(e) => Err(format!("unreadable answer: {e}")),
                },
                Err(e) => Err(format!("unreadable answer: {e}")),
            }
        }
        Err(why) => Err(why),
    };
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
    let cfg = &req.runtime.config.contemplating;
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
    let cfg = &req.runtime.config.contemplating;
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
        Err(e) => {
            account.status = e.status.as_u16();
            return e.into_response();
        }
    };
    let mut out = if req.chat.stream {
        stream(req, cast, account)
    } else {
        let resp = whole(&req, &cast).await;
        account.status = resp.status().as_u16();
        resp
    };
    out.headers_mut().insert(
        "x-thinkgate-mode",
        HeaderValue::from_static(Mode::Contemplating.as_str()),
    );
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
            let mut r = Renderer::new(model, req.runtime.config.server.reasoning_field);
            let deltas = [Delta::Content(answer), Delta::Finish("stop".into())];
            (r.completion(&deltas, &usage), None, note)
        }
        Ending::Synthesis(chat) => {
            let started = Instant::now();
            let resp = match call(
                req,
                &cast.synthesis,
                &chat,
                cast.synthesis_budget.clone(),
                "contemplate_synthesis",
                false,
            )
            .await
            {
                Ok(r) => r,
                Err(why) => return synthesis_failed(why).into_response(),
            };
            let status = resp.status();
            let bytes = body::collect_limited(resp.into_body(), 16 << 20)
                .await
                .unwrap_or_default();
            if !status.is_success() {
                return body::json_response(status, bytes);
            }
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "contemplating: the synthesis answer is unreadable",
                )
                .into_response();
            };
            let report = Report {
                role: "synthesis".into(),
                model: cast.synthesis.model.id.clone(),
                usage: usage_of(&v["usage"]),
                latency: started.elapsed(),
                outcome: "answered".into(),
                answer: None,
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
    let reasoning_field = req.runtime.config.server.reasoning_field;
    let include_usage = req.chat.include_usage;
    let exclude = req.budget.exclude;
    let task = tokio::spawn(async move {
        let mut r = Renderer::new(&cast.synthesis.model.upstream_model, reasoning_field);
        r.id = format!("chatcmpl-tg{:016x}", rand_id());
        let send = |b: Bytes| frames_tx.send(b);
        let frame = |r: &mut Renderer, d: &Delta| r.chunk_for(d).map(|c| sse_frame("", &c));
        let start = Delta::Start {
            id: r.id.clone(),
            model: String::new(),
        };
        if let Some(f) = frame(&mut r, &start) {
            let _ = send(f).await;
        }
        // Progress as reasoning text, relayed as it comes.
        let (ptx, mut prx) = mpsc::channel::<String>(16);
        let progress: Progress = (!exclude).then_some(ptx);
        let roles: Vec<String> = cast
            .agents
            .iter()
            .map(|(role, route, _)| {
                format!(
                    "{} — {}",
                    route.model.id,
                    role.split(',').next().unwrap_or(role)
                )
            })
            .collect();
        say(
            &progress,
            format!(
                "Contemplating with {} agents in parallel:\n{}\n",
                cast.agents.len(),
                roles.iter().map(|r| format!("- {r}\n")).collect::<String>()
            ),
        )
        .await;
        let relay_tx = frames_tx.clone();
        let mut relay_r = Renderer::new(&cast.synthesis.model.upstream_model, reasoning_field);
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
        let _relay_guard = AbortOnDrop(relay.abort_handle());
        let reports = run_agents(&req, &cast, &progress).await;
        let mut usage = Usage::default();
        for rep in &reports {
            usage.add_call(&rep.usage);
        }
        let ending = decide(&req, &reports);
        let ending = match ending {
            Ok(e) => e,
            Err(e) => {
                drop(progress);
                let _ = relay.await;
                let _ = send(sse_frame("", &e.to_json().to_string())).await;
                return;
            }
        };
        match ending {
            Ending::Direct(answer, note) => {
                say(&progress, format!("{note}.\n")).await;
                drop(progress);
                let _ = relay.await;
                let mut out = BytesMut::new();
                if let Some(f) = frame(&mut r, &Delta::Content(answer)) {
                    out.extend_from_slice(&f);
                }
                out.extend_from_slice(&sse_frame(
                    "",
                    &r.finish_chunk("stop", extension(&req, &reports, None, note)),
                ));
                if include_usage {
                    out.extend_from_slice(&sse_frame("", &r.usage_chunk(&usage)));
                }
                out.extend_from_slice(egress::DONE);
                let _ = send(out.freeze()).await;
            }
            Ending::Synthesis(chat) => {
                say(
                    &progress,
                    format!("Writing the answer with {}.\n", cast.synthesis.model.id),
                )
                .await;
                drop(progress);
                let _ = relay.await;
                let started = Instant::now();
                let resp = match call(
                    &req,
                    &cast.synthesis,
                    &chat,
                    cast.synthesis_budget.clone(),
                    "contemplate_synthesis",
                    true,
                )
                .await
                {
                    Ok(resp) if resp.status().is_success() => resp,
                    failed => {
                        let why = match failed {
                            Ok(resp) => format!("it answered {}", resp.status()),
                            Err(why) => why,
                        };
                        let e = synthesis_failed(why);
                        let _ = send(sse_frame("", &e.to_json().to_string())).await;
                        return;
                    }
                };
                relay_synthesis(
                    resp,
                    &r,
                    &req,
                    &reports,
                    usage,
                    started,
                    &cast,
                    include_usage,
                    &frames_tx,
                )
                .await;
            }
        }
    });
    let guard = AbortOnDrop(task.abort_handle());
    let state = (frames_rx, guard, account);
    let frames = futures_util::stream::unfold(state, |(mut rx, guard, account)| async move {
        let frame = rx.recv().await?;
        Some((Ok::<_, BoxError>(frame), (rx, guard, account)))
    });
    body::sse_response(body::stream(frames))
}

/// Forwards the synthesis stream under the request's id, with the summed usage and the
/// agents' report on the last chunk.
#[allow(clippy::too_many_arguments)]
async fn relay_synthesis(
    resp: Response<Body>,
    r: &Renderer,
    req: &Request,
    reports: &[Report],
    mut usage: Usage,
    started: Instant,
    cast: &Cast,
    include_usage: bool,
    tx: &mpsc::Sender<Bytes>,
) {
    let data = resp.into_body().into_data_stream();
    let mut events = data.eventsource();
    let mut finish: Option<Map<String, Value>> = None;
    let mut own = Usage::default();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { break };
        if event.data == "[DONE]" {
            break;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        if chunk.contains_key("error") {
            let _ = tx.send(sse_frame("", &event.data)).await;
            return;
        }
        chunk.insert("id".into(), r.id.clone().into());
        chunk.insert("created".into(), r.created.into());
        // The client already had its role chunk; the synthesis's own is dropped.
        let delta = chunk
            .get_mut("choices")
            .and_then(|c| c.get_mut(0))
            .and_then(|c| c.get_mut("delta"));
        if let Some(Value::Object(delta)) = delta {
            if delta.remove("role").is_some()
                && delta.get("content").is_none_or(|c| c.as_str() == Some(""))
                && delta.len() <= 1
            {
                continue;
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            own = usage_of(u);
            continue;
        }
        let finishes = chunk
            .get("choices")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("finish_reason"))
            .is_some_and(|f| !f.is_null());
        if finishes {
            // Held until the usage is known.
            finish = Some(chunk);
            continue;
        }
        if tx
            .send(sse_frame("", &Value::Object(chunk).to_string()))
            .await
            .is_err()
        {
            return;
        }
    }
    usage.add_call(&own);
    let synthesis = Report {
        role: "synthesis".into(),
        model: cast.synthesis.model.id.clone(),
        usage: own,
        latency: started.elapsed(),
        outcome: "answered".into(),
        answer: None,
    };
    let mut out = BytesMut::new();
    let mut chunk = finish.unwrap_or_else(|| {
        serde_json::from_str(&r.finish_chunk("stop", Value::Null)).unwrap_or_default()
    });
    chunk.insert(
        "thinkgate".into(),
        extension(
            req,
            reports,
            Some(&synthesis),
            "the synthesis wrote the answer",
        ),
    );
    out.extend_from_slice(&sse_frame("", &Value::Object(chunk).to_string()));
    if include_usage {
        out.extend_from_slice(&sse_frame("", &r.usage_chunk(&usage)));
    }
    out.extend_from_slice(egress::DONE);
    let _ = tx.send(out.freeze()).await;
}

fn rand_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::simulator::Rng::new(nanos).next_u64()
}
