//! libqb's IPC wire format (libqb 2.x, as Debian bookworm ships it:
//! 2.0.6), for serving libqb clients and calling libqb servers
//! (`docs/LIBQB.md`). Native x86_64/aarch64 layout: little-endian, `int`
//! 4 bytes, `intptr_t` 8, structs 8-aligned.
//!
//! A libqb connection starts on a `SOCK_STREAM` socket in the abstract
//! namespace, named by the service name NUL-padded to the whole of
//! `sun_path` ([`abstract_name`]): the client sends a
//! [`ConnRequest`] (24 bytes), the server answers with a
//! [`ConnResponse`] (12,328 bytes, in one `send`) naming the transport
//! (shared memory or sockets) and where its three channels are. Every
//! request then starts with a 16-byte [`RequestHeader`], every response
//! and event with a 24-byte [`ResponseHeader`]; both count themselves in
//! `size`.

use crate::wire::WireError;

/// Id of the connection request and response.
pub const MSG_AUTHENTICATE: i32 = -1;
/// Id of a request asking the server to drop the connection.
pub const MSG_DISCONNECT: i32 = -3;

/// Size of a request header.
pub const REQUEST_HEADER_LEN: usize = 16;
/// Size of a response (and event) header.
pub const RESPONSE_HEADER_LEN: usize = 24;
/// Size of the connection request.
pub const CONN_REQUEST_LEN: usize = 24;
/// Size of the connection response; also the smallest message size a
/// libqb client asks for.
pub const CONN_RESPONSE_LEN: usize = 12_328;

/// The largest errno a refusal may carry (Linux's `MAX_ERRNO`).
pub const MAX_ERRNO: i32 = 4095;
/// `PATH_MAX`: the size of each path field of the connection response.
pub const PATH_FIELD: usize = 4096;
/// The longest name a libqb server writes in a path field (`NAME_MAX - 1`):
/// longer names are refused on both sides.
pub const MAX_NAME: usize = 254;
/// Bytes of `sun_path` (`UNIX_PATH_MAX`).
pub const SUN_PATH_LEN: usize = 108;
/// The longest service name: `sun_path` less the leading NUL and a
/// terminating one.
pub const MAX_SERVICE_NAME: usize = SUN_PATH_LEN - 2;

/// Offsets of the connection response's fields.
mod off {
    pub(super) const ERROR: usize = 16;
    pub(super) const TYPE: usize = 24;
    pub(super) const MAX: usize = 28;
    pub(super) const COOKIE: usize = 32;
    pub(super) const REQUEST: usize = 40;
    pub(super) const RESPONSE: usize = REQUEST + super::PATH_FIELD;
    pub(super) const EVENT: usize = RESPONSE + super::PATH_FIELD;
}

/// A libqb transport, as the connection response names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QbTransport {
    /// One `SOCK_DGRAM` socket pair per channel direction (`QB_IPC_SOCKET`).
    Socket = 0,
    /// Three rings in files under `/dev/shm` (`QB_IPC_SHM`; libqb's
    /// default, what Corosync and Pacemaker use).
    Shm = 1,
}

impl QbTransport {
    fn from_i32(v: i32) -> Option<QbTransport> {
        match v {
            0 => Some(QbTransport::Socket),
            1 => Some(QbTransport::Shm),
            _ => None,
        }
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The header of every request: id at 0, total size (header included) at
/// 8, padding zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestHeader {
    /// The application's message id (from 0; negative ids are libqb's).
    pub id: i32,
    /// The whole message's length, this header included.
    pub size: i32,
}

impl RequestHeader {
    /// The 16 bytes.
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Reads a header from the start of `b`. The padding is not checked
    /// (libqb does not zero it in every path).
    ///
    /// # Errors
    ///
    /// [`WireError::Length`] if `b` is shorter than a header.
    pub fn decode(b: &[u8]) -> Result<RequestHeader, WireError> {
        if b.len() < REQUEST_HEADER_LEN {
            return Err(WireError::Length);
        }
        Ok(RequestHeader {
            id: i32_at(b, 0),
            size: i32_at(b, 8),
        })
    }
}

/// The header of every response and event: id at 0, total size at 8,
/// error at 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseHeader {
    /// The application's message id.
    pub id: i32,
    /// The whole message's length, this header included.
    pub size: i32,
    /// The application's error code (by convention 0 or a negative
    /// errno).
    pub error: i32,
}

