//! Length-delimited prost frames for `/shoal/xchg/1.0.0` and
//! `/shoal/head/1.0.0`: an unsigned varint length, then one protobuf
//! message. The length is checked against the protocol's cap before a byte
//! of the body is buffered, and the body goes through shoal-core's decoders,
//! which enforce entry limits and verify every block against its CID. That
//! work runs in the connection's task, not in the event loop.

use std::{io, marker::PhantomData};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};
use prometheus_client::metrics::counter::Counter;
use shoal_core::{
    exchange::{ExchangeRequest, ExchangeResponse, HeadRequest, HeadResponse, WireError},
    limits::{MAX_EXCHANGE_REQUEST_BYTES, MAX_EXCHANGE_RESPONSE_BYTES, MAX_HEAD_RESPONSE_BYTES},
};

/// Protocol name of the chunk exchange.
pub const EXCHANGE_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/xchg/1.0.0");
/// Protocol name of the channel head exchange.
pub const HEAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/head/1.0.0");

/// Head requests are a channel id and a count; 256 bytes is generous.
const MAX_HEAD_REQUEST_BYTES: usize = 256;

/// A varint longer than this cannot encode a length we accept.
const MAX_VARINT_BYTES: usize = 10;

/// One request-response protocol's messages, caps and decoders.
pub(crate) trait Wire: Send + Clone + 'static {
    type Request: Send;
    type Response: Send;
    const MAX_REQUEST: usize;
    const MAX_RESPONSE: usize;
    fn decode_request(b: &[u8]) -> Result<Self::Request, WireError>;
    fn decode_response(b: &[u8]) -> Result<Self::Response, WireError>;
    fn encode_request(r: &Self::Request) -> Vec<u8>;
    fn encode_response(r: &Self::Response) -> Vec<u8>;
}

/// `/shoal/xchg/1.0.0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange;

impl Wire for Exchange {
    type Request = ExchangeRequest;
    type Response = ExchangeResponse;
    const MAX_REQUEST: usize = MAX_EXCHANGE_REQUEST_BYTES;
    const MAX_RESPONSE: usize = MAX_EXCHANGE_RESPONSE_BYTES;
    fn decode_request(b: &[u8]) -> Result<Self::Request, WireError> {
        ExchangeRequest::decode(b)
    }
    fn decode_response(b: &[u8]) -> Result<Self::Response, WireError> {
        ExchangeResponse::decode(b)
    }
    fn encode_request(r: &Self::Request) -> Vec<u8> {
        r.encode()
    }
    fn encode_response(r: &Self::Response) -> Vec<u8> {
        r.encode()
    }
}

/// `/shoal/head/1.0.0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head;

impl Wire for Head {
    type Request = HeadRequest;
    type Response = HeadResponse;
    const MAX_REQUEST: usize = MAX_HEAD_REQUEST_BYTES;
    const MAX_RESPONSE: usize = MAX_HEAD_RESPONSE_BYTES;
    fn decode_request(b: &[u8]) -> Result<Self::Request, WireError> {
        HeadRequest::decode(b)
    }
    fn decode_response(b: &[u8]) -> Result<Self::Response, WireError> {
        HeadResponse::decode(b)
    }
    fn encode_request(r: &Self::Request) -> Vec<u8> {
        r.encode()
    }
    fn encode_response(r: &Self::Response) -> Vec<u8> {
        r.encode()
    }
}

/// Byte counters for one protocol (frame bytes, including the length prefix).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProtocolBytes {
    pub(crate) inbound: Counter,
    pub(crate) outbound: Counter,
}

/// The request-response codec for one [`Wire`] protocol.
#[derive(Debug, Clone)]
pub(crate) struct FrameCodec<W> {
    bytes: ProtocolBytes,
    _wire: PhantomData<W>,
}

impl<W> FrameCodec<W> {
    pub(crate) fn new(bytes: ProtocolBytes) -> Self {
        Self { bytes, _wire: PhantomData }
    }
}

/// An inbound request as read: valid, or bytes that broke the protocol.
/// A bad request is a value rather than a read error because
/// libp2p-request-response drops inbound read errors without telling the
/// behaviour (0.30: "this happens when `read_request` fails"), and the event
/// loop must learn who sent it to strike them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound<R> {
    /// A request that decoded and passed every limit.
    Valid(R),
    /// Why the peer's bytes were refused.
    Invalid(String),
}

