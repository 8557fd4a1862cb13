//! The endpoint table: which handler answers which method and path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::request_id::RequestId;
use super::{chat, messages, openai, responses};
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::state::Runtime;
use crate::telemetry::spans::{self, TraceSpan};
use crate::telemetry::{trace_context, Account};
use crate::{explain, ingress};

/// The proxy's endpoints over the current runtime (swapped whole on reload).
#[derive(Clone)]
pub struct Router {
    pub runtime: Arc<ArcSwap<Runtime>>,
}

impl tower::Service<Request<Incoming>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let runtime = self.runtime.load_full();
        Box::pin(async move { Ok(route(&runtime, req).await) })
    }
}

const PATHS: [&str; 11] = [
    "/v1/chat/completions",
    "/v1/route",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// The path as `http.route`: one of [`PATHS`], whatever path a client sends.
fn path_label(path: &str) -> &'static str {
    PATHS
        .iter()
        .find(|p| **p == path)
        .copied()
        .unwrap_or("other")
}

/// The `endpoint` label: a fixed set, whatever path a client sends.
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat_completions",
        "/v1/responses" => "responses",
        "/v1/embeddings" => "embeddings",
        "/v1/completions" => "completions",
        "/v1/messages" => "messages",
        "/v1/messages/count_tokens" => "messages_count_tokens",
        "/v1/models" => "models",
        "/v1/route" => "route",
        p if p.starts_with("/v1/models/") => "models",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "other",
    }
}

async fn route(runtime: &Arc<Runtime>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/metrics" && req.method() == Method::GET {
        // The scrape is not traffic: it is neither counted nor in flight while it renders.
        return metrics_response(runtime);
    }
    let mut account = Account::open(runtime.metrics.clone(), endpoint_label(path));
    account.request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let operation = spans::operation(account.endpoint());
    account.span = runtime
        .telemetry
        .as_ref()
        .zip(operation)
        .map(|(exporter, op)| {
            Box::new(TraceSpan::request(
                exporter,
                req.headers(),
                op,
                path_label(path),
            ))
        });
    match &account.span {
        Some(span) => {
            let trace_id = span.trace_id();
            tracing::Span::current().record("trace_id", tracing::field::display(trace_id));
        }
        None => {
            account.trace_id = trace_context::trace_id(req.headers()).map(str::to_string);
            if let Some(id) = &account.trace_id {
                tracing::Span::current().record("trace_id", id.as_str());
            }
        }
    }
    // Anthropic's clients get Anthropic's error shape, from the first check on.
    let anthropic = path == "/v1/messages" || path.starts_with("/v1/messages/");
    if let Err(e) = check_head(req.headers()) {
        return shaped(runtime, anthropic, account.reject(e)).await;
    }
    // The API needs a key (when keys are configured); health and metrics do not.
    let key = if path.starts_with("/v1/") {
        match runtime.keys.authenticate(req.headers()) {
            Ok(k) => k,
            Err(e) => {
                tracing::info!(path, "Refused a request without a valid API key.");
                return shaped(runtime, anthropic, account.reject(e)).await;
            }
        }
    } else {
        None
    };
    let request_id = || {
        req.extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or(HeaderValue::from_static("unknown"))
    };
    let resp = match (req.method(), path) {
        (&Method::POST, "/v1/messages") => {
            let id = request_id();
            return messages::handle(runtime, req, id, account, key).await;
        }
        (&Method::POST, "/v1/embeddings") => {
            let id = request_id();
            return openai::embeddings(runtime, req, id, account, key).await;
        }
        (&Method::POST, "/v1/completions") => {
            let id = request_id();
            return openai::completions(runtime, req, id, account, key).await;
        }
        (&Method::POST, "/v1/responses") => {
            let id = request_id();
            return responses::handle(runtime, req, id, account, key).await;
        }
        (&Method::POST, "/v1/messages/count_tokens") => {
            return messages::count_tokens(runtime, req, account, key).await;
        }
        (&Method::POST, "/v1/chat/completions") => {
            let id = request_id();
            // The chat pipeline owns the account from here: a stream records when it ends.
            return chat::handle(runtime, req, id, account, key).await;
        }
        (&Method::POST, "/v1/route") => {
            let (parts, body) = req.into_parts();
            let read = ingress::read_within(&parts.headers, body, &runtime.config.server);
            let plan = match read.await {
                Ok(bytes) => {
                    explain::plan_of(runtime, &bytes, &parts.headers, key.as_deref()).await
                }
                Err(e) => Err(e),
            };
            match plan {
                Ok(plan) => body::json_response(StatusCode::OK, plan.to_string()),
                Err(e) => e.into_response(),
            }
        }
        // Anthropic's SDKs (Claude Code's model list) send anthropic-version.
        (&Method::GET, "/v1/models") if req.headers().contains_key("anthropic-version") => {
            body::json_response(StatusCode::OK, runtime.anthropic_models_body.clone())
        }
        (&Method::GET, "/v1/models") => {
            body::json_response(StatusCode::OK, runtime.models_body.clone())
        }
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            let anthropic = req.headers().contains_key("anthropic-version");
            match runtime.model_object(id, anthropic) {
                Some(object) => body::json_response(StatusCode::OK, object),
                None => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    format!("The model `{id}` does not exist (see GET /v1/models)"),
                )
                .with_param("model")
                .with_code("model_not_found")
                .into_response(),
            }
        }
        // Claude Code probes the base URL before its first request.
        (&Method::HEAD, "/") => Response::new(body::full("")),
        (&Method::GET, "/healthz") => body::json_response(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, "/readyz") => {
            if runtime.ready() {
                body::json_response(StatusCode::OK, r#"{"status":"ready"}"#)
            } else {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "no configured upstream can take requests (are their API key variables set?)",
                )
                .with_code("not_ready")
                .into_response()
            }
        }
        (method, p) if PATHS.contains(&p) => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("{method} is not allowed on {p}"),
        )
        .into_response(),
        (method, p) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {p})"),
        )
        .with_code("unknown_url")
        .into_response(),
    };
    account.status = resp.status().as_u16();
    shaped(runtime, anthropic, resp).await
}

