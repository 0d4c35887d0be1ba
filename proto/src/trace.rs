//! W3C trace context (`traceparent: 00-<trace-id>-<span-id>-<flags>`) as it
//! travels inside commands.

/// A parsed `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub span_id: String,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses version-00 headers; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
        if v != "00" || !hex(t, 32) || !hex(p, 16) || !hex(f, 2) || parts.next().is_some() {
            return None;
        }
        if t.bytes().all(|b| b == b'0') || p.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: t.to_ascii_lowercase(),
            span_id: p.to_ascii_lowercase(),
            sampled: u8::from_str_radix(f, 16).is_ok_and(|f| f & 1 == 1),
        })
    }

    /// A new root context with random ids.
    pub fn fresh() -> Self {
        Self {
            trace_id: format!("{:032x}", rand::random::<u128>() | 1),
            span_id: format!("{:016x}", rand::random::<u64>() | 1),
            sampled: true,
        }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// The trace id in `traceparent`, or a fresh one when it is absent or bad.
pub fn trace_id(traceparent: &str) -> String {
    TraceParent::parse(traceparent)
        .unwrap_or_else(TraceParent::fresh)
        .trace_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_headers() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(s).unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled);
        assert_eq!(t.to_string(), s);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(trace_id(s), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace_id("junk").len(), 32);
    }
}