impl ResponseHeader {
    /// The 24 bytes.
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut b = [0u8; RESPONSE_HEADER_LEN];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[16..20].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    /// Reads a header from the start of `b`.
    ///
    /// # Errors
    ///
    /// [`WireError::Length`] if `b` is shorter than a header.
    pub fn decode(b: &[u8]) -> Result<ResponseHeader, WireError> {
        if b.len() < RESPONSE_HEADER_LEN {
            return Err(WireError::Length);
        }
        Ok(ResponseHeader {
            id: i32_at(b, 0),
            size: i32_at(b, 8),
            error: i32_at(b, 16),
        })
    }
}

/// The connection request (`qb_ipc_connection_request`): a request
/// header with id [`MSG_AUTHENTICATE`], then the largest message the
/// client wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRequest {
    /// The message size the client asks for (a libqb client never asks
    /// for less than [`CONN_RESPONSE_LEN`]).
    pub max_msg_size: u32,
}

impl ConnRequest {
    /// The 24 bytes, as a libqb client sends them.
    pub fn encode(&self) -> [u8; CONN_REQUEST_LEN] {
        let mut b = [0u8; CONN_REQUEST_LEN];
        let h = RequestHeader {
            id: MSG_AUTHENTICATE,
            size: CONN_REQUEST_LEN as i32,
        };
        b[..REQUEST_HEADER_LEN].copy_from_slice(&h.encode());
        b[16..20].copy_from_slice(&self.max_msg_size.to_le_bytes());
        b
    }

    /// Reads a request. Only the id is checked (libqb's server checks no
    /// more: the size field and the padding are ignored).
    ///
    /// # Errors
    ///
    /// [`WireError::Length`] for another length, [`WireError::Magic`] if
    /// the id is not [`MSG_AUTHENTICATE`].
    pub fn decode(b: &[u8]) -> Result<ConnRequest, WireError> {
        if b.len() != CONN_REQUEST_LEN {
            return Err(WireError::Length);
        }
        if RequestHeader::decode(b)?.id != MSG_AUTHENTICATE {
            return Err(WireError::Magic);
        }
        Ok(ConnRequest {
            max_msg_size: u32_at(b, 16),
        })
    }
}

/// The connection response (`qb_ipc_connection_response`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnResponse {
    /// 0, or a negative errno: the connection is refused.
    pub error: i32,
    /// The transport of the channels (meaningless when refused).
    pub transport: QbTransport,
    /// The negotiated size of all three channels' messages.
    pub max_msg_size: u32,
    /// An opaque value (libqb sends a heap pointer; ringlink the
    /// connection id). Clients ignore it.
    pub cookie: u64,
    /// Shared memory: the request ring's name (its files add `-header`
    /// and `-data`). Sockets: the control file's path.
    pub request: Vec<u8>,
    /// Shared memory: the response ring's name. Sockets: the base of the
    /// datagram sockets' abstract names.
    pub response: Vec<u8>,
    /// Shared memory: the event ring's name. Sockets: empty.
    pub event: Vec<u8>,
}

impl ConnResponse {
    /// A refusal with `errno` (positive; sent negated; either sign is
    /// taken as the errno).
    pub fn refuse(errno: i32) -> ConnResponse {
        ConnResponse {
            error: -errno.saturating_abs(),
            transport: QbTransport::Socket,
            max_msg_size: 0,
            cookie: 0,
            request: Vec::new(),
            response: Vec::new(),
            event: Vec::new(),
        }
    }

