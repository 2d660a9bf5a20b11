//! What a hostile peer can feed the code that reads it, as test bodies
//! shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`, run for as
//! long as one likes) and the property tests CI runs on every change
//! (`tests/fuzz_decoders.rs`, same bodies, a fixed seed and a bounded
//! number of cases).
//!
//! - [`handshake`]: the handshake decoders of both directions
//!   (`ConnectRequest` as the server reads it, `ConnectResponse` as the
//!   client reads it, `Confirm`);
//! - [`handshake_machines`]: the handshake's state machines, both
//!   sides, fed arbitrary bytes in arbitrary pieces;
//! - [`msg_header`]: the message header at the start of every record;
//! - [`sock_rx`]: the socket transport's reassembly (`SockRx`) fed
//!   arbitrary datagrams over a real `SOCK_SEQPACKET` pair, against a
//!   reference reassembly written from `docs/PROTOCOL.md` §3;
//! - [`ring_consumer`]: a ring `Consumer` over a memfd whose header and
//!   data region the test writes anything into, before and between
//!   reads, against a reference reader written from the table of
//!   `docs/RING.md` ("A peer that breaks the rules").
//!
//! Each body returns normally when the code under test behaved: a typed
//! error, or a value that re-encodes to the bytes it came from (for the
//! readers: exactly what the reference delivers), and panics otherwise
//! (which the fuzzer records as a crash). Each also has a `from_bytes`
//! that turns a fuzzer's raw input into its case, so that a crash input
//! replays through the same code in a regression test.

use std::os::fd::AsFd;
use std::time::Duration;

use ringlink_channel::socket::{self as seqpacket, RecvError, SockRx};
use ringlink_common::wire::{
    Confirm, ConnectRequest, ConnectResponse, MsgHeader, WireError, MAX_RING_PATH, MSG_HEADER_LEN,
    PROTOCOL_VERSION, REQUEST_LEN, REQUEST_MAGIC,
};
use ringlink_ringbuf::layout::{max_payload, record_size, KIND_DATA, KIND_PAD, RECORD_HEADER};
use ringlink_ringbuf::{ClaimError, Corruption, PopError, Ring};

use crate::raw::{off, RawRing};

/// A cursor over a fuzzer's bytes; reads past the end give zeros.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = b;
        a
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let got = self.take(N);
        a[..got.len()].copy_from_slice(got);
        a
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

// --- handshake and message header ----------------------------------------

/// The server's decoder of a connection request, on arbitrary bytes.
///
/// # Panics
///
/// If a decoded request does not encode back to `bytes`, or a request
/// with the right magic and another version is not refused as
/// `Version` (the documented answer whatever follows).
pub fn connect_request(bytes: &[u8]) -> Result<ConnectRequest, WireError> {
    let r = ConnectRequest::decode(bytes);
    match &r {
        Ok(req) => assert_eq!(
            req.encode()[..],
            bytes[..],
            "a decoded request re-encodes differently: {req:?}"
        ),
        // Another length: what the head says (another version, a wrong
        // magic), or the length.
        Err(e) if bytes.len() != REQUEST_LEN => match ConnectRequest::check_head(bytes) {
            Err(head) if bytes.len() >= ringlink_common::wire::REQUEST_HEAD_LEN => {
                assert_eq!(*e, head)
            }
            _ => assert_eq!(*e, WireError::Length),
        },
        Err(e) => {
            let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
            let version = u16::from_le_bytes([bytes[4], bytes[5]]);
            if magic == REQUEST_MAGIC && version != PROTOCOL_VERSION {
                assert_eq!(*e, WireError::Version(version), "version checked first");
            }
        }
    }
    r
}

/// The client's decoder of the server's response, on arbitrary bytes.
///
/// # Panics
///
/// If a decoded response does not encode back to `bytes` or announces a
/// ring path longer than the protocol allows.
pub fn connect_response(bytes: &[u8]) -> Result<ConnectResponse, WireError> {
    let r = ConnectResponse::decode(bytes);
    if let Ok(resp) = &r {
        assert!(resp.path_len as usize <= MAX_RING_PATH, "{resp:?}");
        assert_eq!(
            resp.encode()[..],
            bytes[..],
            "a decoded response re-encodes differently: {resp:?}"
        );
    }
    r
}

