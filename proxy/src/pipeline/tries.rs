//! Trying one call more than once: retries on the same deployment by the provider's policy
//! and retry budget, a hedge on the model's next deployment when the first is slow, and the
//! circuit breaker asked before and told after every send. [`send_with_retries`] is the
//! one way every upstream call is sent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::{admit, first_content, free_slots, note_sent, send, slots, Call, SendFailure, Target};
use crate::auth::{KeyState, Refusal};
use crate::body::{self, Body};
use crate::models::Route;
use crate::resilience::{backoff, retry_after, BreakerState, Transition};
use crate::telemetry::spans::{Parent, TraceSpan};
use crate::telemetry::{Account, UpstreamCall};
use crate::upstream::Origin;

/// A response head and the span of the call that brought it (when tracing).
type Sent = (Response<Body>, Option<TraceSpan>);

/// How a call may be tried beyond its first send.
pub struct Tries<'a> {
    /// Again on the same deployment, by the provider's retry policy.
    pub retry: bool,
    /// On the model's next deployment too, if the first is slow to answer.
    pub hedge: Option<Hedge<'a>>,
}

impl Tries<'_> {
    /// Retries only when `retry`; no hedge.
    pub fn retry(retry: bool) -> Self {
        Tries { retry, hedge: None }
    }
}

/// A second call to another deployment of the same model, sent when the first has not
/// answered `after` it went out.
pub struct Hedge<'a> {
    pub(super) route: &'a Arc<Route>,
    /// The request in that deployment's format.
    pub(super) body: Bytes,
    pub(super) after: Duration,
}

/// What every send of one call shares.
struct One<'a> {
    call: &'a Call,
    target: Target,
    deadline: Instant,
    /// The span each send's span hangs under (the account's), when tracing.
    trace: Option<&'a Parent>,
    /// Which try this is (1 for the first send).
    attempt: u32,
}

impl One<'_> {
    /// Sends to `route` and counts its latency for the balancer (a failed call counts as a
    /// slow one, so the balancer turns from a failing deployment before its breaker opens).
    /// A whole answer's head counts for the hedging percentile; a stream's first content
    /// does (see `first_content`).
    async fn send(
        &self,
        route: &Route,
        body: Bytes,
        started: Instant,
        hedge: bool,
    ) -> Result<Sent, SendFailure> {
        let operation = self.target.operation();
        let mut span = self
            .trace
            .map(|p| p.call(operation, &route.metrics.values, self.attempt, hedge));
        let traceparent = span.as_ref().and_then(TraceSpan::traceparent);
        let origin = Origin {
            request_id: &self.call.request_id,
            client_headers: &self.call.headers,
            traceparent: traceparent.as_ref(),
        };
        let sent = send(route, body, self.target, origin, self.deadline).await;
        let latency = match &sent {
            Ok(resp) => {
                if !body::is_event_stream(resp.headers()) {
                    route.deployment.answered_in(started.elapsed());
                }
                started.elapsed()
            }
            Err(_) => started.elapsed().max(FAILED_CALL_LATENCY),
        };
        route.deployment.observe(latency, Instant::now());
        if let Some(span) = span.as_mut() {
            note_sent(span, &sent);
        }
        match sent {
            Ok(resp) => Ok((resp, span)),
            Err(failure) => {
                if let Some(span) = span {
                    span.end();
                }
                Err(failure)
            }
        }
    }

    /// [`One::send`], and for a stream its first content too: what a hedge races for.
    async fn answer(
        &self,
        route: &Route,
        body: Bytes,
        started: Instant,
        hedge: bool,
    ) -> Result<Sent, SendFailure> {
        let (resp, span) = self.send(route, body, started, hedge).await?;
        if !body::is_event_stream(resp.headers()) {
            return Ok((resp, span));
        }
        let max_event = self.call.runtime.config.server.max_event_bytes;
        match first_content::first_content(route, resp, max_event, started).await {
            Ok(resp) => Ok((resp, span)),
            Err(failure) => {
                if let Some(span) = span {
                    span.end_failed(failure.error_type());
                }
                Err(failure)
            }
        }
    }

    /// Sends to `route`, and to the hedge's deployment too once `route` has been silent (no
    /// response head, or for a stream no content) for the hedge's wait (when the retry
    /// budget, that deployment's breaker and limits and a free slot allow): the first answer
    /// wins, and the other call is cancelled (dropped, which closes its connection). A
    /// failure waits for the other call.
    async fn race<'h>(
        &self,
        route: &Route,
        body: Bytes,
        started: Instant,
        hedge: Hedge<'h>,
        account: &mut Account,
        prompt_tokens: &(dyn Fn() -> u64 + Sync),
    ) -> Result<(Sent, Option<(&'h Arc<Route>, Vec<OwnedSemaphorePermit>)>), SendFailure> {
        let first = self.answer(route, body, started, false);
        tokio::pin!(first);
        tokio::select! {
            sent = &mut first => return sent.map(|resp| (resp, None)),
            () = tokio::time::sleep(hedge.after) => {}
        }
        let other = hedge.route;
        let allowed = other.upstream.retry_budget.try_retry(Instant::now())
            && breaker_allows(other).is_ok()
            && admit(other, prompt_tokens).is_ok();
        let permits = allowed
            .then(|| free_slots(&self.call.runtime.upstream_calls, other))
            .flatten();
        let Some(mut permits) = permits else {
            return first.await.map(|resp| (resp, None));
        };
        permits.extend(other.deployment.start_call());
        other.metrics.hedged(false);
        tracing::info!(model = %route.model.id, slow = %route.upstream.name, hedge = %other.upstream.name, after_ms = hedge.after.as_millis() as u64, "Hedging a slow call on the model's next deployment.");
        let second = self.answer(other, hedge.body, Instant::now(), true);
        tokio::pin!(second);
        tokio::select! {
            sent = &mut first => match sent {
                Ok(resp) => {
                    account.failed_attempt(&other.metrics, "cancelled");
                    Ok((resp, None))
                }
                Err(_) => second.await.map(|resp| {
                    other.metrics.hedged(true);
                    (resp, Some((other, permits)))
                }),
            },
            sent = &mut second => match sent {
                Ok(resp) => {
                    other.metrics.hedged(true);
                    account.failed_attempt(&route.metrics, "cancelled");
                    // The loser took at least this long: the balancer should know.
                    route.deployment.observe(started.elapsed(), Instant::now());
                    Ok((resp, Some((other, permits))))
                }
                Err(_) => first.await.map(|resp| (resp, None)),
            },
        }
    }
}

