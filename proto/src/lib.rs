//! `fleet-proto`: the `fleet.v1` wire contract plus the small pieces every
//! peer must agree on — agent names and the heartbeat file protocol.
#![forbid(unsafe_code)]

pub mod address;
pub mod clock;
pub mod codec;
pub mod digest;
pub mod events;
pub mod heartbeat;
pub mod identity;
pub mod name;
pub mod paths;
pub mod reach;
pub mod select;
pub mod stream;
pub mod telemetry;
pub mod trace;
pub mod vocab;
pub mod waits;

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

/// The reflection services both daemons serve, v1 and v1alpha (many tools,
/// grpcurl 1.8 among them, ask only v1alpha); each lists every service.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
