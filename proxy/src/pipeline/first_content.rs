//! Failover inside a stream: a streamed answer is held until its first content (reasoning,
//! text, a tool call or a finish), so that a stream breaking before it — a reset, a stall,
//! an error event, an end with nothing in it — is handed to the next deployment or model
//! while the client has seen nothing, not even the response head. Once content came, the
//! held events and the rest go to the relay as they are; a break after that ends the
//! client's stream with an error event, as always.
//!
//! Bounded: each wait by the provider's `stream_idle_timeout`, each event by
//! `server.max_event_bytes`, and what is held by [`HOLD_LIMIT`] (past it the stream is
//! passed on, as if content had come).

use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http_body_util::BodyExt;

use super::SendFailure;
use crate::body::{self, Body};
use crate::canonical::Delta;
use crate::models::Route;
use crate::relay::Events;
use crate::upstream::{Decoder, UpstreamError};

/// The most a stream's leading events may hold before the first content.
pub const HOLD_LIMIT: usize = 64 * 1024;

/// Marks a response already held until its first content (a hedge's race does it).
#[derive(Clone, Copy)]
pub(super) struct Primed;

/// The response with its leading events held until content, or why it failed before any
/// (a failure the deployment's breaker counts, as it counts a failed send). The time from
/// `started` to the first content counts toward the deployment's hedging percentile.
pub(super) async fn first_content(
    route: &Route,
    resp: Response<Body>,
    max_event: usize,
    started: Instant,
) -> Result<Response<Body>, SendFailure> {
    let held = hold_until_content(route, resp, max_event).await;
    match &held {
        Ok(_) => route.deployment.answered_in(started.elapsed()),
        Err(_) => super::breaker_outcome(route, false),
    }
    held
}

async fn hold_until_content(
    route: &Route,
    resp: Response<Body>,
    max_event: usize,
) -> Result<Response<Body>, SendFailure> {
    let up = &route.upstream;
    let broken = |why: String| {
        SendFailure::Unreachable("broken", UpstreamError::Broken(why).into_api(&up.name))
    };
    let (parts, body) = resp.into_parts();
    let mut events = Events::new(body.into_data_stream().boxed(), max_event);
    let mut decoder = Decoder::canonical(up.format);
    let (mut held, mut held_bytes) = (Vec::<Bytes>::new(), 0);
    loop {
        let event = match tokio::time::timeout(up.stream_idle_timeout, events.next()).await {
            Err(_) => {
                let e = UpstreamError::Timeout(up.stream_idle_timeout).into_api(&up.name);
                return Err(SendFailure::Unreachable("timeout", e));
            }
            Ok(None) if held.is_empty() => {
                return Err(broken("its stream ended before any event".into()))
            }
            Ok(Some(Err(e))) => {
                return Err(broken(format!("its stream broke before any content: {e}")))
            }
            // Ended without content but with events: an empty answer, the relay's to tell.
            Ok(None) => break,
            Ok(Some(Ok(event))) => event,
        };
        held_bytes += event.raw().len();
        held.push(event.raw().clone());
        let content = match decoder.event(event.name(), event.data()) {
            Ok(deltas) => {
                if let Some(Delta::Error { message, .. }) =
                    deltas.iter().find(|d| matches!(d, Delta::Error { .. }))
                {
                    return Err(broken(format!(
                        "it reported an error before any content: {message}"
                    )));
                }
                deltas
                    .iter()
                    .any(|d| !matches!(d, Delta::Start { .. } | Delta::Usage(_)))
            }
            // What cannot be read is the relay's to report.
            Err(_) => true,
        };
        if content || decoder.done() || held_bytes > HOLD_LIMIT {
            break;
        }
    }
    let rest = events.into_rest();
    let body = futures_util::stream::iter(held.into_iter().map(Ok)).chain(rest);
    let mut resp = Response::from_parts(parts, body::stream(body));
    resp.extensions_mut().insert(Primed);
    Ok(resp)
}