/// The server's decoder of the confirmation, on arbitrary bytes.
///
/// # Panics
///
/// If a decoded confirmation is not exactly the encoded one.
pub fn confirm(bytes: &[u8]) -> Result<Confirm, WireError> {
    let r = Confirm::decode(bytes);
    if r.is_ok() {
        assert_eq!(Confirm.encode()[..], bytes[..], "a bad confirmation passed");
    }
    r
}

/// The handshake's two state machines (`ringlink_common::handshake`)
/// fed arbitrary bytes in arbitrary pieces, as a socket would deliver
/// them. The first byte chooses the transport (bit 0) and whether the
/// server accepts the request (bit 1), the second how the bytes are cut;
/// the rest is the stream, fed to the server's machine (request, then
/// confirmation) and, separately, to the client's (answer, then what
/// follows it). Returns how far each got: whether the server's machine
/// saw a good confirmation, and whether the client's accepted an answer.
///
/// # Panics
///
/// If a machine asks for more than the message it awaits, reads past it,
/// decides before it is whole, or decides otherwise than the decoders do
/// on the same bytes.
pub fn handshake_machines(bytes: &[u8]) -> (bool, bool) {
    use ringlink_common::fdpass::PeerFds;
    use ringlink_common::handshake::{
        trailer_len, ClientEvent, ClientHandshake, ServerEvent, ServerHandshake,
    };
    use ringlink_common::wire::{
        FdTerms, Status, Transport, CONFIRM_LEN, FD_TERMS_LEN, MAX_MESSAGE, REQUEST_HEAD_LEN,
        RESPONSE_LEN,
    };
    use ringlink_common::Error;

    let mut input = Input::new(bytes);
    let flags = input.u8();
    let cut = usize::from(input.u8());
    let stream = input.take(usize::MAX);
    let transport = if flags & 1 == 1 {
        Transport::Socket
    } else {
        Transport::Shm
    };
    // The i-th piece's length, from 1 to 61 bytes.
    let piece = |i: usize| 1 + cut.wrapping_mul(i + 1).wrapping_add(i * 7) % 61;

    // The server's machine.
    let mut server = ServerHandshake::new();
    let (mut at, mut i) = (0usize, 0usize);
    let mut answered = false;
    let mut confirmed = false;
    loop {
        let want = server.buffer().len();
        if want == 0 || at == stream.len() {
            break;
        }
        let n = piece(i).min(want).min(stream.len() - at);
        i += 1;
        server.buffer()[..n].copy_from_slice(&stream[at..at + n]);
        at += n;
        match server.received(n) {
            ServerEvent::NeedMore => {
                assert!(
                    at != REQUEST_LEN || answered,
                    "a whole request went undecided"
                );
                assert!(
                    at != REQUEST_HEAD_LEN
                        || answered
                        || ConnectRequest::check_head(&stream[..at]).is_ok(),
                    "a refusable head went undecided"
                );
            }
            ServerEvent::Request(r) => {
                // Decided on the head alone (another version, a wrong
                // magic), or on the whole request.
                let decoded = if at == REQUEST_HEAD_LEN {
                    let head = ConnectRequest::check_head(&stream[..at]);
                    assert!(head.is_err(), "decided on a good head");
                    head.map(|()| unreachable!())
                } else {
                    assert_eq!(at, REQUEST_LEN, "decided on {at} bytes");
                    ConnectRequest::decode(&stream[..REQUEST_LEN])
                };
                match (&r, decoded) {
                    (Ok(a), Ok(b)) => assert_eq!(*a, b),
                    (Err(Status::VersionMismatch), Err(WireError::Version(_))) => {}
                    (Err(Status::BadRequest), Err(e)) if !matches!(e, WireError::Version(_)) => {}
                    (r, d) => panic!("the machine said {r:?}, the decoder {d:?}"),
                }
                assert!(server.buffer().is_empty(), "read while deciding");
                if flags & 2 == 2 && r.is_ok() {
                    let bytes =
                        server.accept(&ConnectResponse::reject(Status::Ok), &FdTerms::NONE, &[]);
                    assert_eq!(bytes.len(), RESPONSE_LEN + FD_TERMS_LEN);
                    assert!(server.answered());
                    answered = true;
                } else {
                    let _ = server.reject(Status::BadRequest);
                    assert!(server.buffer().is_empty(), "read after refusing");
                }
            }
            ServerEvent::Confirmed => {
                assert!(
                    answered && at == REQUEST_LEN + CONFIRM_LEN,
                    "confirmed at {at}"
                );
                assert_eq!(&stream[REQUEST_LEN..at], &Confirm.encode()[..]);
                confirmed = true;
            }
            ServerEvent::BadConfirm(_) => {
                assert!(
                    answered && at == REQUEST_LEN + CONFIRM_LEN,
                    "refused at {at}"
                );
                assert_ne!(&stream[REQUEST_LEN..at], &Confirm.encode()[..]);
            }
        }
    }
    assert!(
        at <= REQUEST_LEN + CONFIRM_LEN,
        "the server read {at} bytes"
    );
    assert!(server.buffer().is_empty() || at == stream.len());

    // The client's machine.
    let request = ConnectRequest {
        version: PROTOCOL_VERSION,
        transport,
        max_message: 0,
        protocol: "fuzz".into(),
        fds: FdTerms::NONE,
    };
    let (mut client, _) = ClientHandshake::new(&request);
    let (mut at, mut i) = (0usize, 0usize);
    let decoded = stream.get(..RESPONSE_LEN).map(ConnectResponse::decode);
    loop {
        let want = client.buffer().len();
        assert!(want > 0, "the client wants nothing before it decided");
        let n = piece(i).min(want).min(stream.len() - at);
        i += 1;
        client.buffer()[..n].copy_from_slice(&stream[at..at + n]);
        at += n;
        match client.received(n, PeerFds::default()) {
            Ok(ClientEvent::NeedMore) => assert!(n > 0),
            Ok(ClientEvent::Accepted {
                answer, trailer, ..
            }) => {
                let Some(Ok(d)) = decoded else {
                    panic!("accepted an answer the decoder refuses")
                };
                assert_eq!(answer, d);
                assert_eq!(answer.status, Status::Ok);
                assert!(answer.max_message as usize <= MAX_MESSAGE);
                let end = RESPONSE_LEN + trailer_len(transport, &answer);
                assert_eq!(at, end, "accepted after {at} bytes, not {end}");
                assert!(FdTerms::decode(&stream[RESPONSE_LEN..][..FD_TERMS_LEN]).is_ok());
                assert_eq!(&trailer[..], &stream[RESPONSE_LEN + FD_TERMS_LEN..end]);
                return (confirmed, true);
            }
            Err(Error::Disconnected) => {
                assert_eq!(n, 0, "a read of {n} bytes is not an end");
                break;
            }
            Err(Error::Protocol(ringlink_common::Violation::BadAnswer(_))) if at > RESPONSE_LEN => {
                // The server's fd terms, at the start of the trailer, do
                // not decode: refused once the whole trailer is in.
                let Some(Ok(d)) = decoded else {
                    panic!("read past an answer the decoder refuses")
                };
                assert_eq!(at, RESPONSE_LEN + trailer_len(transport, &d));
                assert!(FdTerms::decode(&stream[RESPONSE_LEN..][..FD_TERMS_LEN]).is_err());
                break;
            }
            Err(e) => {
                assert_eq!(at, RESPONSE_LEN, "refused after {at} bytes: {e}");
                match (&e, decoded) {
                    (Error::Rejected(s), Some(Ok(d))) => assert_eq!(*s, d.status),
                    (
                        Error::Rejected(Status::VersionMismatch),
                        Some(Err(WireError::Version(_))),
                    ) => {}
                    (Error::Protocol(_), Some(Ok(d))) => {
                        assert!(d.status == Status::Ok && d.max_message as usize > MAX_MESSAGE)
                    }
                    (Error::Protocol(_), Some(Err(_))) => {}
                    (e, d) => panic!("the machine said {e:?}, the decoder {d:?}"),
                }
                break;
            }
        }
    }
    (confirmed, false)
}

