//! The `thinkgate` binary: CLI parsing and process setup; the work lives in the crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use thinkgate::simulator_factory;
use thinkgate_config::{ApiKey, Config, LogFormat};
use thinkgate_proxy::http::{self as server, ConnectionLimit};
use thinkgate_proxy::Runtime;
use thinkgate_sim::Simulator;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "thinkgate",
    version,
    about = "A reverse proxy for LLM APIs that picks a reasoning mode, enforces thinking budgets and counts every token."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The TOML config to serve (watched: edits and SIGHUP reload it).
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file and summarize it.
    Check {
        /// The TOML config to validate.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print tokens per request by model, mode and domain, reasoning share, budget use and cost.
    Report {
        /// A live `/metrics` URL (http://) or a file holding a saved scrape.
        #[arg(long)]
        metrics: String,
        /// Instead, the reasoning budget the traffic needs per mode and domain: how often
        /// answers reach today's budget, the percentiles of reasoning that ended on its own,
        /// a suggested budget and what a month would save, and the TOML to paste.
        #[arg(long)]
        budgets: bool,
    },
    /// Classify chat request bodies (JSON lines on stdin) into task domains: one JSON line
    /// each, in order: {"domain", "confidence", "scores"}.
    Classify {
        /// The config whose domains to use (default: the built-in domains).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Instead, measure the classifier on labelled rows (JSON lines of {"domain",
        /// "text", "turns"?, "image"?, "tools"?, "lang"?}): macro accuracy, confusion,
        /// calibration.
        #[arg(long, value_name = "FILE", conflicts_with = "cross_validate")]
        eval: Option<PathBuf>,
        /// Instead, cross-validate on the domains' own examples with this many folds.
        #[arg(long, value_name = "FOLDS")]
        cross_validate: Option<usize>,
    },
    /// Show how one request (a chat body on stdin) would be planned: mode, budget, domain,
    /// candidate models and why, the choice and the fallbacks.
    Route {
        /// Print the whole plan (the only output there is; kept for the documented form).
        #[arg(long)]
        explain: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The TOML config whose models, modes and keys to plan with.
        #[arg(long, short, default_value = "config/thinkgate.toml")]
        config: PathBuf,
        /// Plan as this client key (by its name in the config): its models, modes and caps.
        #[arg(long, value_name = "NAME")]
        key: Option<String>,
        /// Ask this running server (an http:// base URL) instead of planning from the config
        /// file: its live circuit breakers show. Sends $THINKGATE_API_KEY as the key.
        #[arg(long, value_name = "URL", conflicts_with = "key")]
        server: Option<String>,
    },
    /// Run the built-in upstream simulator as an OpenAI-compatible HTTP server.
    Simulate {
        /// Where to listen (not Prometheus's 9090, which a platform team's machine often runs).
        #[arg(long, default_value = "127.0.0.1:8400")]
        listen: SocketAddr,
        /// A config whose `[simulator]` section sets the simulated models.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// `println!` for the commands' output, ending the process quietly when the reader has
/// gone (`thinkgate check | head -1`), as Unix tools do, instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// `print!` likewise.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Classify {
            config,
            eval,
            cross_validate,
        } => match (eval, cross_validate) {
            (None, None) => classify(config.as_deref()),
            (eval, folds) => evaluate(config.as_deref(), eval.as_deref(), folds),
        },
        Command::Route {
            json,
            server: Some(server),
            ..
        } => route_on_server(&server, json),
        Command::Route {
            json, config, key, ..
        } => route(&config, json, key.as_deref()),
        Command::Report { metrics, budgets } => match read_scrape(&metrics) {
            Ok(text) if !thinkgate_metrics::report::is_scrape(&text) => {
                eprintln!(
                    "error: {metrics} is not a scrape of thinkgate's /metrics (it has no thinkgate_ samples)"
                );
                ExitCode::FAILURE
            }
            Ok(text) if budgets => {
                let when = scraped_at(&metrics);
                say_raw!("{}", thinkgate_metrics::budgets::render(&text, when));
                ExitCode::SUCCESS
            }
            Ok(text) => {
                say_raw!("{}", thinkgate_metrics::report::render(&text));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config, listen } => match Config::load_listening_on(&config, listen) {
            Err(e) => config_failed(&e, &config),
            Ok(cfg) => {
                init_logging(cfg.server.log_format, &cfg.server.log_level);
                // Upstream connection pools are kept per serving thread.
                thinkgate_proxy::upstream::set_serving_threads(cfg.server.threads);
                run_control(serve(cfg))
            }
        },
        Command::Simulate { listen, config } => {
            let loaded = config
                .as_deref()
                .map(|path| Config::load(path).map_err(|e| (e, path)));
            let sim = match loaded.transpose() {
                Err((e, path)) => return config_failed(&e, path),
                Ok(cfg) => cfg.map(|c| c.simulator).unwrap_or_default(),
            };
            init_logging(LogFormat::Human, "info");
            run(simulate(listen, sim))
        }
    }
}

