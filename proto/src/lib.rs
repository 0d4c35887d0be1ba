//! `fleet-proto`: the `fleet.v1` wire contract plus the small pieces every
//! peer must agree on — agent names and the heartbeat file protocol.
#![forbid(unsafe_code)]

pub mod address;
pub mod clock;
pub mod events;
pub mod heartbeat;
pub mod identity;
pub mod name;
pub mod net;
pub mod paths;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod trace;

/// Generated code for package `fleet.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("fleet.v1");

    impl Verdict {
        /// The word receipts and events use: accepted, queued, draft …
        pub fn word(self) -> &'static str {
            match self {
                Verdict::Delivered => "delivered",
                Verdict::Accepted => "accepted",
                Verdict::Draft => "draft",
                Verdict::Unverifiable => "unverifiable",
                Verdict::Queued => "queued",
                Verdict::Unspecified => "unknown",
            }
        }

        /// The word for a raw enum value off the wire.
        pub fn word_of(v: i32) -> &'static str {
            Verdict::try_from(v).map_or("unknown", Verdict::word)
        }
    }

    impl AgentStatus {
        /// The word `ps`, digests and events use: idle, busy, waiting,
        /// unknown (`-` when no status was set at all).
        pub fn word(self) -> &'static str {
            match self {
                AgentStatus::Ok => "idle",
                AgentStatus::Busy => "busy",
                AgentStatus::Waiting => "waiting",
                AgentStatus::Unknown => "unknown",
                AgentStatus::Unspecified => "-",
            }
        }

        pub fn word_of(v: i32) -> &'static str {
            AgentStatus::try_from(v).map_or("-", AgentStatus::word)
        }
    }

    impl StatusSource {
        /// native, observed, fallback (`-` when unset).
        pub fn word(self) -> &'static str {
            match self {
                StatusSource::Native => "native",
                StatusSource::Observed => "observed",
                StatusSource::Fallback => "fallback",
                StatusSource::Unspecified => "-",
            }
        }

        pub fn word_of(v: i32) -> &'static str {
            StatusSource::try_from(v).map_or("-", StatusSource::word)
        }
    }

    /// Encoded `FileDescriptorSet` of the contract, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/fleet_descriptor.bin"));
}