/// Every handshake decoder, both directions, on the same bytes.
///
/// # Panics
///
/// As [`connect_request`], [`connect_response`] and [`confirm`].
pub fn handshake(bytes: &[u8]) {
    let _ = connect_request(bytes);
    let _ = connect_response(bytes);
    let _ = confirm(bytes);
}

/// The message header decoder on an arbitrary record.
///
/// # Panics
///
/// If a decoded header disagrees with the record's length or does not
/// encode back to the record's first bytes.
pub fn msg_header(record: &[u8]) -> Result<MsgHeader, WireError> {
    let r = MsgHeader::decode(record);
    if let Ok(h) = &r {
        assert_eq!(h.size as usize, record.len() - MSG_HEADER_LEN, "{h:?}");
        let mut b = [0u8; MSG_HEADER_LEN];
        h.encode_into(&mut b);
        assert_eq!(
            b[..],
            record[..MSG_HEADER_LEN],
            "header re-encodes differently"
        );
    }
    r
}

// --- libqb's handshake ------------------------------------------------------

/// libqb's handshake decoders on arbitrary bytes: the request and
/// response headers, the connection request as a ringlink server reads
/// it from a libqb client, the connection response as a ringlink client
/// reads it from a libqb server. That response is 12,328 bytes, more than
/// a fuzzer's input: it is also read with the input laid over an honest
/// accepting response (each chunk: a 16-bit offset, then up to 8 bytes
/// written there), so that short inputs reach its fields.
///
/// # Panics
///
/// If a decoded header or request does not encode back to the bytes it
/// came from (less what the decoder ignores: padding, a request's size),
/// or a decoded response breaks what `ConnResponse::decode` promises: a
/// refusal's error an errno, negated; an acceptance's names at most
/// `MAX_NAME` bytes with no NUL.
pub fn qb_handshake(bytes: &[u8]) {
    use ringlink_common::qb::{
        ConnRequest, ConnResponse, QbTransport, RequestHeader, ResponseHeader, MAX_ERRNO, MAX_NAME,
        REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
    };
    if let Ok(h) = RequestHeader::decode(bytes) {
        let e = h.encode();
        assert_eq!(
            (&e[0..4], &e[8..12]),
            (&bytes[0..4], &bytes[8..12]),
            "{h:?}"
        );
        assert!(bytes.len() >= REQUEST_HEADER_LEN);
    }
    if let Ok(h) = ResponseHeader::decode(bytes) {
        let e = h.encode();
        for at in [0, 8, 16] {
            assert_eq!(&e[at..at + 4], &bytes[at..at + 4], "{h:?}");
        }
        assert!(bytes.len() >= RESPONSE_HEADER_LEN);
    }
    if let Ok(r) = ConnRequest::decode(bytes) {
        let e = r.encode();
        assert_eq!(
            (&e[0..4], &e[16..20]),
            (&bytes[0..4], &bytes[16..20]),
            "{r:?}"
        );
    }
    let check = |r: Result<ConnResponse, WireError>| {
        let Ok(r) = r else { return };
        if r.error != 0 {
            assert!((-MAX_ERRNO..0).contains(&r.error), "{}", r.error);
            return;
        }
        for name in [&r.request, &r.response, &r.event] {
            assert!(name.len() <= MAX_NAME && !name.contains(&0), "{r:?}");
        }
    };
    check(ConnResponse::decode(bytes));
    let mut honest = ConnResponse {
        error: 0,
        transport: QbTransport::Shm,
        max_msg_size: 1 << 20,
        cookie: 7,
        request: b"/dev/shm/qb-1-2-3-abcdef/qb-request-svc".to_vec(),
        response: b"/dev/shm/qb-1-2-3-abcdef/qb-response-svc".to_vec(),
        event: b"/dev/shm/qb-1-2-3-abcdef/qb-event-svc".to_vec(),
    }
    .encode();
    let mut input = Input::new(bytes);
    while !input.is_empty() {
        let at = usize::from(input.u16()) % honest.len();
        let chunk = input.take(8);
        let n = chunk.len().min(honest.len() - at);
        honest[at..at + n].copy_from_slice(&chunk[..n]);
    }
    check(ConnResponse::decode(&honest));
}

