//! The protobuf codec of every crowd RPC: prost's, with small buffers.
//!
//! tonic allocates a codec buffer for every call when it starts (8 KiB
//! by default) and grows it in steps of the same size. A rider's phone
//! keeps one report stream open for its ride, so a server holds one such
//! call per rider, most of them idle: at 10,000 streams the default
//! buffers alone took about 80 MB per direction. Reports and acks are a
//! few hundred bytes, so [`BUFFER_BYTES`] fits them; a batch of reports
//! grows its buffer in steps of that size. The yield threshold (how much
//! a stream of responses gathers before it is flushed) keeps tonic's
//! default.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size and growth step of a call's codec buffer.
pub const BUFFER_BYTES: usize = 1024;
/// Bytes of ready responses gathered before a flush (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`tonic_prost::ProstCodec`] with [`BUFFER_BYTES`] buffers; the generated
/// services and clients use it (`proto/build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
