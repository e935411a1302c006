//! CORE: what the HTTP/2 server of a kubelet-facing socket reads when the client names the socket
//! path as the request's `:authority`.
//!
//! The kubelet's plugin watcher dials a registration socket by its bare path without choosing an
//! authority, so grpc-go sends the path itself (`/var/lib/kubelet/plugins_registry/…-reg.sock`)
//! as `:authority` (`docs/kubelet.md` §7.4). RFC 9113 allows only `host[:port]` there, and the h2
//! crate under tonic answers such a request with `RST_STREAM(PROTOCOL_ERROR)`: `GetInfo` fails and
//! the driver never registers. (The kubelet's device-plugin and DRA clients send `localhost`.)
//!
//! [`AuthorityRewriter`] sits between the socket and the server: it passes the client's bytes
//! through unchanged except in HEADERS frames, where a literal `:authority` whose value is not a
//! plain valid authority becomes `localhost` (or a prefix of it, so the server's HPACK dynamic
//! table never holds a longer entry than the client's and both evict alike). Nothing on our
//! sockets reads the authority. Input may arrive in any chunks; output is the same.

/// HTTP/2 connection preface sent by every client before its first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The smallest maximum frame size (RFC 9113 §4.2): a rewritten frame never grows past it.
const MAX_FRAME: usize = 16_384;
/// `:authority` in the HPACK static table.
const AUTHORITY_INDEX: u64 = 1;
const REPLACEMENT: &[u8] = b"localhost";

/// Streams a client's HTTP/2 bytes to the server, fixing `:authority` on the way.
#[derive(Debug, Default)]
pub struct AuthorityRewriter {
    /// Preface bytes still to pass through.
    preface_seen: usize,
    /// Payload bytes of a non-HEADERS frame still to pass through.
    passing: usize,
    /// A frame header, or a whole HEADERS frame, not complete yet.
    pending: Vec<u8>,
    /// How many `:authority` values were rewritten.
    rewritten: u64,
}

impl AuthorityRewriter {
    /// Takes the next bytes the client sent; appends what the server should read to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.preface_seen < PREFACE_LEN {
                let n = (PREFACE_LEN - self.preface_seen).min(input.len());
                out.extend_from_slice(&input[..n]);
                self.preface_seen += n;
                input = &input[n..];
            } else if self.passing > 0 {
                let n = self.passing.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.passing -= n;
                input = &input[n..];
            } else {
                let want = if self.pending.len() < FRAME_HEADER_LEN {
                    FRAME_HEADER_LEN
                } else {
                    FRAME_HEADER_LEN + frame_len(&self.pending)
                };
                let n = (want - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.pending.len() < FRAME_HEADER_LEN {
                    continue; // the input ran out inside a frame header
                }
                if self.pending.len() == FRAME_HEADER_LEN && self.pending[3] != FRAME_HEADERS {
                    // Any other frame streams through as it comes.
                    self.passing = frame_len(&self.pending);
                    out.append(&mut self.pending);
                } else if self.pending.len() == FRAME_HEADER_LEN + frame_len(&self.pending) {
                    let frame = std::mem::take(&mut self.pending);
                    match rewrite_headers(&frame) {
                        Some((fixed, count)) => {
                            self.rewritten += count;
                            out.extend_from_slice(&fixed);
                        }
                        None => out.extend_from_slice(&frame),
                    }
                }
            }
        }
    }

    /// How many `:authority` values were rewritten so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }
}

fn frame_len(header: &[u8]) -> usize {
    usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2])
}