// --- socket transport reassembly -------------------------------------------

/// How a stream of datagrams ends for its reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The sender closed (or sent an empty datagram, which reads the
    /// same); an incomplete message is dropped.
    Closed,
    /// The sender broke the framing: the connection is closed.
    Violation,
}

/// A message as delivered: header and payload.
pub type Delivered = (MsgHeader, Vec<u8>);

/// The reference reassembly of `docs/PROTOCOL.md` §3: what a receiver of
/// messages up to `max_message` bytes must deliver from `datagrams`.
pub fn reassemble(max_message: usize, datagrams: &[Vec<u8>]) -> (Vec<Delivered>, StreamEnd) {
    let mut out = Vec::new();
    let mut cur: Option<(MsgHeader, Vec<u8>)> = None;
    for d in datagrams {
        if d.is_empty() {
            return (out, StreamEnd::Closed);
        }
        match &mut cur {
            None => {
                if d.len() < MSG_HEADER_LEN || d.len() > MSG_HEADER_LEN + max_message {
                    return (out, StreamEnd::Violation);
                }
                let size = u32::from_le_bytes(d[4..8].try_into().expect("4 bytes")) as usize;
                if size > max_message || d.len() > MSG_HEADER_LEN + size {
                    return (out, StreamEnd::Violation);
                }
                // The header names its own size, so only the flags can
                // still be wrong: none but one-way (bit 0), lagged (bit
                // 1), call (bit 2) and reply (bit 3); a one-way message
                // carries sequence number 0, a call or a reply another
                // (PROTOCOL.md §3; which channel may carry which is the
                // receiver's check, above the reassembly).
                let flags = u32::from_le_bytes(d[12..16].try_into().expect("4 bytes"));
                let seq = u64::from_le_bytes(d[16..24].try_into().expect("8 bytes"));
                if flags & !15 != 0 || (flags & 1 != 0 && seq != 0) || (flags & 12 != 0 && seq == 0)
                {
                    return (out, StreamEnd::Violation);
                }
                let h = MsgHeader {
                    id: i32::from_le_bytes(d[0..4].try_into().expect("4 bytes")),
                    size: size as u32,
                    error: i32::from_le_bytes(d[8..12].try_into().expect("4 bytes")),
                    flags,
                    seq,
                };
                cur = Some((h, d[MSG_HEADER_LEN..].to_vec()));
            }
            Some((h, payload)) => {
                if payload.len() + d.len() > h.size as usize {
                    return (out, StreamEnd::Violation);
                }
                payload.extend_from_slice(d);
            }
        }
        if let Some((h, payload)) = &cur {
            if payload.len() == h.size as usize {
                out.push(cur.take().expect("complete"));
            }
        }
    }
    (out, StreamEnd::Closed)
}

