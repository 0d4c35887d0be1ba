//! `fleet-proto`: the `fleet.v1` wire contract plus the small pieces every
//! peer must agree on — agent names and the heartbeat file protocol.
#![forbid(unsafe_code)]

pub mod heartbeat;
pub mod name;
pub mod paths;

/// Generated code for package `fleet.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("fleet.v1");

    /// Encoded `FileDescriptorSet` of the contract, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/fleet_descriptor.bin"));
}
