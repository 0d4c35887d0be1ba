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

    /// Encoded `FileDescriptorSet` of the contract, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/fleet_descriptor.bin"));
}
