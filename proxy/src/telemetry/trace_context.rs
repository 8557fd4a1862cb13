//! W3C trace context (`traceparent`, `tracestate`): read from the client and passed to the
//! upstream, so a trace a client started continues through the vendor's side, and its id
//! is on the request's access line. When the proxy traces, the upstream's parent is the
//! proxy's own call span; otherwise the client's header goes on as it came.

use http::{HeaderMap, HeaderValue};

/// The longest `tracestate` passed on (the W3C limit for what a vendor must propagate).
pub const MAX_TRACESTATE: usize = 512;

/// A valid `traceparent`'s trace id (32 lowercase hex digits), if the headers have one.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    parent(headers).map(|(trace, _, _)| trace)
}

/// A valid `traceparent`'s trace id, parent span id and sampled flag.
pub fn parent(headers: &HeaderMap) -> Option<(&str, &str, bool)> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    if !valid(value) {
        return None;
    }
    let flags = u8::from_str_radix(&value[53..55], 16).ok()?;
    Some((&value[3..35], &value[36..52], flags & 1 == 1))
}

/// Sets the upstream's `traceparent`: `ours` (the proxy's call span) when it traces, else
/// the client's when valid (an invalid one is dropped, as the specification says); with
/// it goes the client's `tracestate`, when within bounds.
pub fn propagate(from: &HeaderMap, ours: Option<&HeaderValue>, to: &mut HeaderMap) {
    let parent = match ours {
        Some(ours) => ours,
        None => match from.get("traceparent") {
            Some(theirs) if theirs.to_str().is_ok_and(valid) => theirs,
            _ => return,
        },
    };
    to.insert("traceparent", parent.clone());
    to.remove("tracestate");
    let state: Vec<&HeaderValue> = from.get_all("tracestate").iter().collect();
    let bytes: usize = state.iter().map(|v| v.len() + 1).sum();
    if !state.is_empty() && bytes <= MAX_TRACESTATE + 1 {
        for v in state {
            to.append("tracestate", v.clone());
        }
    }
}

/// `version-traceid-parentid-flags`: lowercase hex, ids not all zero, version not `ff`;
/// version 00 is exactly 55 characters, a later version may append fields after a dash.
fn valid(value: &str) -> bool {
    let b = value.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|c| *c == b'0');
    if b.len() < 55 || !hex(&b[0..2]) || &b[0..2] == b"ff" {
        return false;
    }
    let shape = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    let fields = hex(&b[3..35]) && hex(&b[36..52]) && hex(&b[53..55]);
    let ids = !zero(&b[3..35]) && !zero(&b[36..52]);
    let length = match &b[0..2] {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    };
    shape && fields && ids && length
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_valid_traceparent_and_its_state_go_upstream() {
        let from = headers(&[
            ("traceparent", GOOD),
            ("tracestate", "vendor=abc"),
            ("tracestate", "x=1"),
        ]);
        let mut to = HeaderMap::new();
        propagate(&from, None, &mut to);
        assert_eq!(to["traceparent"], GOOD);
        assert_eq!(to.get_all("tracestate").iter().count(), 2);
        assert_eq!(trace_id(&from), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            parent(&from),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true))
        );
    }

    #[test]
    fn the_proxys_own_span_is_the_upstreams_parent_when_it_traces() {
        let ours =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01");
        let from = headers(&[("traceparent", GOOD), ("tracestate", "vendor=abc")]);
        let mut to = HeaderMap::new();
        propagate(&from, Some(&ours), &mut to);
        assert_eq!(to["traceparent"], ours);
        assert_eq!(to["tracestate"], "vendor=abc");
        // A trace the proxy started has no client state to carry.
        let mut to = HeaderMap::new();
        propagate(&HeaderMap::new(), Some(&ours), &mut to);
        assert_eq!(to["traceparent"], ours);
        assert!(to.get("tracestate").is_none());
        let unsampled = headers(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )]);
        assert_eq!(parent(&unsampled).map(|p| p.2), Some(false));
    }

    #[test]
    fn invalid_ones_are_dropped() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 is exact
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // dashes misplaced
            "garbage",
        ] {
            let mut to = HeaderMap::new();
            propagate(
                &headers(&[("traceparent", bad), ("tracestate", "a=b")]),
                None,
                &mut to,
            );
            assert!(to.is_empty(), "{bad}");
            assert_eq!(trace_id(&headers(&[("traceparent", bad)])), None, "{bad}");
        }
        // A later version may carry more fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(trace_id(&headers(&[("traceparent", later)])).is_some());
    }

    #[test]
    fn an_oversized_tracestate_is_left_behind() {
        let big = format!("v={}", "x".repeat(600));
        let mut to = HeaderMap::new();
        propagate(
            &headers(&[("traceparent", GOOD), ("tracestate", &big)]),
            None,
            &mut to,
        );
        assert_eq!(to["traceparent"], GOOD);
        assert!(to.get("tracestate").is_none());
    }
}