/// What a failed call weighs in a deployment's latency estimate.
const FAILED_CALL_LATENCY: Duration = Duration::from_secs(1);

/// Why [`send_with_retries`] has no response head.
pub(super) enum Stopped {
    Failed(SendFailure),
    /// The client's key refused the request (only a key refuses); nothing was sent.
    KeyRefused(Arc<KeyState>, Refusal),
}

/// The steps of every upstream call, tried again per the provider's retry policy (when
/// `retry`: not when another deployment of the model is next, which a failure goes to): the
/// deployment's breaker, the model's admission, the key's admission (once per request), the
/// concurrency slots and the send. Every try shares one deadline for the response head (the
/// provider's `response_timeout`), and retries come out of the provider's retry budget.
pub(super) async fn send_with_retries<'h>(
    call: &Call,
    route: &Route,
    body: Bytes,
    target: Target,
    account: &mut Account,
    mut tries_as: Tries<'h>,
    prompt_tokens: &(dyn Fn() -> u64 + Sync),
) -> Result<
    (
        Response<Body>,
        Vec<OwnedSemaphorePermit>,
        Option<&'h Arc<Route>>,
    ),
    Stopped,
> {
    let deadline = Instant::now() + route.upstream.response_timeout;
    let trace = account.span.as_deref().map(TraceSpan::parent);
    route.upstream.retry_budget.called(Instant::now());
    let mut tries = 0;
    loop {
        tries += 1;
        breaker_allows(route)
            .and_then(|()| admit(route, prompt_tokens))
            .map_err(Stopped::Failed)?;
        if let (Err(refusal), Some(key)) = (call.admit_key(account).await, &call.key) {
            return Err(Stopped::KeyRefused(key.clone(), refusal));
        }
        let sent = match slots(&call.runtime.upstream_calls, route).await {
            Err(failure) => Err(failure),
            Ok(mut permits) => {
                // Held with the slots until the response ends: the balancer's load.
                permits.extend(route.deployment.start_call());
                let started = Instant::now();
                account.upstream = Some(UpstreamCall {
                    sent: started,
                    outcome: usize::MAX,
                });
                let one = One {
                    call,
                    target,
                    deadline,
                    trace: trace.as_ref(),
                    attempt: tries,
                };
                let sent = match tries_as.hedge.take() {
                    None => one
                        .send(route, body.clone(), started, false)
                        .await
                        .map(|r| (r, None)),
                    Some(hedge) => {
                        // Boxed: the race holds two sends; inline it would double the
                        // future of every request that is not hedged.
                        let sent =
                            one.race(route, body.clone(), started, hedge, account, prompt_tokens);
                        Box::pin(sent).await
                    }
                };
                sent.map(|(resp, hedged)| match hedged {
                    Some((hedge, hedge_permits)) => (resp, hedge_permits, Some(hedge)),
                    None => (resp, permits, None),
                })
            }
        };
        let failure = match sent {
            Ok(((resp, span), permits, hedged)) => {
                account.call_span = span.map(Box::new);
                let answered = hedged.map_or(route, |h| &**h);
                account.model = Some(answered.metrics.clone());
                account.deployment_tokens = answered.deployment.tokens_per_minute().cloned();
                return Ok((resp, permits, hedged));
            }
            Err(failure) => failure,
        };
        let wait = tries_as
            .retry
            .then(|| retry_wait(route, &failure, tries, deadline))
            .flatten();
        let Some((wait, reason)) = wait else {
            return Err(Stopped::Failed(failure));
        };
        if !route.upstream.retry_budget.try_retry(Instant::now()) {
            route.metrics.retry_budget_exhausted();
            tracing::info!(model = %route.model.id, provider = %route.upstream.name, "Not retrying: the provider's retry budget is spent.");
            return Err(Stopped::Failed(failure));
        }
        failure.count_retry(account, route, reason, tries, wait);
        drop(failure);
        tokio::time::sleep(wait).await;
    }
}