/// Largest datagram [`sock_rx`] sends, and most bytes in all: what a
/// socket pair's default buffers hold without a reader.
pub const SOCK_RX_DATAGRAM: usize = 16 * 1024;
/// See [`SOCK_RX_DATAGRAM`].
pub const SOCK_RX_TOTAL: usize = 96 * 1024;

/// Sends `datagrams` (cut to [`SOCK_RX_DATAGRAM`] bytes each, and as many
/// as fit in [`SOCK_RX_TOTAL`]) over a real `SOCK_SEQPACKET` pair, closes
/// the sending end, and reads them with a `SockRx` of `max_message`.
/// Returns what it delivered and how the stream ended.
///
/// # Panics
///
/// If it delivers anything else than [`reassemble`] does, ends
/// differently, or fails otherwise (socket errors).
pub fn sock_rx(max_message: usize, datagrams: &[Vec<u8>]) -> (Vec<Delivered>, StreamEnd) {
    let (a, b) = seqpacket::pair().expect("socketpair");
    let mut sent = Vec::new();
    let mut total = 0;
    for d in datagrams {
        let d = &d[..d.len().min(SOCK_RX_DATAGRAM)];
        if total + d.len() > SOCK_RX_TOTAL {
            break;
        }
        match crate::raw::send_datagram(a.as_fd(), d, libc::MSG_DONTWAIT) {
            Ok(n) => assert_eq!(n, d.len(), "a datagram goes whole or not at all"),
            // The buffer is full: test what was sent. Anything else is
            // the test's own failure.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => break,
            Err(e) => panic!("send a datagram of {} bytes: {e}", d.len()),
        }
        total += d.len();
        sent.push(d.to_vec());
    }
    drop(a);
    let (want, want_end) = reassemble(max_message, &sent);
    let mut rx = SockRx::new(b, max_message);
    let mut got = Vec::new();
    let end = loop {
        assert!(got.len() <= sent.len(), "more messages than datagrams");
        match rx.fill() {
            Ok(()) => {
                let (h, p) = rx.message().expect("a filled message");
                assert_eq!(h.size as usize, p.len());
                got.push((h, p.to_vec()));
                rx.consume();
            }
            Err(RecvError::Closed) => break StreamEnd::Closed,
            // A header counting fds, where none came (none are sent
            // here): the reference refuses any bit of the flags' high half.
            Err(RecvError::Framing(_) | RecvError::Fds(_)) => break StreamEnd::Violation,
            Err(e) => panic!("SockRx with everything queued and the sender gone: {e:?}"),
        }
    };
    assert_eq!(got, want, "delivered messages differ from the reference");
    assert_eq!(end, want_end, "the stream ended differently ({got:?})");
    (got, end)
}

