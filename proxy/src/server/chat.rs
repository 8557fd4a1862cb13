//! `POST /v1/chat/completions`: the stages in order — ingress, plan, provider, egress.

use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::egress;
use crate::ingress;
use crate::plan;
use crate::providers::{self, openai, ApiErrorOrRaw};
use crate::runtime::Runtime;

pub async fn handle(
    runtime: &Runtime,
    req: Request<Incoming>,
    request_id: http::HeaderValue,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let server = &runtime.config.server;
    let bytes = match ingress::read_body(&parts.headers, body, server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let chat = match ingress::parse_chat(&bytes) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let plan = match plan::plan(runtime, &chat.model) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let route = plan.route;
    let upstream_body = openai::request_body(&chat, &route.model.upstream_model);
    let sent = route
        .upstream
        .send(upstream_body, chat.stream, &request_id, &parts.headers)
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let err = e.into_api(&route.upstream.name);
            tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = err.status.as_u16(), "Upstream request failed: {}.", err.message);
            return err.into_response();
        }
    };
    let model_header = route.header.clone();
    let mut out = if !resp.status().is_success() {
        let status = resp.status();
        tracing::warn!(model = %route.model.id, provider = %route.upstream.name, status = status.as_u16(), "Upstream returned an error.");
        match providers::error_response(&route.upstream.name, resp).await {
            ApiErrorOrRaw::Api(e) => e.into_response(),
            ApiErrorOrRaw::Raw(status, bytes) => {
                let mut r = Response::new(body::full(bytes));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    } else {
        let is_sse = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let ctx = egress::Context {
            request_id,
            route,
            include_usage: chat.include_usage,
            started,
            request_timeout: server.request_timeout,
        };
        if chat.stream && is_sse {
            egress::stream(ctx, resp)
        } else {
            egress::whole(ctx, resp).await
        }
    };
    out.headers_mut().insert("x-thinkgate-model", model_header);
    if let Some(mode) = plan.mode {
        out.headers_mut().insert(
            "x-thinkgate-mode",
            http::HeaderValue::from_static(mode.as_str()),
        );
    }
    out
}
