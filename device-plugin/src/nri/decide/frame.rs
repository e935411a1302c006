//! CORE: the two framings on an NRI socket, as pure encoders and incremental decoders.
//!
//! 1. **Multiplexer** (NRI `pkg/net/multiplex`): the one Unix connection carries logical
//!    connections. Each frame is an 8-byte header, connection id (u32, big endian) and payload
//!    length (u32, big endian), then the payload. Connection 1 carries the plugin's service (the
//!    runtime calls the plugin), connection 2 the runtime's (the plugin calls the runtime); id 0 is
//!    reserved. A frame's payload is a chunk of that connection's byte stream, at most
//!    [`MUX_MAX_PAYLOAD`], so one ttrpc message may span frames and one frame may hold several.
//! 2. **ttrpc** (containerd `ttrpc`), inside each logical connection: a 10-byte header, payload
//!    length (u32 BE), stream id (u32 BE), type (u8: 1 request, 2 response, 3 data) and flags (u8),
//!    then the payload, at most [`TTRPC_MAX_MESSAGE`]. Clients number their streams 1, 3, 5, ...
//!
//! The decoders take bytes as they arrive ([`MuxDecoder::push`], [`TtrpcDecoder::push`]) and hand
//! out whole frames and messages; a too-long length is an error (the peer is not speaking NRI).

/// Mux connection of the plugin's service: the runtime is the client.
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// Mux connection of the runtime's service: the plugin is the client.
pub const RUNTIME_SERVICE_CONN: u32 = 2;
/// Length of a multiplexer frame header.
pub const MUX_HEADER_LEN: usize = 8;
/// Length of a ttrpc message header.
pub const TTRPC_HEADER_LEN: usize = 10;
/// ttrpc's largest message payload (4 MiB), as in containerd's ttrpc.
pub const TTRPC_MAX_MESSAGE: usize = 4 << 20;
/// The multiplexer's largest frame payload: one whole ttrpc message with its header.
pub const MUX_MAX_PAYLOAD: usize = TTRPC_HEADER_LEN + TTRPC_MAX_MESSAGE;

/// ttrpc message type of a request.
pub const TTRPC_REQUEST: u8 = 1;
/// ttrpc message type of a response.
pub const TTRPC_RESPONSE: u8 = 2;

/// Why a byte stream is not NRI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A mux frame on the reserved connection id 0.
    #[error("mux frame on reserved connection 0")]
    ReservedConnection,
    /// A mux frame longer than any peer may send.
    #[error("mux frame of {0} bytes exceeds {MUX_MAX_PAYLOAD}")]
    MuxTooLong(usize),
    /// A ttrpc message longer than any peer may send.
    #[error("ttrpc message of {0} bytes exceeds {TTRPC_MAX_MESSAGE}")]
    TtrpcTooLong(usize),
    /// A message to encode is larger than ttrpc allows.
    #[error("message of {0} bytes is too large for ttrpc")]
    EncodeTooLong(usize),
}

impl FrameError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReservedConnection => "NriReservedConnection",
            Self::MuxTooLong(_) | Self::TtrpcTooLong(_) => "NriFrameTooLong",
            Self::EncodeTooLong(_) => "NriMessageTooLong",
        }
    }
}

/// Appends `payload` for logical connection `conn` to `out`, split into frames of at most
/// [`MUX_MAX_PAYLOAD`] bytes. An empty payload makes no frame.
pub fn encode_mux(conn: u32, payload: &[u8], out: &mut Vec<u8>) {
    for chunk in payload.chunks(MUX_MAX_PAYLOAD) {
        let len = u32::try_from(chunk.len()).expect("MUX_MAX_PAYLOAD fits in u32");
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// A ttrpc message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtrpcHeader {
    /// Stream id; the client's, odd.
    pub stream: u32,
    /// [`TTRPC_REQUEST`], [`TTRPC_RESPONSE`] or another type.
    pub kind: u8,
    /// Type-specific flags; 0 for unary calls.
    pub flags: u8,
}

/// Appends one ttrpc message (header and payload) to `out`.
pub fn encode_ttrpc(
    header: TtrpcHeader,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if payload.len() > TTRPC_MAX_MESSAGE {
        return Err(FrameError::EncodeTooLong(payload.len()));
    }
    let len = u32::try_from(payload.len()).expect("TTRPC_MAX_MESSAGE fits in u32");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header.stream.to_be_bytes());
    out.push(header.kind);
    out.push(header.flags);
    out.extend_from_slice(payload);
    Ok(())
}

/// Bytes received and not yet consumed.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    start: usize,
}

impl Pending {
    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Takes `n` bytes after skipping `skip`; the caller checked they are there.
    fn take(&mut self, skip: usize, n: usize) -> Vec<u8> {
        let from = self.start + skip;
        let out = self.buf[from..from + n].to_vec();
        self.start = from + n;
        // Compact once the consumed prefix dominates, so a long connection does not grow forever.
        if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        out
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Splits the trunk's byte stream into `(connection, payload)` frames.
#[derive(Debug, Default)]
pub struct MuxDecoder {
    pending: Pending,
}

impl MuxDecoder {
    /// Adds bytes as read from the socket, however they were split.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.push(bytes);
    }

    /// The next whole frame, `None` until its last byte has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(u32, Vec<u8>)>, FrameError> {
        let avail = self.pending.available();
        if avail.len() < MUX_HEADER_LEN {
            return Ok(None);
        }
        let conn = be_u32(&avail[0..4]);
        let len = be_u32(&avail[4..8]) as usize;
        if conn == 0 {
            return Err(FrameError::ReservedConnection);
        }
        if len > MUX_MAX_PAYLOAD {
            return Err(FrameError::MuxTooLong(len));
        }
        if avail.len() < MUX_HEADER_LEN + len {
            return Ok(None);
        }
        Ok(Some((conn, self.pending.take(MUX_HEADER_LEN, len))))
    }
}