    /// The 12,328 bytes (names longer than [`MAX_NAME`] are cut, as
    /// libqb's server cuts them; [`decode`](Self::decode) refuses them).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONN_RESPONSE_LEN];
        let h = ResponseHeader {
            id: MSG_AUTHENTICATE,
            size: CONN_RESPONSE_LEN as i32,
            error: self.error,
        };
        b[..RESPONSE_HEADER_LEN].copy_from_slice(&h.encode());
        if self.error == 0 {
            b[off::TYPE..off::TYPE + 4].copy_from_slice(&(self.transport as i32).to_le_bytes());
            b[off::MAX..off::MAX + 4].copy_from_slice(&self.max_msg_size.to_le_bytes());
            b[off::COOKIE..off::COOKIE + 8].copy_from_slice(&self.cookie.to_le_bytes());
        }
        for (at, name) in [
            (off::REQUEST, &self.request),
            (off::RESPONSE, &self.response),
            (off::EVENT, &self.event),
        ] {
            let n = name.len().min(MAX_NAME);
            b[at..at + n].copy_from_slice(&name[..n]);
        }
        b
    }

    /// Reads a response; for a refusal, checks that its error is an
    /// errno (negated, as libqb sends it; a positive one is taken as is);
    /// for an accepting one, checks what a client is about to trust: a
    /// known transport, names that are NUL-terminated, at most
    /// [`MAX_NAME`] bytes and free of NULs inside.
    ///
    /// # Errors
    ///
    /// [`WireError::Length`], [`WireError::Errno`] for an error that is
    /// no errno, [`WireError::Transport`] for an unknown transport,
    /// [`WireError::Path`] for a bad name.
    pub fn decode(b: &[u8]) -> Result<ConnResponse, WireError> {
        if b.len() != CONN_RESPONSE_LEN {
            return Err(WireError::Length);
        }
        let error = i32_at(b, off::ERROR);
        if error != 0 {
            if !(1..=MAX_ERRNO).contains(&error.saturating_abs()) {
                return Err(WireError::Errno(error));
            }
            return Ok(ConnResponse::refuse(error));
        }
        let t = i32_at(b, off::TYPE);
        let transport = QbTransport::from_i32(t).ok_or(WireError::Transport(t as u16))?;
        let name = |at: usize| -> Result<Vec<u8>, WireError> {
            let field = &b[at..at + PATH_FIELD];
            let end = field.iter().position(|&c| c == 0).ok_or(WireError::Path)?;
            if end > MAX_NAME {
                return Err(WireError::Path);
            }
            Ok(field[..end].to_vec())
        };
        Ok(ConnResponse {
            error,
            transport,
            max_msg_size: u32_at(b, off::MAX),
            cookie: u64::from_le_bytes(b[off::COOKIE..off::COOKIE + 8].try_into().expect("8")),
            request: name(off::REQUEST)?,
            response: name(off::RESPONSE)?,
            event: name(off::EVENT)?,
        })
    }
}

/// The server's side of a libqb handshake, without I/O: exactly
/// [`CONN_REQUEST_LEN`] bytes of request, never a byte more (there is no
/// confirmation: the connection starts once the response is sent).
#[derive(Debug, Default)]
pub struct QbServerHandshake {
    buf: [u8; CONN_REQUEST_LEN],
    got: usize,
}

impl QbServerHandshake {
    /// Where the next bytes go: what is missing of the request.
    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.buf[self.got..]
    }

    /// `n` bytes were read into [`buffer`](Self::buffer): `None` while
    /// more are needed, then the request, decoded.
    ///
    /// # Panics
    ///
    /// If `n` is more than the buffer held.
    pub fn received(&mut self, n: usize) -> Option<Result<ConnRequest, WireError>> {
        assert!(
            n <= CONN_REQUEST_LEN - self.got,
            "more bytes than the buffer held"
        );
        self.got += n;
        (self.got == CONN_REQUEST_LEN).then(|| ConnRequest::decode(&self.buf))
    }
}

/// The size of each ring's data file for messages of `max_msg_size`
/// bytes: `max + 12` (libqb's chunk margin) `+ 1`, rounded up to the page
/// size. Both sides compute it, and must agree exactly.
pub fn ring_data_size(max_msg_size: u32, page: usize) -> usize {
    (max_msg_size as usize + 13).div_ceil(page) * page
}

/// The abstract socket address bytes of libqb service `name`: a NUL,
/// the name, NULs to fill `sun_path` (libqb binds and connects with the
/// whole `sockaddr_un`, so a shorter address names another socket).
///
/// # Errors
///
/// [`WireError::Path`] if the name is empty, longer than
/// [`MAX_SERVICE_NAME`] or holds a NUL.
pub fn abstract_name(name: &[u8]) -> Result<[u8; SUN_PATH_LEN - 1], WireError> {
    if name.is_empty() || name.len() > MAX_SERVICE_NAME || name.contains(&0) {
        return Err(WireError::Path);
    }
    let mut b = [0u8; SUN_PATH_LEN - 1];
    b[..name.len()].copy_from_slice(name);
    Ok(b)
}

/// The abstract address bytes of a libqb datagram socket named `name`
/// (the socket transport's per-connection sockets): as
/// [`abstract_name`], but a name longer than [`MAX_SERVICE_NAME`] is cut
/// there, as libqb cuts it (both sides cut it the same way).
pub fn dgram_name(name: &[u8]) -> [u8; SUN_PATH_LEN - 1] {
    let mut b = [0u8; SUN_PATH_LEN - 1];
    let n = name
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(name.len())
        .min(MAX_SERVICE_NAME);
    b[..n].copy_from_slice(&name[..n]);
    b
}

