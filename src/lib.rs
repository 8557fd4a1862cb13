//! The `thinkgate` binary's glue, shared with its tests and benches: the built-in simulator
//! (crate `thinkgate-sim`) plugged into the proxy as its in-process upstream. The proxy crate
//! knows only the [`LocalUpstream`] trait; this is the one place that joins the two.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;
use thinkgate_proxy::body::Body;
use thinkgate_proxy::upstream::{LocalFactory, LocalUpstream};
use thinkgate_sim::Simulator;

/// The simulator as an in-process upstream.
pub struct InProcessSimulator(pub Arc<Simulator>);

impl LocalUpstream for InProcessSimulator {
    fn call(&self, req: Request<Full<Bytes>>) -> BoxFuture<'static, Response<Body>> {
        let sim = self.0.clone();
        Box::pin(async move { sim.handle(req).await })
    }
}

/// Builds a simulator from each config load's `[simulator]` section; `latest` (when given)
/// holds the one serving now, for tests that read its counters.
pub fn simulator_factory(latest: Option<Arc<ArcSwapOption<Simulator>>>) -> LocalFactory {
    Arc::new(move |config: &thinkgate_config::Config| {
        let sim = Arc::new(Simulator::new(config.simulator.clone()));
        if let Some(slot) = &latest {
            slot.store(Some(sim.clone()));
        }
        Arc::new(InProcessSimulator(sim)) as Arc<dyn LocalUpstream>
    })
}
