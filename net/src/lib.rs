//! `fleet-net`: how Fleet's daemons and clients meet. `tls` is mTLS with
//! files that reload (certificates and CA bundles checked before they are
//! used, the last good one kept); `transport` is the TLS listener that tags
//! each connection with its peer's identity, the dialer that checks who
//! answered, and the drain every daemon shares at shutdown; `reload` is the one way a file is re-read while a daemon
//! runs (the last good value kept); `backoff` is the one validated retry
//! schedule. The wire
//! contract itself is `fleet-proto`'s.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod reload;
pub mod tls;
pub mod transport;