/// Runs the serve command's control work (signals, reloads) on a current-thread runtime:
/// requests are served by the threads `serve_on_threads` starts.
fn run_control(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => finish(rt.block_on(fut)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    finish(rt.block_on(fut))
}

fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a file or a log pipeline are
    // noise (and NO_COLOR says no, whatever the terminal).
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        // The request's span once per line (its id, method and path), not also the list of
        // every enclosing span.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
        LogFormat::Human => builder.init(),
    }
}

async fn serve(cfg: Config) -> Result<(), String> {
    let listen = cfg.server.listen;
    let workers = cfg.server.threads;
    let grace = cfg.server.shutdown_grace;
    let limit =
        ConnectionLimit::new(cfg.server.max_connections).with_idle_timeout(cfg.server.idle_timeout);
    let source = cfg.source.clone();
    let runtime = Runtime::build(cfg, Some(simulator_factory(None)))?;
    for route in runtime.config.models.iter() {
        tracing::debug!(model = %route.id, provider = %route.provider, "Model configured.");
    }
    let not_ready: Vec<_> = runtime
        .config
        .providers
        .iter()
        .filter(|p| !p.usable())
        .map(|p| p.name.as_str())
        .collect();
    if runtime.config.auth == thinkgate_config::Auth::None {
        tracing::warn!("Running without client API keys (auth = \"none\"): anyone who can reach this address can use it.");
    } else {
        tracing::info!(keys = runtime.keys.len(), "Client API keys loaded.");
    }
    // A line per provider: a list in a log field would reach JSON logs as one string.
    for provider in &not_ready {
        tracing::warn!(%provider, "A provider has no API key in the environment; its models answer 503.");
    }
    let runtime = Arc::new(ArcSwap::from_pointee(runtime));
    // Edits to the file (and SIGHUP) reload it; a bad edit keeps the running config.
    let _reloader = match server::reload::spawn(source.clone(), runtime.clone()) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!("Hot reload is off: {e}.");
            None
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let service = server::proxy_service(runtime.clone());
    let serving = server::serve_on_threads(listen, workers, service, limit, grace, stopped)?;
    let local = serving.addr;
    tracing::info!(listen = %local, threads = workers, config = %source.display(), "thinkgate is serving.");
    server::shutdown_signal().await;
    let _ = stop.send(true);
    // Each serving thread drains its own connections within the grace period.
    let _ = tokio::task::spawn_blocking(move || serving.wait()).await;
    // The spans of the last requests go out before the process does.
    if let Some(telemetry) = runtime.load().telemetry.clone() {
        telemetry
            .flush(grace.max(std::time::Duration::from_secs(1)))
            .await;
    }
    Ok(())
}

async fn simulate(listen: SocketAddr, config: thinkgate_config::Simulator) -> Result<(), String> {
    let sim = Arc::new(Simulator::new(config));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listen = %local, "The simulator is serving.");
    server::serve(
        listener,
        thinkgate_sim::service(sim),
        ConnectionLimit::new(10_000),
        server::shutdown_signal(),
        std::time::Duration::from_secs(5),
    )
    .await;
    Ok(())
}

/// A config that did not load: each error on its own `error:` line (with its file, line
/// and key), then how many there were; exit code 2.
fn config_failed(e: &thinkgate_config::ConfigError, path: &std::path::Path) -> ExitCode {
    let each = e.each();
    for one in &each {
        eprintln!("error: {one}");
    }
    if each.len() > 1 {
        eprintln!("{} errors in {}", each.len(), path.display());
    }
    ExitCode::from(2)
}

