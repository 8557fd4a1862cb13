//! Limit and quota state shared by every replica, in Redis: one script call admits a request
//! against all of its key's limits atomically (GCRA for rates and per-minute tokens, counters
//! with expiry for daily quotas, on Redis's clock so the replicas' clocks do not matter), and
//! one settles it when its response ends.
//!
//! An admission makes one round trip, bounded by `[state] timeout`; when Redis is slow or
//! down the caller applies the configured failure behaviour. The connection is a multiplexed
//! `ConnectionManager`, which reconnects by itself; the first one is made in the background,
//! so a replica starts (and fails open or closed) while Redis is still away. Transitions
//! between reachable and not are logged once each and shown in `thinkgate_state_backend_up`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntGauge};
use redis::aio::ConnectionManager;
use thinkgate_config::RedisState;
use thinkgate_metrics::Metrics;

/// One limit checked at admission.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A request rate: microseconds per request, and the window its burst spans.
    Rate { per_us: u64, window_us: u64 },
    /// Tokens per minute: microseconds per token, and the tokens to take now (0: only
    /// checks that the limit is not in debt).
    Tokens { per_us: u64, take: u64 },
    /// A daily quota, and the most to hold against it until the request settles.
    Quota { quota: u64, hold: u64 },
}

/// One step of settling a request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Charges tokens to a per-minute limit (past its burst, as debt).
    Debit { key: String, per_us: u64, n: u64 },
    /// Lets go of what an admission held against a daily quota.
    Release { key: String, n: u64 },
    /// Spends against a daily quota.
    Spend { key: String, n: u64 },
}

/// What Redis said of an admission.
#[derive(Debug)]
pub enum Verdict {
    /// Every check passed: per check, what remains and what is held.
    Admitted(Vec<(u64, u64)>),
    /// The check at this index refused; it would pass after this long.
    Refused { index: usize, wait: Duration },
    /// Redis did not answer within the timeout (or is not connected).
    Unavailable,
}

