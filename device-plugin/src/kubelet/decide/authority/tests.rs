use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SOCKET: &str = "/var/lib/kubelet/plugins_registry/vram.kube-dmem.io-reg.sock";

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A plain (not Huffman-coded) string literal.
fn plain(s: &[u8]) -> Vec<u8> {
    let mut out = hpack_len(s.len(), 0x00);
    out.extend_from_slice(s);
    out
}

/// A string literal flagged Huffman-coded; the rewriter never decodes it, so any bytes do.
fn huffman(len: usize) -> Vec<u8> {
    let mut out = hpack_len(len, 0x80);
    out.extend(std::iter::repeat_n(0xa5, len));
    out
}

fn hpack_len(len: usize, flag: u8) -> Vec<u8> {
    if len < 127 {
        return vec![flag | len as u8];
    }
    let mut out = vec![flag | 0x7f];
    let mut rest = len - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

/// A gRPC request's header block as grpc-go orders it, with `authority` as the `:authority`
/// value (already a string literal).
fn request_block(authority: &[u8]) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    b.push(0x44); // :path, literal with incremental indexing
    b.extend(plain(b"/pluginregistration.Registration/GetInfo"));
    b.push(0x41); // :authority, literal with incremental indexing
    b.extend_from_slice(authority);
    b.push(0x5f); // content-type
    b.extend(plain(b"application/grpc"));
    b.push(0x40); // te: trailers, literal name
    b.extend(plain(b"te"));
    b.extend(plain(b"trailers"));
    b
}

fn connection(headers: &[u8]) -> Vec<u8> {
    let mut c = PREFACE.to_vec();
    c.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    c.extend_from_slice(headers);
    c.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA, END_STREAM: an empty message
    c
}

fn run(input: &[u8]) -> (Vec<u8>, u64) {
    let mut r = AuthorityRewriter::default();
    let mut out = Vec::new();
    r.feed(input, &mut out);
    (out, r.rewritten())
}

#[test]
fn a_socket_path_as_authority_becomes_localhost_and_nothing_else_changes() {
    let input = connection(&frame(
        0x1,
        0x4,
        1,
        &request_block(&plain(SOCKET.as_bytes())),
    ));
    let want = connection(&frame(0x1, 0x4, 1, &request_block(&plain(b"localhost"))));
    assert_eq!(run(&input), (want, 1));
}

#[test]
fn a_valid_authority_passes_byte_for_byte() {
    for ok in [&b"localhost"[..], b"node0:10250", b"kube-dmem.io"] {
        let input = connection(&frame(0x1, 0x4, 1, &request_block(&plain(ok))));
        assert_eq!(
            run(&input),
            (input.clone(), 0),
            "{}",
            String::from_utf8_lossy(ok)
        );
    }
}

#[test]
fn the_output_does_not_depend_on_how_the_input_is_chunked() {
    let input = connection(&frame(
        0x1,
        0x4,
        1,
        &request_block(&plain(SOCKET.as_bytes())),
    ));
    let (whole, _) = run(&input);
    for cut in 0..=input.len() {
        let mut r = AuthorityRewriter::default();
        let mut out = Vec::new();
        r.feed(&input[..cut], &mut out);
        r.feed(&input[cut..], &mut out);
        assert_eq!(out, whole, "cut at {cut}");
    }
    let mut r = AuthorityRewriter::default();
    let mut out = Vec::new();
    for byte in &input {
        r.feed(std::slice::from_ref(byte), &mut out);
    }
    assert_eq!((out, r.rewritten()), (whole, 1), "one byte at a time");
}

#[test]
fn a_huffman_coded_value_is_replaced_by_no_more_than_it_can_decode_to() {
    // A Huffman code is 5 to 30 bits per character: 45 bytes decode to at least 12 characters,
    // 10 bytes to at least 2.
    for (len, want) in [(45, &b"localhost"[..]), (10, b"lo"), (2, b"l")] {
        let input = connection(&frame(0x1, 0x4, 1, &request_block(&huffman(len))));
        let expect = connection(&frame(0x1, 0x4, 1, &request_block(&plain(want))));
        assert_eq!(run(&input), (expect, 1), "{len} bytes");
    }
}

#[test]
fn padding_and_priority_are_kept_around_the_rewritten_block() {
    let block = request_block(&plain(SOCKET.as_bytes()));
    let fixed = request_block(&plain(b"localhost"));
    let wrap = |b: &[u8]| {
        let mut p = vec![3]; // pad length
        p.extend_from_slice(&[0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 16
        p.extend_from_slice(b);
        p.extend_from_slice(&[0, 0, 0]);
        frame(0x1, 0x4 | 0x8 | 0x20, 3, &p)
    };
    assert_eq!(
        run(&connection(&wrap(&block))),
        (connection(&wrap(&fixed)), 1)
    );
}

#[test]
fn a_long_value_with_a_multi_byte_length_is_parsed_and_replaced() {
    let long = "/x".repeat(150); // 300 bytes: the length takes two more bytes
    let input = connection(&frame(0x1, 0x4, 1, &request_block(&plain(long.as_bytes()))));
    let want = connection(&frame(0x1, 0x4, 1, &request_block(&plain(b"localhost"))));
    assert_eq!(run(&input), (want, 1));
}

#[test]
fn a_later_request_indexing_the_rewritten_entry_passes_unchanged() {
    // The second request on a connection refers to the dynamic table instead of repeating the
    // literal; the server's entry is already "localhost".
    let first = frame(0x1, 0x4, 1, &request_block(&plain(SOCKET.as_bytes())));
    let second = frame(0x1, 0x4, 3, &[0x83, 0x86, 0xbf, 0xbe]);
    let mut input = connection(&first);
    input.extend_from_slice(&second);
    let (out, n) = run(&input);
    assert_eq!(n, 1);
    assert!(out.ends_with(&second));
}

#[test]
fn a_block_cut_by_a_continuation_frame_passes_as_it_came() {
    let block = request_block(&plain(SOCKET.as_bytes()));
    // The :authority literal starts in the HEADERS frame and ends in the CONTINUATION.
    let cut = block.iter().position(|b| *b == 0x41).expect("authority") + 10;
    let mut input = connection(&frame(0x1, 0, 1, &block[..cut]));
    input.extend(frame(0x9, 0x4, 1, &block[cut..]));
    assert_eq!(run(&input), (input.clone(), 0));
}

#[test]
fn other_frames_pass_untouched_even_when_they_look_like_headers() {
    // A DATA frame whose payload happens to hold an authority literal.
    let mut payload = vec![0x41];
    payload.extend(plain(SOCKET.as_bytes()));
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x0, 0, 1, &payload));
    input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
    assert_eq!(run(&input), (input.clone(), 0));
}
