//! The gRPC codec of every Fleet service: prost's, with smaller starting
//! buffers. tonic gives each stream an 8 KiB encode and an 8 KiB decode
//! buffer up front; an aggregator holds one `HostLink` stream per host, and
//! most of its messages are a few hundred bytes, so at 10,000 hosts those
//! buffers alone were 160 MB. Here they start at 1 KiB and grow as a
//! message needs (a large snapshot chunk grows its buffer like before).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Starting size of a stream's encode and decode buffer.
pub const BUFFER: usize = 1024;
/// tonic's own: how much encoded data a stream gathers before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with [`BUFFER`]-sized starting buffers.
#[derive(Debug)]
pub struct FleetCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for FleetCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER, YIELD_THRESHOLD)
}

impl<T, U> Codec for FleetCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codec::{Decoder, Encoder};

    #[test]
    fn both_directions_start_small() {
        let mut c = FleetCodec::<crate::v1::HostMessage, crate::v1::AggregatorMessage>::default();
        // BufferSettings shows its fields only in its Debug form.
        let small = format!("buffer_size: {BUFFER},");
        assert!(format!("{:?}", c.encoder().buffer_settings()).contains(&small));
        assert!(format!("{:?}", c.decoder().buffer_settings()).contains(&small));
    }
}