/// [`sock_rx`] on a fuzzer's bytes: a maximum size, then datagrams, each
/// a length and that many bytes.
pub fn sock_rx_bytes(bytes: &[u8]) -> (Vec<Delivered>, StreamEnd) {
    let mut input = Input::new(bytes);
    let max_message = usize::from(input.u16() % 8192);
    let mut datagrams = Vec::new();
    while !input.is_empty() && datagrams.len() < 64 {
        let len = usize::from(input.u16()) % (max_message + 64);
        datagrams.push(input.take(len).to_vec());
    }
    sock_rx(max_message, &datagrams)
}

// --- the ring reader --------------------------------------------------------

/// One step of a [`RingCase`]: a read by the consumer under test, or a
/// write by the hostile producer into the shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingOp {
    /// `try_peek`; then release the record, or drop the grant (keeping
    /// it).
    Peek {
        /// Release the record.
        release: bool,
    },
    /// `try_pop_into` a buffer of this many bytes.
    Pop {
        /// Buffer length.
        buf: u16,
    },
    /// `peek_timeout` of 100 µs (no spinning), then release.
    PeekTimeout,
    /// Writes the producer position (which publishes nothing: the
    /// consumer reads it only at its claim).
    SetTail(u64),
    /// Moves the producer position by 8 × n bytes (wrapping): a lie the
    /// consumer must not act on.
    MoveTail(i16),
    /// Writes any value as the record word at data word `index` (modulo
    /// the capacity).
    SetWord {
        /// Data word index.
        index: u16,
        /// Value.
        value: u64,
    },
    /// Writes a record word of a known kind (data, or padding) and any
    /// length at data word `index`.
    SetRecord {
        /// Data word index.
        index: u16,
        /// Record length.
        len: u32,
        /// Padding instead of data.
        pad: bool,
    },
    /// Writes the closed word.
    SetClosed(u32),
    /// Writes the consumer position in the header (the consumer keeps
    /// its own and must not care).
    SetHead(u64),
}

impl RingOp {
    fn from_input(input: &mut Input<'_>) -> RingOp {
        match input.u8() % 10 {
            0 | 1 => RingOp::Peek {
                release: input.u8() & 1 == 0,
            },
            2 => RingOp::Pop { buf: input.u16() },
            3 => RingOp::PeekTimeout,
            4 => RingOp::SetTail(input.u64()),
            5 => RingOp::MoveTail(input.u16() as i16),
            6 => RingOp::SetWord {
                index: input.u16(),
                value: input.u64(),
            },
            7 => RingOp::SetRecord {
                index: input.u16(),
                len: input.u32(),
                pad: input.u8() & 1 == 1,
            },
            8 => RingOp::SetClosed(input.u32()),
            _ => RingOp::SetHead(input.u64()),
        }
    }

    /// Applies a write to the shared memory; reads are not writes.
    fn write(self, raw: &RawRing) {
        let word_at = |index: u16| (u64::from(index) * 8) % raw.capacity() as u64;
        match self {
            RingOp::SetTail(v) => raw.set_tail(v),
            RingOp::MoveTail(n) => raw.set_tail(raw.tail().wrapping_add((i64::from(n) * 8) as u64)),
            RingOp::SetWord { index, value } => raw.store64(
                ringlink_ringbuf::layout::HEADER_SIZE + word_at(index) as usize,
                value,
            ),
            RingOp::SetRecord { index, len, pad } => {
                raw.set_record_word(word_at(index), len, if pad { KIND_PAD } else { KIND_DATA })
            }
            RingOp::SetClosed(v) => raw.store32(off::CLOSED, v),
            RingOp::SetHead(v) => raw.set_head(v),
            RingOp::Peek { .. } | RingOp::Pop { .. } | RingOp::PeekTimeout => {}
        }
    }
}

