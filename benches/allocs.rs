//! Allocations per relayed chunk: a counting global allocator around the system one, and
//! the pass-through relay (an OpenAI-format stream, no budget) over 256 and 1,024 chunks in
//! the same run, so the per-chunk figure is the difference and not the per-request setup.
//!
//! `cargo bench --bench allocs`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::BodyExt;
use thinkgate_config::Config;
use thinkgate_proxy::body;
use thinkgate_proxy::relay;
use thinkgate_proxy::telemetry::Account;
use thinkgate_proxy::upstream::WireFormat;
use thinkgate_proxy::Runtime;

/// The system allocator, counting calls and bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One chunk, shared as hyper's body chunks are (split from its read buffer), so that slicing
/// it counts a reference instead of allocating the header a `Vec`-backed `Bytes` gets on its
/// first share. The promotion happens here, before the counting starts.
fn chunk(i: usize) -> Bytes {
    shared_bytes(format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

fn shared_bytes(text: String) -> Bytes {
    let bytes = Bytes::from(text);
    drop(bytes.clone());
    bytes
}

/// Allocations and bytes while relaying `n` chunks (plus the finish, usage and [DONE]).
fn relay_counts(rt: &tokio::runtime::Runtime, runtime: &Runtime, n: usize) -> (u64, u64) {
    let mut frames: Vec<Bytes> = (0..n).map(chunk).collect();
    frames.push(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9,\"total_tokens\":14}}\n\n",
    ));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let route = runtime.route("qwen3-local").expect("demo model").clone();
    let account = Account::open(runtime.metrics.clone(), "chat_completions");
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    rt.block_on(async {
        let upstream = body::stream(futures_util::stream::iter(frames.into_iter().map(Ok)));
        let mut ctx = relay::Context::new(
            HeaderValue::from_static("bench"),
            Arc::clone(&route),
            account,
            true,
            thinkgate_proxy::plan::PromptCount::counted(5),
            &runtime.config.server,
        );
        ctx.format = WireFormat::OpenAi;
        let mut out = relay::stream(ctx, Response::new(upstream)).into_body();
        while let Some(f) = out.frame().await {
            drop(f);
        }
    });
    (
        ALLOCS.load(Ordering::Relaxed) - a0,
        BYTES.load(Ordering::Relaxed) - b0,
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("allocation counts: run with `cargo bench --bench allocs`");
        return;
    }
    let cfg = Config::parse(
        include_str!("../config/demo.toml"),
        "demo.toml".as_ref(),
        &|_| None,
    )
    .expect("demo config");
    let runtime = Runtime::build(cfg, Some(thinkgate::simulator_factory(None))).expect("runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    relay_counts(&rt, &runtime, 16); // warm up lazily built state
    let (a1, b1) = relay_counts(&rt, &runtime, 256);
    let (a2, b2) = relay_counts(&rt, &runtime, 1024);
    let per_chunk = (a2 - a1) as f64 / 768.0;
    let bytes_per_chunk = (b2 - b1) as f64 / 768.0;
    println!("== pass-through relay (OpenAI format, no budget) ==");
    println!("256 chunks: {a1} allocations ({b1} bytes); 1,024 chunks: {a2} ({b2} bytes)");
    println!("per relayed chunk: {per_chunk:.2} allocations, {bytes_per_chunk:.0} bytes");
}