fn check(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_failed(&e, path),
    };
    say!("{}: valid", path.display());
    say!("listen: {}", cfg.server.listen);
    say!("default model (auto): {}", cfg.default_model);
    say!("providers ({}):", cfg.providers.len());
    for p in &cfg.providers {
        let key = match &p.api_key {
            ApiKey::None => "no key".to_string(),
            ApiKey::FromEnv {
                var,
                value: Some(_),
            } => format!("key from ${var}: set"),
            ApiKey::FromEnv { var, value: None } => format!("key from ${var}: NOT SET"),
        };
        let url = if p.base_url.is_empty() {
            "(in process)"
        } else {
            &p.base_url
        };
        // What the upstream speaks: its format, or for OpenAI-format servers their dialect.
        let speaks = match (p.format, p.dialect) {
            (thinkgate_config::WireFormat::Anthropic, _) => "anthropic",
            (thinkgate_config::WireFormat::Gemini, _) => "gemini",
            (thinkgate_config::WireFormat::Responses, _) => "responses",
            (_, dialect) => dialect.as_str(),
        };
        say!(
            "  {:<14} {:<18} {:<11} {}  [{}]",
            p.name,
            p.kind.as_str(),
            speaks,
            url,
            key
        );
    }
    say!("models ({}):", cfg.models.len());
    for m in &cfg.models {
        let mut caps = vec![];
        if m.vision {
            caps.push("vision")
        }
        if m.tools {
            caps.push("tools")
        }
        if m.reasoning {
            caps.push("reasoning")
        }
        say!(
            "  {:<20} via {:<14} as {:<24} ctx {:>7}  ${}/${} per Mtok  [{}]",
            m.id,
            m.provider,
            m.upstream_model,
            m.context_window,
            m.price_input_per_mtok,
            m.price_output_per_mtok,
            caps.join(", ")
        );
    }
    match cfg.auth {
        thinkgate_config::Auth::None => say!("client keys: none (auth = \"none\")"),
        thinkgate_config::Auth::Keys => {
            say!("client keys ({}):", cfg.keys.len());
            for k in &cfg.keys {
                say!("  {:<14} {}", k.name, key_summary(k));
            }
        }
    }
    let unresolved: Vec<_> = cfg.providers.iter().filter(|p| !p.usable()).collect();
    if !unresolved.is_empty() {
        say!(
            "warning: {} provider(s) cannot be used until their key variables are set",
            unresolved.len()
        );
    }
    ExitCode::SUCCESS
}

/// What a client key may use and its limits, on one line (never its secret or digest).
fn key_summary(k: &thinkgate_config::ClientKey) -> String {
    let list = |v: Option<Vec<String>>| v.map_or("all".to_string(), |v| v.join(", "));
    let modes = k
        .modes
        .as_ref()
        .map(|m| m.iter().map(|m| m.as_str().to_string()).collect());
    let l = &k.limits;
    let mut limits = Vec::new();
    let mut add = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            limits.push(format!("{name} {v}"));
        }
    };
    add("rps", l.requests_per_second.map(|v| v.to_string()));
    add("rpm", l.requests_per_minute.map(|v| v.to_string()));
    add("tpm", l.tokens_per_minute.map(|v| v.to_string()));
    add("output/day", l.output_tokens_per_day.map(|v| v.to_string()));
    for (scope, v) in &l.reasoning_tokens_per_minute {
        add(&format!("reasoning/min ({scope})"), Some(v.to_string()));
    }
    for (scope, v) in &l.reasoning_tokens_per_day {
        add(&format!("reasoning/day ({scope})"), Some(v.to_string()));
    }
    format!(
        "models: {}; modes: {}; limits: {}",
        list(k.models.clone()),
        list(modes),
        if limits.is_empty() {
            "none".to_string()
        } else {
            limits.join(", ")
        }
    )
}

/// A scrape's text from a live `http://` endpoint or a file.
/// When a scrape was taken: now for a live URL, the file's modification time for a saved
/// one (seconds since the Unix epoch).
fn scraped_at(source: &str) -> f64 {
    let time = match source.starts_with("http://") {
        true => Some(std::time::SystemTime::now()),
        false => std::fs::metadata(source).and_then(|m| m.modified()).ok(),
    };
    time.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn read_scrape(source: &str) -> Result<String, String> {
    if !source.starts_with("http://") {
        if source.starts_with("https://") {
            return Err(
                "only http:// endpoints can be scraped directly; save the scrape to a file".into(),
            );
        }
        return std::fs::read_to_string(source).map_err(|e| format!("cannot read {source}: {e}"));
    }
    let req = hyper::Request::get(source)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| format!("{source} is not a URL: {e}"))?;
    let (status, body) = exchange(source, req, "fetch")?;
    if !status.is_success() {
        return Err(format!("{source} answered {status}"));
    }
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

/// One request to a plain-http server from the CLI (`report`, `route --server`), within
/// 10 s: its status and body. `doing` names the attempt in the error ("cannot fetch URL").
fn exchange(
    url: &str,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    doing: &str,
) -> Result<(hyper::StatusCode, bytes::Bytes), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let ask = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| format!("cannot {doing} {url}: {e}"))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), ask)
            .await
            .map_err(|_| format!("{url} did not answer within 10 s"))?
    })
}