/// A ring as a hostile producer leaves it, and what happens next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingCase {
    /// log2 of the capacity, taken into 6..=12 (64 B to 4 KiB).
    pub capacity_log2: u8,
    /// Both positions start here (rounded down to a multiple of 8): near
    /// zero, anywhere, or just below the `u64` wrap.
    pub start: u64,
    /// Payload lengths of valid records a real producer writes first
    /// (modulo the largest payload + 1; as many as fit).
    pub records: Vec<u16>,
    /// Writes applied before the consumer claims its role (reads here
    /// are skipped).
    pub before_claim: Vec<RingOp>,
    /// Then reads and writes, in order.
    pub ops: Vec<RingOp>,
}

impl RingCase {
    /// A case from a fuzzer's bytes.
    pub fn from_bytes(bytes: &[u8]) -> RingCase {
        let mut input = Input::new(bytes);
        let capacity_log2 = 6 + input.u8() % 7;
        let start = match input.u8() % 4 {
            0 => 0,
            1 => u64::from(input.u16()) * 8,
            2 => u64::MAX - u64::from(input.u16()) * 8,
            _ => input.u64(),
        };
        let records = (0..input.u8() % 24).map(|_| input.u16()).collect();
        let before_claim = (0..input.u8() % 4)
            .map(|_| RingOp::from_input(&mut input))
            .collect();
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < 96 {
            ops.push(RingOp::from_input(&mut input));
        }
        RingCase {
            capacity_log2,
            start,
            records,
            before_claim,
            ops,
        }
    }
}

/// The reference reader, from `docs/RING.md` (layout version 2): the
/// consumer's position (its own, never re-read), and the record word at
/// it, read once; the producer's position is read only at the claim.
#[derive(Debug)]
struct Reference {
    capacity: u64,
    head: u64,
}

impl Reference {
    /// The claim: positions aligned, the producer at most a capacity
    /// ahead.
    fn claim(raw: &RawRing) -> Result<Reference, Corruption> {
        let (head, tail) = (raw.head(), raw.tail());
        let capacity = raw.capacity() as u64;
        if head % 8 != 0 || tail % 8 != 0 {
            return Err(Corruption::MisalignedPosition);
        }
        if tail.wrapping_sub(head) > capacity {
            return Err(Corruption::PositionTooFarAhead);
        }
        Ok(Reference { capacity, head })
    }

    /// The next data record (offset, length), skipping one padding
    /// record, or why there is none.
    fn next(&mut self, raw: &RawRing) -> Result<(usize, usize), PopError> {
        let max = max_payload(self.capacity as usize);
        loop {
            let offset = (self.head % self.capacity) as usize;
            let to_end = self.capacity as usize - offset;
            let at = ringlink_ringbuf::layout::HEADER_SIZE + offset;
            let mut word = raw.load64(at);
            if word == 0 {
                // Nothing published here yet; any closed bit ends the
                // stream once a second look still finds nothing.
                if raw.load32(off::CLOSED) == 0 {
                    return Err(PopError::Empty);
                }
                word = raw.load64(at);
                if word == 0 {
                    return Err(PopError::Closed);
                }
            }
            let len = (word as u32) as usize;
            match (word >> 32) as u32 {
                KIND_DATA => {
                    if len > max || record_size(len) > to_end {
                        return Err(PopError::Corrupt(Corruption::RecordLength));
                    }
                    return Ok((offset, len));
                }
                KIND_PAD => {
                    if offset == 0 || len + RECORD_HEADER != to_end {
                        return Err(PopError::Corrupt(Corruption::Padding));
                    }
                    self.head = self.head.wrapping_add(to_end as u64);
                }
                _ => return Err(PopError::Corrupt(Corruption::RecordKind)),
            }
        }
    }

    fn release(&mut self, len: usize) {
        self.head = self.head.wrapping_add(record_size(len) as u64);
    }
}

/// What a [`ring_consumer`] run saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingOutcome {
    /// The consumer could not claim its role (corrupt positions).
    pub claim_refused: bool,
    /// Records the real producer wrote before the case's writes.
    pub pushed: u64,
    /// Records delivered.
    pub delivered: u64,
    /// Reads that reported corruption.
    pub corrupt: u64,
    /// Reads that reported a closed ring.
    pub closed: u64,
}