/// `resp` in Anthropic's shape for its paths, as it is for every other.
async fn shaped(runtime: &Runtime, anthropic: bool, resp: Response<Body>) -> Response<Body> {
    match anthropic {
        true => messages::in_shape(runtime, resp).await,
        false => resp,
    }
}

fn metrics_response(runtime: &Runtime) -> Response<Body> {
    // An open breaker turns half-open by time alone: show each as calls would meet it now.
    let now = std::time::Instant::now();
    for route in runtime.routes().flat_map(|r| r.deployments()) {
        route.metrics.breaker_is(route.breaker.state(now).0);
    }
    let mut resp = Response::new(body::full(runtime.metrics.render()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(thinkgate_metrics::CONTENT_TYPE),
    );
    resp
}

/// Refuses a request head over the proxy's limits with a 431 in OpenAI's shape (hyper's own
/// limits, set higher, answer with an empty body).
fn check_head(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > super::MAX_HEADERS || bytes > super::MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request has {} headers of {bytes} bytes; the limits are {} headers and {} bytes",
                headers.len(),
                super::MAX_HEADERS,
                super::MAX_HEADER_BYTES
            ),
        )
        .with_code("request_header_fields_too_large"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, without making one.
    fn future_size<A, F: Future>(_: &impl Fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A request is one state machine, boxed once and moved through its stages: every byte
    /// of it is copied per request. Rare paths (contemplating, failures, hedges, the budget
    /// guard) are boxed where they branch off so that they do not grow it; this holds the
    /// line (it was 29 KiB before, and `cargo bench --bench request` showed the copies).
    #[test]
    fn a_requests_future_stays_small() {
        const MAX: usize = 16 * 1024;
        let config = thinkgate_config::Config::parse(
            "auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.p]\nkind = \"simulator\"\n\
             [models.m]\nprovider = \"p\"\nupstream_model = \"m\"\ncontext_window = 1000\n",
            "size.toml".as_ref(),
            &|_| None,
        )
        .expect("config");
        let runtime = Arc::new(Runtime::build(config, None).expect("runtime"));
        let size = future_size(&|req: Request<Incoming>| route(&runtime, req));
        assert!(
            size <= MAX,
            "a request's future is {size} bytes, over {MAX}"
        );
    }
}