/// The shared state of one `[state]` config; see the module docs.
pub struct SharedState {
    pub config: RedisState,
    admit: redis::Script,
    settle: redis::Script,
    conn: Arc<ArcSwapOption<ConnectionManager>>,
    reachable: AtomicBool,
    up: IntGauge,
    unavailable: IntCounter,
    lost_settlements: IntCounter,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// The shared state for `config`; connects in the background (there must be a tokio
    /// runtime to connect on; without one, every admission is `Unavailable`).
    pub fn start(config: &RedisState, metrics: &Metrics) -> Result<Arc<SharedState>, String> {
        // The URL is not echoed: it may hold a password.
        let client = redis::Client::open(config.url.expose()).map_err(|e| {
            format!(
                "[state] url is not a Redis URL this client can use ({:?})",
                e.kind()
            )
        })?;
        let on_failure = match config.on_failure {
            thinkgate_config::OnFailure::Open => "open",
            thinkgate_config::OnFailure::Closed => "closed",
        };
        let shared = Arc::new(SharedState {
            config: config.clone(),
            admit: redis::Script::new(include_str!("scripts/admit.lua")),
            settle: redis::Script::new(include_str!("scripts/settle.lua")),
            conn: Arc::new(ArcSwapOption::empty()),
            reachable: AtomicBool::new(false),
            up: metrics.state_backend_up.clone(),
            unavailable: metrics.state_unavailable.with_label_values(&[on_failure]),
            lost_settlements: metrics.state_lost_settlements.clone(),
        });
        shared.up.set(0);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let scripts = [shared.admit.clone(), shared.settle.clone()];
            runtime.spawn(connect(client, shared.conn.clone(), scripts));
        }
        Ok(shared)
    }

    /// Whether the first connection has been made (the manager keeps it up after that).
    pub fn connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// Key names under the config's prefix.
    pub fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}:{parts}", self.config.prefix)
    }

    /// A handle on the shared connection (cheap: the manager multiplexes), once made.
    fn connection(&self) -> Option<ConnectionManager> {
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// Admits against every check in one round trip, within the timeout.
    pub async fn admit(&self, checks: &[Check]) -> Verdict {
        let Some(mut conn) = self.connection() else {
            self.unreachable("not connected yet");
            return Verdict::Unavailable;
        };
        let mut invocation = self.admit.prepare_invoke();
        invocation.arg(checks.len());
        for c in checks {
            invocation.key(&c.key);
            match c.kind {
                Kind::Rate { per_us, window_us } => invocation.arg("g").arg(per_us).arg(window_us),
                Kind::Tokens { per_us, take } => invocation.arg("t").arg(per_us).arg(take),
                Kind::Quota { quota, hold } => invocation.arg("q").arg(quota).arg(hold),
            };
        }
        let sent = invocation.invoke_async::<Vec<i64>>(&mut conn);
        let reply = match within(self.config.timeout, sent).await {
            Ok(reply) => reply,
            Err(why) => {
                self.unreachable(&why);
                return Verdict::Unavailable;
            }
        };
        self.reached();
        match reply.as_slice() {
            [1, rest @ ..] if rest.len() == 2 * checks.len() => Verdict::Admitted(
                rest.chunks_exact(2)
                    .map(|p| (p[0].max(0) as u64, p[1].max(0) as u64))
                    .collect(),
            ),
            [0, index, wait] if (1..=checks.len() as i64).contains(index) => Verdict::Refused {
                index: (*index - 1) as usize,
                wait: Duration::from_micros((*wait).max(0) as u64),
            },
            _ => {
                self.unreachable("its script answered in an unexpected shape");
                Verdict::Unavailable
            }
        }
    }

    /// The bytes stored under `key` (another replica may have written them), within the
    /// timeout; `Err` when Redis does not answer.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ()> {
        let mut conn = self.connection().ok_or(())?;
        let cmd = redis::cmd("GET").arg(key).to_owned();
        let sent = cmd.query_async::<Option<Vec<u8>>>(&mut conn);
        within(self.config.timeout, sent)
            .await
            .map_err(|why| self.down(&why))
    }

    /// Stores `value` under `key` for `ttl`, in the background (a value Redis cannot take
    /// is lost, as from a cache: then `lost` runs).
    pub fn set_later(
        self: &Arc<Self>,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
        lost: impl FnOnce() + Send + 'static,
    ) {
        let millis = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(millis)
            .to_owned();
        self.write_later(
            move |_, mut conn| async move { cmd.query_async::<()>(&mut conn).await },
            lost,
        );
    }

    /// Settles in the background (the response has ended; nobody waits for it). A settlement
    /// Redis cannot take is counted in `thinkgate_state_lost_settlements_total`.
    pub fn settle(self: &Arc<Self>, steps: Vec<Step>) {
        if steps.is_empty() {
            return;
        }
        let lost = self.lost_settlements.clone();
        self.write_later(
            move |shared, mut conn| async move {
                let mut invocation = shared.settle.prepare_invoke();
                invocation.arg(steps.len());
                for step in &steps {
                    match step {
                        Step::Debit { key, per_us, n } => {
                            invocation.key(key).arg("d").arg(*n).arg(*per_us);
                        }
                        Step::Release { key, n } => {
                            invocation.key(key).arg("r").arg(*n);
                        }
                        Step::Spend { key, n } => {
                            invocation.key(key).arg("s").arg(*n);
                        }
                    }
                }
                invocation.invoke_async::<i64>(&mut conn).await.map(drop)
            },
            move || lost.inc(),
        );
    }

    /// Sends a write off the request's path (it may wait longer than an admission, up to
    /// [`WRITE_TIMEOUT`]); `lost` runs when it cannot be sent or Redis does not take it.
    fn write_later<F, Fut>(self: &Arc<Self>, write: F, lost: impl FnOnce() + Send + 'static)
    where
        F: FnOnce(Arc<Self>, ConnectionManager) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = redis::RedisResult<()>> + Send,
    {
        let (Ok(runtime), Some(conn)) = (tokio::runtime::Handle::try_current(), self.connection())
        else {
            lost();
            return;
        };
        let shared = self.clone();
        runtime.spawn(async move {
            match within(WRITE_TIMEOUT, write(shared.clone(), conn)).await {
                Ok(()) => shared.reached(),
                Err(why) => {
                    lost();
                    shared.down(&why);
                }
            }
        });
    }

    /// Counts an admission decided without Redis, and logs the change once.
    fn unreachable(&self, why: &str) {
        self.unavailable.inc();
        self.down(why);
    }

    /// Shows and logs (once) that Redis does not answer.
    fn down(&self, why: &str) {
        if self.reachable.swap(false, Ordering::Relaxed) {
            self.up.set(0);
            let on_failure = match self.config.on_failure {
                thinkgate_config::OnFailure::Open => {
                    "admitting by local limits at limit / replicas"
                }
                thinkgate_config::OnFailure::Closed => "refusing requests with 429",
            };
            tracing::warn!(
                why,
                replicas = self.config.replicas,
                "The shared limit state (Redis) does not answer; {on_failure} until it does.",
            );
        }
    }

    fn reached(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            self.up.set(1);
            tracing::info!("The shared limit state (Redis) answers; limits are shared again.");
        }
    }
}

/// The longest a write sent after a response (a settlement, a stored conversation) waits for
/// Redis.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// `sent`'s answer within `timeout`, or why there is none.
async fn within<T>(
    timeout: Duration,
    sent: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Connects, retrying each second until Redis answers, and loads the scripts (so the first
/// admissions do not each find them missing); the manager reconnects by itself after that.
async fn connect(
    client: redis::Client,
    slot: Arc<ArcSwapOption<ConnectionManager>>,
    scripts: [redis::Script; 2],
) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)));
    let mut logged = false;
    loop {
        match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(mut manager) => {
                for script in &scripts {
                    // A failure here is not fatal: invoking a script loads it when missing.
                    let _ = script.load_async(&mut manager).await;
                }
                slot.store(Some(Arc::new(manager)));
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "Cannot connect to the shared limit state (Redis) yet; trying each second.");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