/// The deployment's circuit breaker: open, it takes no call (a half-open one lets its probes
/// through).
pub(super) fn breaker_allows(route: &Route) -> Result<(), SendFailure> {
    let (allowed, moved) = route.breaker.allow(Instant::now());
    if let Some(transition) = moved {
        breaker_moved(route, transition);
    }
    allowed.map_err(SendFailure::Open)
}

/// Counts a call's outcome in its deployment's breaker.
pub(super) fn breaker_outcome(route: &Route, succeeded: bool) {
    if let Some(transition) = route.breaker.record(Instant::now(), succeeded) {
        breaker_moved(route, transition);
    }
}

/// Counts, shows and logs a circuit breaker's change of state.
fn breaker_moved(route: &Route, transition: Transition) {
    route.metrics.breaker_moved(transition);
    let (model, provider) = (&route.model.id, &route.upstream.name);
    let policy = route.breaker.policy();
    match transition.0 {
        BreakerState::Open => {
            let open_for = policy.open_for.as_secs_f64();
            tracing::warn!(%model, %provider, open_for, "Circuit breaker opened: the model takes no calls until it is probed again.");
        }
        BreakerState::HalfOpen => {
            tracing::info!(%model, %provider, probes = policy.half_open_probes, "Circuit breaker half-open: probing the model.");
        }
        BreakerState::Closed => {
            tracing::info!(%model, %provider, "Circuit breaker closed: the model answered its probe.");
        }
    }
}

/// The wait before sending `failure`'s call to `route` again, and why (a
/// [`crate::telemetry::RETRY_REASONS`] label), when the provider's retry policy wants
/// another try and there is time for it before `deadline`. The budget is asked after.
fn retry_wait(
    route: &Route,
    failure: &SendFailure,
    tries: u32,
    deadline: Instant,
) -> Option<(Duration, &'static str)> {
    let up = &route.upstream;
    let policy = &up.retry;
    // An upstream without its key fails the same way every time; a breaker this failure
    // opened (or a failed probe reopened) takes no retry.
    let (breaker, _) = route.breaker.state(Instant::now());
    if tries >= policy.attempts || up.unusable.is_some() || breaker != BreakerState::Closed {
        return None;
    }
    let (reason, asked) = match failure {
        SendFailure::Unreachable(outcome, _) => (*outcome, None),
        SendFailure::Refused(resp) | SendFailure::Error(resp) => {
            let status = resp.status().as_u16();
            if !policy.on_status.contains(&status) {
                return None;
            }
            let reason = match status {
                429 => "status_429",
                408 => "status_408",
                _ => "status_5xx",
            };
            (reason, retry_after(resp.headers(), SystemTime::now()))
        }
        // Refused here (a limit, a busy slot, an open breaker): the same model would refuse.
        _ => return None,
    };
    let wait = match asked {
        // Asked to wait longer than we would: the next model may answer now.
        Some(wait) if wait > policy.max_retry_after => return None,
        Some(wait) => wait,
        None => backoff(tries, policy.backoff, policy.max_backoff),
    };
    (Instant::now() + wait < deadline).then_some((wait, reason))
}