/// The HEADERS frame `frame` (header included) with its `:authority` values fixed, and how many;
/// `None` when nothing changes (or the block cannot be parsed: it then passes as it came).
fn rewrite_headers(frame: &[u8]) -> Option<(Vec<u8>, u64)> {
    let flags = frame[4];
    let payload = &frame[FRAME_HEADER_LEN..];
    let mut start = 0;
    let mut pad = 0;
    if flags & FLAG_PADDED != 0 {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    if flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    let end = payload.len().checked_sub(pad)?;
    let block = payload.get(start..end)?;
    let (fixed, count) = rewrite_block(block);
    if count == 0 {
        return None;
    }
    let new_len = start + fixed.len() + pad;
    if new_len > MAX_FRAME {
        return None;
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + new_len);
    out.extend_from_slice(&[(new_len >> 16) as u8, (new_len >> 8) as u8, new_len as u8]);
    out.extend_from_slice(&frame[3..FRAME_HEADER_LEN]);
    out.extend_from_slice(&payload[..start]);
    out.extend_from_slice(&fixed);
    out.extend_from_slice(&payload[end..]);
    Some((out, count))
}

/// Rewrites the `:authority` literals of an HPACK header block. Representations are copied as
/// they are; parsing stops at the first one that does not fit (a block continued in a
/// CONTINUATION frame) and the rest is copied unchanged.
fn rewrite_block(block: &[u8]) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(block.len());
    let mut count = 0;
    let mut at = 0;
    while at < block.len() {
        let Some(rep) = representation(&block[at..]) else {
            break;
        };
        match rep.authority_value {
            Some(value) if needs_rewrite(&block[at..], &value) => {
                out.extend_from_slice(&block[at..at + value.start]);
                let keep = replacement_len(&value);
                out.push(keep as u8); // H = 0, 7-bit length: keep <= 9
                out.extend_from_slice(&REPLACEMENT[..keep]);
                count += 1;
            }
            _ => out.extend_from_slice(&block[at..at + rep.len]),
        }
        at += rep.len;
    }
    out.extend_from_slice(&block[at..]);
    (out, count)
}

/// Where a string literal sits in a representation: its length prefix starts at `start`, its bytes
/// are `data` (relative to the representation), `huffman` as flagged.
struct StringAt {
    start: usize,
    data: std::ops::Range<usize>,
    huffman: bool,
}

struct Representation {
    len: usize,
    authority_value: Option<StringAt>,
}

/// The HPACK representation at the start of `b` (RFC 7541 §6), if it is complete.
fn representation(b: &[u8]) -> Option<Representation> {
    let first = *b.first()?;
    let (prefix, literal) = match first {
        f if f & 0x80 != 0 => (7, false),    // indexed field
        f if f & 0xc0 == 0x40 => (6, true),  // literal, incremental indexing
        f if f & 0xe0 == 0x20 => (5, false), // dynamic table size update
        _ => (4, true),                      // literal, without or never indexed
    };
    let (index, mut at) = integer(b, prefix)?;
    if !literal {
        return Some(Representation {
            len: at,
            authority_value: None,
        });
    }
    if index == 0 {
        at = string(b, at)?.data.end;
    }
    let value = string(b, at)?;
    let len = value.data.end;
    Some(Representation {
        len,
        authority_value: (index == AUTHORITY_INDEX).then_some(value),
    })
}

/// An HPACK integer with an `n`-bit prefix at the start of `b`: its value and its length.
fn integer(b: &[u8], n: u32) -> Option<(u64, usize)> {
    let max = (1u64 << n) - 1;
    let mut value = u64::from(*b.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    for (i, byte) in b.iter().enumerate().skip(1).take(5) {
        value += u64::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The string literal whose length prefix starts at `b[at]`, if all of it is in `b`.
fn string(b: &[u8], at: usize) -> Option<StringAt> {
    let rest = b.get(at..)?;
    let huffman = *rest.first()? & 0x80 != 0;
    let (len, prefix) = integer(rest, 7)?;
    let start = at + prefix;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= b.len()).then_some(StringAt {
        start: at,
        data: start..end,
        huffman,
    })
}

/// A plain value is kept when it is a valid authority (here: a host name with an optional port,
/// the only kind a Unix socket client means); a Huffman-coded one cannot be checked without
/// decoding and is always replaced.
fn needs_rewrite(rep: &[u8], value: &StringAt) -> bool {
    if value.huffman {
        return true;
    }
    let text = &rep[value.data.clone()];
    text.is_empty()
        || !text
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':' | b'_'))
}

/// The replacement's length: `localhost`, cut to the shortest the original can decode to (a
/// Huffman code is at most 30 bits per character), never below one character.
fn replacement_len(value: &StringAt) -> usize {
    let bytes = value.data.len();
    let shortest = if value.huffman { bytes * 8 / 30 } else { bytes };
    shortest.clamp(1, REPLACEMENT.len())
}

#[cfg(test)]
mod tests;