/// Offsets in the socket transport's control file: three
/// `{i32 sent; i32 flow_control}` pairs (request, response, event).
pub mod control {
    /// The file's size.
    pub const LEN: usize = 24;
    /// Requests sent and not yet read (the client adds, the server
    /// takes).
    pub const REQUEST_SENT: usize = 0;
    /// The flow-control level, written by the server.
    pub const FLOW_CONTROL: usize = 4;
    /// Responses sent and not yet read.
    pub const RESPONSE_SENT: usize = 8;
    /// Events sent and not yet read.
    pub const EVENT_SENT: usize = 16;
}

/// libqb's flow-control rule: a client with threshold `fc_enable_max`
/// holds its sends while `0 < level <= fc_enable_max` (levels: 0 reading,
/// 1 `RATE_OFF`, 2 `RATE_OFF_2`).
pub fn holds(level: i32, fc_enable_max: u32) -> bool {
    level > 0 && i64::from(level) <= i64::from(fc_enable_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_what_libqb_sends() {
        // Seen on the wire from libqb 2.0.6 (`docs/LIBQB.md`).
        let wire = [
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0x28, 0x30, 0, 0, 0, 0,
            0, 0,
        ];
        let r = ConnRequest::decode(&wire).expect("decode");
        assert_eq!(r.max_msg_size, 12_328);
        assert_eq!(r.encode(), wire);
        let mut bad = wire;
        bad[0] = 0;
        assert_eq!(ConnRequest::decode(&bad), Err(WireError::Magic));
        assert_eq!(ConnRequest::decode(&wire[..20]), Err(WireError::Length));
    }

    #[test]
    fn responses_round_trip_and_refusals_carry_the_errno() {
        let r = ConnResponse {
            error: 0,
            transport: QbTransport::Shm,
            max_msg_size: 12_328,
            cookie: 7,
            request: b"/dev/shm/qb-1-2-3-abcdef/qb-request-svc".to_vec(),
            response: b"/dev/shm/qb-1-2-3-abcdef/qb-response-svc".to_vec(),
            event: b"/dev/shm/qb-1-2-3-abcdef/qb-event-svc".to_vec(),
        };
        let b = r.encode();
        assert_eq!(b.len(), CONN_RESPONSE_LEN);
        assert_eq!(i32_at(&b, 0), MSG_AUTHENTICATE);
        assert_eq!(i32_at(&b, 8), CONN_RESPONSE_LEN as i32);
        assert_eq!(i32_at(&b, 24), 1);
        assert_eq!(&b[40..43], b"/de");
        assert_eq!(ConnResponse::decode(&b).expect("decode"), r);
        let no = ConnResponse::refuse(13).encode();
        assert_eq!(i32_at(&no, 16), -13);
        assert_eq!(ConnResponse::decode(&no).expect("decode").error, -13);
        // An error field that no errno makes (whose negation overflows,
        // too) is refused, not negated.
        for bad in [i32::MIN, -4096, 4096, i32::MAX] {
            let mut e = no.clone();
            e[off::ERROR..off::ERROR + 4].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(
                ConnResponse::decode(&e),
                Err(WireError::Errno(bad)),
                "{bad}"
            );
        }
        let mut positive = no.clone();
        positive[off::ERROR..off::ERROR + 4].copy_from_slice(&13i32.to_le_bytes());
        assert_eq!(ConnResponse::decode(&positive).expect("decode").error, -13);
        assert_eq!(ConnResponse::refuse(i32::MIN).error, -i32::MAX);
        let mut unterminated = b.clone();
        unterminated[off::EVENT..off::EVENT + PATH_FIELD].fill(b'a');
        assert_eq!(ConnResponse::decode(&unterminated), Err(WireError::Path));
        let mut odd = b;
        odd[24] = 7;
        assert_eq!(ConnResponse::decode(&odd), Err(WireError::Transport(7)));
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(ring_data_size(12_328, 4096), 16_384);
        assert_eq!(ring_data_size(1 << 20, 4096), 1_052_672);
        let n = abstract_name(b"qbspec").expect("name");
        assert_eq!(&n[..7], b"qbspec\0");
        assert!(n[6..].iter().all(|&c| c == 0));
        assert!(abstract_name(&[b'a'; 107]).is_err());
        assert!(abstract_name(b"a\0b").is_err());
        assert!(!holds(0, 1) && holds(1, 1) && !holds(2, 1) && holds(2, 2) && !holds(1, 0));
    }
}