/// Splits one logical connection's byte stream into ttrpc messages.
#[derive(Debug, Default)]
pub struct TtrpcDecoder {
    pending: Pending,
}

impl TtrpcDecoder {
    /// Adds a frame's payload.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.push(bytes);
    }

    /// The next whole message, `None` until its last byte has arrived.
    pub fn next_message(&mut self) -> Result<Option<(TtrpcHeader, Vec<u8>)>, FrameError> {
        let avail = self.pending.available();
        if avail.len() < TTRPC_HEADER_LEN {
            return Ok(None);
        }
        let len = be_u32(&avail[0..4]) as usize;
        if len > TTRPC_MAX_MESSAGE {
            return Err(FrameError::TtrpcTooLong(len));
        }
        let header = TtrpcHeader {
            stream: be_u32(&avail[4..8]),
            kind: avail[8],
            flags: avail[9],
        };
        if avail.len() < TTRPC_HEADER_LEN + len {
            return Ok(None);
        }
        Ok(Some((header, self.pending.take(TTRPC_HEADER_LEN, len))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_mux(dec: &mut MuxDecoder) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn mux_header_layout_is_conn_then_length_big_endian() {
        let mut out = Vec::new();
        encode_mux(RUNTIME_SERVICE_CONN, b"abc", &mut out);
        assert_eq!(out, [0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c']);
        let mut empty = Vec::new();
        encode_mux(1, b"", &mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn mux_decodes_frames_split_at_every_byte() {
        let mut wire = Vec::new();
        encode_mux(1, b"hello", &mut wire);
        encode_mux(2, b"x", &mut wire);
        encode_mux(1, &[7; 300], &mut wire);
        for split in 1..wire.len() {
            let mut dec = MuxDecoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(split) {
                dec.push(chunk);
                got.extend(drain_mux(&mut dec));
            }
            assert_eq!(
                got,
                [
                    (1, b"hello".to_vec()),
                    (2, b"x".to_vec()),
                    (1, vec![7; 300])
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn mux_splits_large_payloads_and_rejects_bad_headers() {
        let big = vec![1u8; MUX_MAX_PAYLOAD + 5];
        let mut wire = Vec::new();
        encode_mux(1, &big, &mut wire);
        let mut dec = MuxDecoder::default();
        dec.push(&wire);
        let frames = drain_mux(&mut dec);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].1.len(), MUX_MAX_PAYLOAD);
        assert_eq!(frames[1].1.len(), 5);

        let mut dec = MuxDecoder::default();
        dec.push(&[0, 0, 0, 0, 0, 0, 0, 1, 9]);
        assert_eq!(dec.next_frame(), Err(FrameError::ReservedConnection));
        let mut dec = MuxDecoder::default();
        dec.push(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(dec.next_frame(), Err(FrameError::MuxTooLong(_))));
    }

    #[test]
    fn ttrpc_message_spanning_mux_frames_and_partial_reads() {
        let header = TtrpcHeader {
            stream: 3,
            kind: TTRPC_REQUEST,
            flags: 0,
        };
        let mut msg = Vec::new();
        encode_ttrpc(header, b"payload-1", &mut msg).unwrap();
        encode_ttrpc(
            TtrpcHeader {
                stream: 5,
                ..header
            },
            b"",
            &mut msg,
        )
        .unwrap();
        assert_eq!(&msg[..10], &[0, 0, 0, 9, 0, 0, 0, 3, 1, 0]);
        // The sender cuts the stream into frames anywhere; the reader reads the trunk anyhow.
        let mut wire = Vec::new();
        for part in msg.chunks(4) {
            encode_mux(PLUGIN_SERVICE_CONN, part, &mut wire);
        }
        for read in [1, 3, 7, wire.len()] {
            let mut mux = MuxDecoder::default();
            let mut ttrpc = TtrpcDecoder::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(read) {
                mux.push(chunk);
                while let Some((conn, payload)) = mux.next_frame().unwrap() {
                    assert_eq!(conn, PLUGIN_SERVICE_CONN);
                    ttrpc.push(&payload);
                    while let Some(m) = ttrpc.next_message().unwrap() {
                        got.push(m);
                    }
                }
            }
            assert_eq!(
                got,
                [
                    (header, b"payload-1".to_vec()),
                    (
                        TtrpcHeader {
                            stream: 5,
                            ..header
                        },
                        Vec::new()
                    )
                ],
                "read size {read}"
            );
        }
    }

    #[test]
    fn ttrpc_rejects_oversized_messages() {
        let mut dec = TtrpcDecoder::default();
        dec.push(&[0x01, 0, 0, 1, 0, 0, 0, 1, 1, 0]);
        assert_eq!(
            dec.next_message(),
            Err(FrameError::TtrpcTooLong(0x0100_0001))
        );
        let mut out = Vec::new();
        let header = TtrpcHeader {
            stream: 1,
            kind: TTRPC_RESPONSE,
            flags: 0,
        };
        assert!(encode_ttrpc(header, &vec![0; TTRPC_MAX_MESSAGE + 1], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn long_streams_compact_their_buffer() {
        let mut wire = Vec::new();
        encode_mux(1, &[5; 1000], &mut wire);
        let mut dec = MuxDecoder::default();
        for _ in 0..500 {
            dec.push(&wire);
            assert_eq!(drain_mux(&mut dec).len(), 1);
        }
        assert!(dec.pending.buf.len() < 200 * 1024);
    }
}