/// A config with only the built-in domains, for `classify` without `--config`.
const BUILTIN_ONLY: &str = "auth = \"none\"\n[routing]\ndefault_model = \"m\"\n[providers.s]\nkind = \"simulator\"\n[models.m]\nprovider = \"s\"\ncontext_window = 1000\n";

fn load_or_builtin(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Config::parse(
            BUILTIN_ONLY,
            std::path::Path::new("(built-in domains)"),
            &|_| None,
        )
        .map_err(|e| e.to_string()),
    }
}

/// `classify --eval FILE` or `classify --cross-validate K`: prints the evaluation report.
fn evaluate(
    path: Option<&std::path::Path>,
    rows: Option<&std::path::Path>,
    folds: Option<usize>,
) -> ExitCode {
    use thinkgate_proxy::plan::classify::{evaluate::*, Classifier};
    let cfg = match load_or_builtin(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match (rows, folds) {
        (Some(file), _) => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let rows = match LabeledRow::parse_lines(&text) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let classifier = Classifier::train(&cfg.domains, cfg.confidence_threshold);
            Evaluation::run(&classifier, &rows)
        }
        (None, folds) => {
            Evaluation::cross_validate(&cfg.domains, cfg.confidence_threshold, folds.unwrap_or(5))
        }
    };
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = write!(std::io::stdout(), "{report}");
    ExitCode::SUCCESS
}

fn classify(path: Option<&std::path::Path>) -> ExitCode {
    use std::io::{BufRead, Write};
    let cfg = match load_or_builtin(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let classifier =
        thinkgate_proxy::plan::classify::Classifier::train(&cfg.domains, cfg.confidence_threshold);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let row = match thinkgate_proxy::ingress::parse_chat(line.as_bytes()) {
            Ok(req) => {
                let d = classifier.classify(&req);
                let scores: serde_json::Map<String, serde_json::Value> = d
                    .scores
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::json!((*v as f64 * 1000.0).round() / 1000.0),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "domain": d.domain,
                    "confidence": (d.confidence as f64 * 1000.0).round() / 1000.0,
                    "scores": scores,
                })
            }
            Err(e) => {
                // One line out per line in, so the output stays aligned with the input.
                failed = true;
                serde_json::json!({"error": format!("line {}: {}", n + 1, e.message)})
            }
        };
        if writeln!(out, "{row}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    let _ = out.flush();
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `route --explain --server URL`: the running server's plan (`POST /v1/route`) for the
/// body on stdin; exits 1 when no model can take the request.
fn route_on_server(server: &str, as_json: bool) -> ExitCode {
    use std::io::Read;
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("error: stdin: {e}");
        return ExitCode::FAILURE;
    }
    let url = format!("{}/v1/route", server.trim_end_matches('/'));
    let key = std::env::var("THINKGATE_API_KEY").ok();
    let plan = match post_json(&url, body, key.as_deref()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if as_json {
        say!("{plan}");
    } else {
        say_raw!("{}", thinkgate_proxy::explain::render(&plan));
    }
    if plan["chosen"].is_string() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// POSTs a JSON body to a plain-http URL and reads a JSON answer; an error answer is
/// reported by its message.
fn post_json(url: &str, body: Vec<u8>, key: Option<&str>) -> Result<serde_json::Value, String> {
    if !url.starts_with("http://") {
        return Err(format!("{url}: only http:// servers can be asked"));
    }
    let mut req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    if let Some(key) = key {
        let value = hyper::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "THINKGATE_API_KEY is not a valid header value".to_string())?;
        req.headers_mut()
            .insert(hyper::header::AUTHORIZATION, value);
    }
    let (status, bytes) = exchange(url, req, "reach")?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("{url} answered {status} with no JSON"))?;
    if !status.is_success() {
        let why = v["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("{url} answered {status}: {why}"));
    }
    Ok(v)
}

/// `route --explain`: prints the plan; exits 1 when no model can take the request.
fn route(path: &std::path::Path, as_json: bool, key: Option<&str>) -> ExitCode {
    use std::io::Read;
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_failed(&e, path),
    };
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("error: stdin: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match Runtime::build(cfg, Some(simulator_factory(None))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fits = true;
    let fits_seen = &mut fits;
    let code = run(async move {
        let plan = thinkgate_proxy::explain::explain(&runtime, &body, key)
            .await
            .map_err(|e| e.message)?;
        if as_json {
            say!("{plan}");
        } else {
            say_raw!("{}", thinkgate_proxy::explain::render(&plan));
        }
        *fits_seen = plan["chosen"].is_string();
        Ok(())
    });
    if code == ExitCode::SUCCESS && !fits {
        return ExitCode::FAILURE;
    }
    code
}