/// Runs `case`: a memfd ring, valid records written by a real producer,
/// then the case's writes into the shared memory and the consumer's
/// reads, each read checked against the reference reader (same result;
/// a delivered record has the bytes the memory holds at its place).
///
/// # Panics
///
/// On any disagreement with the reference, or if the ring panics.
pub fn ring_consumer(case: &RingCase) -> RingOutcome {
    let capacity = 1usize << case.capacity_log2.clamp(6, 12);
    let ring = Ring::create(capacity).expect("a memfd ring");
    let raw = RawRing::map(&ring).expect("a second mapping");
    let start = case.start & !7;
    raw.set_head(start);
    raw.set_tail(start);
    let max = max_payload(capacity);
    // The producer stays claimed (and the ring open) until the end.
    let mut tx = ring.producer().expect("claim the producer");
    let mut pushed = 0;
    for (i, &len) in case.records.iter().enumerate() {
        let mut payload = vec![0u8; usize::from(len) % (max + 1)];
        crate::payload::fill(0xF022, i as u64, &mut payload);
        if tx.try_push(&payload).is_err() {
            break;
        }
        pushed += 1;
    }
    for op in &case.before_claim {
        op.write(&raw);
    }
    let mut out = RingOutcome {
        pushed,
        ..RingOutcome::default()
    };
    let (mut rx, mut reference) = match (ring.consumer(), Reference::claim(&raw)) {
        (Ok(rx), Ok(reference)) => (rx, reference),
        (Err(ClaimError::Corrupt(got)), Err(want)) => {
            assert_eq!(got, want, "claim refused for another reason");
            out.claim_refused = true;
            return out;
        }
        (got, want) => panic!(
            "claim: the consumer gave {:?}, the reference {want:?}",
            got.map(drop)
        ),
    };
    rx.set_spin(Duration::ZERO);
    let mut buf = vec![0u8; max + 1];
    for (step, &op) in case.ops.iter().enumerate() {
        let want = match op {
            RingOp::Peek { .. } | RingOp::Pop { .. } | RingOp::PeekTimeout => {
                // The consumer's hint: the word at its position, non-zero.
                let at = (reference.head % capacity as u64) as usize;
                let word = raw.load64(ringlink_ringbuf::layout::HEADER_SIZE + at);
                assert_eq!(rx.has_record(), word != 0, "step {step}: has_record");
                reference.next(&raw)
            }
            write => {
                write.write(&raw);
                continue;
            }
        };
        let here = format!("step {step} ({op:?}), reference {want:?}");
        let got: Result<Vec<u8>, PopError> = match op {
            RingOp::Peek { release } => rx.try_peek().map(|g| {
                let bytes = g.to_vec();
                if release {
                    g.release();
                }
                bytes
            }),
            RingOp::PeekTimeout => match rx.peek_timeout(Duration::from_micros(100)) {
                Ok(g) => {
                    let bytes = g.to_vec();
                    g.release();
                    Ok(bytes)
                }
                Err(PopError::TimedOut) => Err(PopError::Empty),
                Err(e) => Err(e),
            },
            RingOp::Pop { buf: n } => {
                let n = usize::from(n).min(buf.len());
                rx.try_pop_into(&mut buf[..n])
                    .map(|len| buf[..len].to_vec())
            }
            _ => unreachable!("writes handled above"),
        };
        match (want, got) {
            (Ok((at, len)), Ok(bytes)) => {
                assert_eq!(bytes.len(), len, "{here}: record length");
                assert_eq!(
                    bytes,
                    raw.data_bytes(at + RECORD_HEADER, len),
                    "{here}: record bytes"
                );
                out.delivered += 1;
                if !matches!(op, RingOp::Peek { release: false }) {
                    reference.release(len);
                    assert_eq!(raw.head(), reference.head, "{here}: published head");
                }
            }
            (Ok((_, len)), Err(PopError::BufferTooSmall { needed })) => {
                let RingOp::Pop { buf: n } = op else {
                    panic!("{here}: BufferTooSmall from a peek");
                };
                assert!(usize::from(n) < len, "{here}: refused a buffer that fits");
                assert_eq!(needed, len, "{here}: BufferTooSmall's length");
            }
            (Err(w), Err(g)) => {
                assert_eq!(g, w, "{here}: error");
                match g {
                    PopError::Corrupt(_) => out.corrupt += 1,
                    PopError::Closed => out.closed += 1,
                    _ => {}
                }
            }
            (w, g) => panic!(
                "{here}: the consumer gave {:?}, the reference {w:?}",
                g.map(|b| b.len())
            ),
        }
    }
    drop(rx);
    drop(tx);
    out
}
