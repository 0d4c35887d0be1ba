//! Heartbeat protocol v1 (placeholder, filled in by the heartbeat work).