/// Marks a peer's bad bytes: the event loop strikes the peer for
/// `InvalidData` and only for that.
fn invalid(e: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn read_frame<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    what: &'static str,
    limit: usize,
    counter: &Counter,
) -> io::Result<Vec<u8>> {
    let mut len: u64 = 0;
    let mut prefix = 0usize;
    loop {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        len |= u64::from(byte[0] & 0x7f) << (7 * prefix);
        prefix += 1;
        if byte[0] & 0x80 == 0 {
            break;
        }
        if prefix == MAX_VARINT_BYTES {
            return Err(invalid(WireError::Malformed { what, reason: "length prefix is not a varint".into() }));
        }
    }
    let size = usize::try_from(len).unwrap_or(usize::MAX);
    if size > limit {
        return Err(invalid(WireError::TooLarge { what, size, limit }));
    }
    let mut buf = vec![0u8; size];
    io.read_exact(&mut buf).await?;
    counter.inc_by((prefix + size) as u64);
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8], counter: &Counter) -> io::Result<()> {
    let mut prefix = Vec::with_capacity(MAX_VARINT_BYTES);
    let mut n = body.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            prefix.push(b);
            break;
        }
        prefix.push(b | 0x80);
    }
    io.write_all(&prefix).await?;
    io.write_all(body).await?;
    io.flush().await?;
    counter.inc_by((prefix.len() + body.len()) as u64);
    Ok(())
}

impl<W: Wire> request_response::Codec for FrameCodec<W> {
    type Protocol = StreamProtocol;
    type Request = Inbound<W::Request>;
    type Response = W::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, "request", W::MAX_REQUEST, &self.bytes.inbound).await {
            Ok(buf) => Ok(W::decode_request(&buf).map_or_else(|e| Inbound::Invalid(e.to_string()), Inbound::Valid)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Inbound::Invalid(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let buf = read_frame(io, "response", W::MAX_RESPONSE, &self.bytes.inbound).await?;
        W::decode_response(&buf).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Self::Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match req {
            Inbound::Valid(r) => write_frame(io, &W::encode_request(&r), &self.bytes.outbound).await,
            Inbound::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidInput, why)),
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Self::Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &W::encode_response(&res), &self.bytes.outbound).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use shoal_core::{BlockCid, VerifiedBlock, exchange::Want, exchange::WantKind};

    use super::*;

    fn codec() -> FrameCodec<Exchange> {
        FrameCodec::new(ProtocolBytes::default())
    }

    #[tokio::test]
    async fn round_trip_counts_bytes() {
        use request_response::Codec;
        let mut c = codec();
        let req = ExchangeRequest {
            wants: vec![Want { cid: BlockCid::of(b"a"), kind: WantKind::Block, send_dont_have: true, hold_ms: 50 }],
            ..Default::default()
        };
        let mut buf = Vec::new();
        c.write_request(&EXCHANGE_PROTOCOL, &mut buf, Inbound::Valid(req.clone())).await.unwrap();
        let got = c.read_request(&EXCHANGE_PROTOCOL, &mut Cursor::new(buf.clone())).await.unwrap();
        assert_eq!(got, Inbound::Valid(req));
        assert_eq!(c.bytes.outbound.get(), buf.len() as u64);
        assert_eq!(c.bytes.inbound.get(), buf.len() as u64);

        let resp =
            ExchangeResponse { blocks: vec![VerifiedBlock::from_content(vec![7u8; 300].into())], ..Default::default() };
        let mut buf = Vec::new();
        c.write_response(&EXCHANGE_PROTOCOL, &mut buf, resp.clone()).await.unwrap();
        assert_eq!(c.read_response(&EXCHANGE_PROTOCOL, &mut Cursor::new(buf)).await.unwrap(), resp);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading_the_body() {
        use request_response::Codec;
        let mut c = codec();
        // A prefix announcing 64 KiB + 1 and no body: the cap must trip on
        // the prefix alone, not on an EOF while buffering.
        let mut buf = Vec::new();
        let mut n = (MAX_EXCHANGE_REQUEST_BYTES + 1) as u64;
        while n >= 0x80 {
            buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        buf.push(n as u8);
        // Inbound requests come back as Invalid values (so the sender can be
        // struck), not read errors.
        let got = c.read_request(&EXCHANGE_PROTOCOL, &mut Cursor::new(buf)).await.unwrap();
        assert!(matches!(&got, Inbound::Invalid(why) if why.contains("limit")), "{got:?}");
        // An endless varint is refused too.
        let got = c.read_request(&EXCHANGE_PROTOCOL, &mut Cursor::new(vec![0xff; 11])).await.unwrap();
        assert!(matches!(got, Inbound::Invalid(_)), "{got:?}");
        // Garbage body of an allowed length: malformed.
        let got = c.read_request(&EXCHANGE_PROTOCOL, &mut Cursor::new(vec![3, 0xff, 0xff, 0xff])).await.unwrap();
        assert!(matches!(got, Inbound::Invalid(_)), "{got:?}");
        // A stream cut short is an I/O error (not provable misbehaviour).
        let err = c.read_request(&EXCHANGE_PROTOCOL, &mut Cursor::new(vec![40, 1, 2])).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
