//! `fleet-net`: how Fleet's daemons and clients meet, and what they all
//! keep (`audit`, the one audit-log writer). `tls` is mTLS with
//! files that reload (certificates and CA bundles checked before they are
//! used, the last good one kept); `transport` is the TLS listener that tags
//! each connection with its peer's identity, the dialer that checks who
//! answered, and the drain every daemon shares at shutdown; `reload` is the one way a file is re-read while a daemon
//! runs (the last good value kept); `backoff` is the one validated retry
//! schedule; `signal` is the stop request (SIGTERM, SIGINT) they all honour. The wire
//! contract itself is `fleet-proto`'s.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backoff;
pub mod metrics;
pub mod reload;
pub mod signal;
pub mod tls;
pub mod transport;
