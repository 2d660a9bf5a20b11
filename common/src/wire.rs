//! The bytes exchanged on the handshake socket and at the head of every
//! message in the rings. `docs/PROTOCOL.md` describes the same layout for
//! implementers in other languages; every multi-byte integer is
//! little-endian.
//!
//! Decoders treat their input as hostile: every field is checked and a
//! failure is a typed [`WireError`], never a panic.

use std::fmt;

/// Version of the handshake and message-header layout.
///
/// Version 5 (this one) changed the rings' layout (ring layout version
/// 2, `docs/RING.md`): a record is published by its own word, which the
/// reader polls, and the word after it is cleared first; nothing on the
/// socket changed, but a version-4 peer would misread the rings. Version
/// 4 lets messages carry fds: each side says in the
/// handshake how many it accepts ([`FdTerms`], after the request and
/// before the answer's trailer), and the header's flags word counts a
/// message's fds in its high half ([`MsgHeader::fds`]). Version 3 gave the
/// message header's word at offset 12 a meaning: flags, of which
/// [`FLAG_ONE_WAY`] marks a request that takes no response. Version 2 passed no eventfds: wake-ups travel as bytes on
/// the connection's stream socket, each process holding its own end, so
/// that no fd whose open file description both processes share is ever
/// written or read (see `docs/PROTOCOL.md`). Peers of other versions are
/// refused with [`Status::VersionMismatch`].
pub const PROTOCOL_VERSION: u16 = 5;
/// Message header flag: a one-way request (Legato's `le_msg_Send`), which
/// takes no response. It carries sequence number 0.
pub const FLAG_ONE_WAY: u32 = 1;
/// Message header flag: an event telling the client that events were
/// dropped at this point of the stream; its payload is their number (u64,
/// little-endian).
pub const FLAG_LAGGED: u32 = 2;
/// Message header flag: a call from the server (lwmsg's peers call each
/// other, miniRPC's server issues calls), on the response channel, with
/// its own sequence number (from 1, per connection).
pub const FLAG_CALL: u32 = 4;
/// Message header flag: the client's reply to a call, on the request
/// channel, with the call's sequence number and an error code.
pub const FLAG_REPLY: u32 = 8;
/// Every flag this version defines (the low half of the flags word; the
/// high half counts the message's fds).
pub const KNOWN_FLAGS: u32 = FLAG_ONE_WAY | FLAG_LAGGED | FLAG_CALL | FLAG_REPLY;
/// Most fds one message may carry (the kernel's `SCM_MAX_FD`): a count
/// above it in a header is malformed.
pub const MAX_MSG_FDS: u16 = 253;
/// Size of an encoded [`FdTerms`].
pub const FD_TERMS_LEN: usize = 8;
/// First four bytes of a [`ConnectRequest`] (`"RLq1"`).
pub const REQUEST_MAGIC: u32 = u32::from_le_bytes(*b"RLq1");
/// First four bytes of a [`ConnectResponse`] (`"RLr1"`).
pub const RESPONSE_MAGIC: u32 = u32::from_le_bytes(*b"RLr1");
/// First four bytes of the client's [`Confirm`] (`"RLok"`).
pub const CONFIRM_MAGIC: u32 = u32::from_le_bytes(*b"RLok");
/// Longest protocol id, in bytes.
pub const MAX_PROTOCOL_ID: usize = 64;
/// Size of an encoded [`ConnectRequest`]: its head, then the client's
/// [`FdTerms`].
pub const REQUEST_LEN: usize = REQUEST_HEAD_LEN + FD_TERMS_LEN;
/// Size of a [`ConnectRequest`]'s head, the part every version shares up
/// to its protocol id (a server reads it, and answers another version,
/// before it reads on).
pub const REQUEST_HEAD_LEN: usize = 80;
/// Size of an encoded [`ConnectResponse`].
pub const RESPONSE_LEN: usize = 48;
/// Size of an encoded [`Confirm`].
pub const CONFIRM_LEN: usize = 8;
/// Fds attached to a successful shared-memory [`ConnectResponse`]: the
/// memory fds (sealed memfds) of the request, response and event rings,
/// in that order.
pub const SHM_FDS: usize = 3;
/// Fds attached to a successful [`ConnectResponse`] with named rings:
/// none (the client opens the ring files by path).
pub const NAMED_SHM_FDS: usize = 0;
/// Fds attached to a successful [`ConnectResponse`] with the socket
/// transport: the client's ends of the request/response and of the event
/// `SOCK_SEQPACKET` socket pairs.
pub const SOCKET_FDS: usize = 2;
/// Largest message payload ringlink carries (256 MiB): servers cap what
/// they negotiate at it, and clients refuse a handshake that announces
/// more (the buffers they would allocate for it).
pub const MAX_MESSAGE: usize = 1 << 28;
/// Longest ring path prefix a [`ConnectResponse`] may announce.
pub const MAX_RING_PATH: usize = 256;
/// Size of the [`MsgHeader`] at the start of every message record.
pub const MSG_HEADER_LEN: usize = 24;
/// Error code of a response to a request whose message id the server has
/// no handler for (`-ENOSYS`).
pub const ERROR_UNKNOWN_ID: i32 = -38;

/// Checks that `protocol` can be sent as a protocol id (1 to
/// [`MAX_PROTOCOL_ID`] bytes).
///
/// # Errors
///
/// `InvalidInput` otherwise.
pub fn check_protocol_id(protocol: &str) -> std::io::Result<()> {
    if protocol.is_empty() || protocol.len() > MAX_PROTOCOL_ID {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "protocol id must be 1 to 64 bytes",
        ));
    }
    Ok(())
}

/// Why a peer's bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireError {
    /// Wrong length for this message.
    Length,
    /// Wrong magic number.
    Magic,
    /// A protocol version this side does not speak.
    Version(u16),
    /// Unknown transport code.
    Transport(u16),
    /// Protocol id empty, too long, not UTF-8, or with non-zero padding.
    ProtocolId,
    /// Unknown status code.
    Status(u16),
    /// A reserved field is not zero, or a flag this version does not
    /// define is set.
    Reserved,
    /// A one-way message with a sequence number (one-way requests carry
    /// 0: nothing answers them).
    OneWaySeq,
    /// A call or a reply without a sequence number.
    CallSeq,
    /// The size in a message header disagrees with the record's length.
    Size,
    /// A ring path prefix longer than [`MAX_RING_PATH`].
    PathLength(u16),
    /// A name or path field that is empty where it must not be, not
    /// terminated, too long, or holds a NUL (libqb's names).
    Path,
    /// An error field that is not an errno, negated (libqb's refusals
    /// carry `-errno`, 1 to 4095).
    Errno(i32),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Length => f.write_str("wrong message length"),
            WireError::Magic => f.write_str("wrong magic number"),
            WireError::Version(v) => write!(f, "unsupported protocol version {v}"),
            WireError::Transport(t) => write!(f, "unknown transport {t}"),
            WireError::ProtocolId => f.write_str("malformed protocol id"),
            WireError::Status(s) => write!(f, "unknown status {s}"),
            WireError::Reserved => f.write_str("reserved field or unknown flag is not zero"),
            WireError::OneWaySeq => f.write_str("one-way message with a sequence number"),
            WireError::CallSeq => f.write_str("call or reply without a sequence number"),
            WireError::Size => f.write_str("message size disagrees with its record"),
            WireError::Path => f.write_str("malformed name or path"),
            WireError::Errno(e) => write!(f, "error field {e} is not a negated errno"),
            WireError::PathLength(n) => {
                write!(
                    f,
                    "ring path of {n} bytes, above the limit of {MAX_RING_PATH}"
                )
            }
        }
    }
}

impl std::error::Error for WireError {}

/// How messages travel once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u16)]
pub enum Transport {
    /// Shared-memory rings (the default).
    #[default]
    Shm = 1,
    /// `SOCK_SEQPACKET` socket.
    Socket = 2,
}

impl Transport {
    fn from_u16(v: u16) -> Result<Transport, WireError> {
        match v {
            1 => Ok(Transport::Shm),
            2 => Ok(Transport::Socket),
            _ => Err(WireError::Transport(v)),
        }
    }
}

/// The server's answer to a connection request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Status {
    /// Accepted; the rings' fds are attached.
    Ok = 0,
    /// The accept handler refused these credentials.
    PermissionDenied = 1,
    /// The server does not speak this protocol id.
    UnknownProtocol = 2,
    /// The server does not speak this protocol version.
    VersionMismatch = 3,
    /// The server has as many clients as it accepts.
    TooManyClients = 4,
    /// The server could not allocate the connection's resources.
    Resources = 5,
    /// The request was malformed.
    BadRequest = 6,
    /// The server uses the other transport.
    TransportMismatch = 7,
    /// The client's user has as many connections as the server allows
    /// one user.
    UserQuota = 8,
    /// The client's process has as many connections as the server
    /// allows one process.
    ProcessQuota = 9,
}

impl Status {
    /// The errno libqb uses for this refusal: what a libqb client's
    /// `qb_ipcc_connect` fails with when a ringlink server refuses it
    /// (`EACCES` for credentials the accept handler refused, `EAGAIN` for
    /// a full server, `EDQUOT` for a quota, `ENOMEM` otherwise, as
    /// libqb's own server does when it cannot set a connection up); and,
    /// read the other way, what a libqb server's refusal means to a
    /// ringlink client. 0 for [`Ok`](Status::Ok).
    pub fn errno(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::PermissionDenied => libc::EACCES,
            Status::TooManyClients => libc::EAGAIN,
            Status::UserQuota | Status::ProcessQuota => libc::EDQUOT,
            Status::Resources
            | Status::UnknownProtocol
            | Status::VersionMismatch
            | Status::BadRequest
            | Status::TransportMismatch => libc::ENOMEM,
        }
    }

    fn from_u16(v: u16) -> Result<Status, WireError> {
        Ok(match v {
            0 => Status::Ok,
            1 => Status::PermissionDenied,
            2 => Status::UnknownProtocol,
            3 => Status::VersionMismatch,
            4 => Status::TooManyClients,
            5 => Status::Resources,
            6 => Status::BadRequest,
            7 => Status::TransportMismatch,
            8 => Status::UserQuota,
            9 => Status::ProcessQuota,
            _ => return Err(WireError::Status(v)),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "accepted",
            Status::PermissionDenied => "permission denied",
            Status::UnknownProtocol => "unknown protocol",
            Status::VersionMismatch => "protocol version mismatch",
            Status::TooManyClients => "too many clients",
            Status::Resources => "server out of resources",
            Status::BadRequest => "malformed connection request",
            Status::TransportMismatch => "transport mismatch",
            Status::UserQuota => "too many connections from this user",
            Status::ProcessQuota => "too many connections from this process",
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Client → server, first message on the socket.
///
/// ```text
/// 0  u32 magic "RLq1"     4  u16 version      6  u16 transport
/// 8  u32 max_message      12 u16 protocol_len 14 u16 reserved (0)
/// 16 [u8; 64] protocol id, zero padded                    = 80 bytes
/// 80 FdTerms: the fds the client accepts                  = 88 bytes
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Protocol version the client speaks.
    pub version: u16,
    /// Transport the client wants.
    pub transport: Transport,
    /// Largest message payload the client wants to send or receive (0: no
    /// wish; the server's enforced minimum applies).
    pub max_message: u32,
    /// Application protocol id; both sides must use the same.
    pub protocol: String,
    /// The fds the client accepts in responses and events.
    pub fds: FdTerms,
}

impl ConnectRequest {
    /// Encodes the request.
    ///
    /// # Panics
    ///
    /// If the protocol id is empty or longer than [`MAX_PROTOCOL_ID`].
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let id = self.protocol.as_bytes();
        assert!(
            !id.is_empty() && id.len() <= MAX_PROTOCOL_ID,
            "protocol id length"
        );
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&(self.transport as u16).to_le_bytes());
        b[8..12].copy_from_slice(&self.max_message.to_le_bytes());
        b[12..14].copy_from_slice(&(id.len() as u16).to_le_bytes());
        b[16..16 + id.len()].copy_from_slice(id);
        b[REQUEST_HEAD_LEN..].copy_from_slice(&self.fds.encode());
        b
    }

    /// Checks a request's head (its first [`REQUEST_HEAD_LEN`] bytes) as
    /// far as a server must before reading on: the magic, then the
    /// version (a peer of another version need not send as much as this
    /// one does).
    ///
    /// # Errors
    ///
    /// [`WireError::Length`], [`Magic`](WireError::Magic),
    /// [`Version`](WireError::Version).
    pub fn check_head(b: &[u8]) -> Result<(), WireError> {
        if b.len() < REQUEST_HEAD_LEN {
            return Err(WireError::Length);
        }
        if u32_at(b, 0) != REQUEST_MAGIC {
            return Err(WireError::Magic);
        }
        let version = u16_at(b, 4);
        if version != PROTOCOL_VERSION {
            return Err(WireError::Version(version));
        }
        Ok(())
    }

    /// Decodes and checks a request. A version other than
    /// [`PROTOCOL_VERSION`] is reported as [`WireError::Version`] before
    /// any later field is looked at, so that a future client gets a clear
    /// answer.
    ///
    /// # Errors
    ///
    /// A [`WireError`] naming the first bad field.
    pub fn decode(b: &[u8]) -> Result<ConnectRequest, WireError> {
        if b.len() != REQUEST_LEN {
            // The head first: another version is named as such.
            ConnectRequest::check_head(b)?;
            return Err(WireError::Length);
        }
        ConnectRequest::check_head(b)?;
        let version = u16_at(b, 4);
        let transport = Transport::from_u16(u16_at(b, 6))?;
        let max_message = u32_at(b, 8);
        let len = u16_at(b, 12) as usize;
        if u16_at(b, 14) != 0 {
            return Err(WireError::Reserved);
        }
        if len == 0
            || len > MAX_PROTOCOL_ID
            || b[16 + len..REQUEST_HEAD_LEN].iter().any(|&c| c != 0)
        {
            return Err(WireError::ProtocolId);
        }
        let protocol = std::str::from_utf8(&b[16..16 + len])
            .map_err(|_| WireError::ProtocolId)?
            .to_owned();
        let fds = FdTerms::decode(&b[REQUEST_HEAD_LEN..])?;
        Ok(ConnectRequest {
            version,
            transport,
            max_message,
            protocol,
            fds,
        })
    }
}

/// What one side accepts of fds in the messages it receives (`docs/PROTOCOL.md`
/// §3.1): sent by the client after its request's head, by the server at
/// the start of its accepting answer's trailer. A sender never sends a
/// message with more fds than its peer accepts, nor more fds in flight on
/// one channel, nor a directory or `O_PATH` fd to a peer that refuses
/// them; a receiver treats a peer that does as broken.
///
/// ```text
/// 0 u16 fds per message (0: none; at most 253)
/// 2 u16 options: bit 0, directories and O_PATH fds accepted; others 0
/// 4 u32 fds in flight per channel (0 with none per message; otherwise
///       at least the per-message count)                   = 8 bytes
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FdTerms {
    /// Most fds one message may carry (0: none at all).
    pub per_message: u16,
    /// Most fds sent on one channel and not yet taken with their message.
    pub in_flight: u32,
    /// Whether directory and `O_PATH` fds are accepted (they can reach
    /// outside a chroot; Legato refuses them for that reason).
    pub directories: bool,
}

impl FdTerms {
    /// No fds at all (the default).
    pub const NONE: FdTerms = FdTerms {
        per_message: 0,
        in_flight: 0,
        directories: false,
    };

    /// Up to `n` fds per message (capped at [`MAX_MSG_FDS`]; 0: none),
    /// with room for four messages' worth in flight on each channel (at
    /// least 16), directories and `O_PATH` fds refused.
    pub fn per_message(n: u16) -> FdTerms {
        let n = n.min(MAX_MSG_FDS);
        if n == 0 {
            return FdTerms::NONE;
        }
        FdTerms {
            per_message: n,
            in_flight: (u32::from(n) * 4).max(16),
            directories: false,
        }
    }

    /// The same, with at most `n` fds in flight on each channel (raised to
    /// the per-message count if below it).
    #[must_use]
    pub fn in_flight(mut self, n: u32) -> FdTerms {
        if self.accepts_any() {
            self.in_flight = n.max(u32::from(self.per_message));
        }
        self
    }

    /// The same, accepting directories and `O_PATH` fds too (`yes`): only
    /// for a peer trusted not to use them to reach outside a chroot.
    #[must_use]
    pub fn directories(mut self, yes: bool) -> FdTerms {
        self.directories = yes && self.accepts_any();
        self
    }

    /// Checks terms set by hand (the fields are public) before they are
    /// announced: as [`decode`](Self::decode) would.
    ///
    /// # Errors
    ///
    /// `InvalidInput`, saying what is wrong.
    pub fn check(&self) -> std::io::Result<()> {
        FdTerms::decode(&self.encode()).map(drop).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "fd terms: at most 253 per message, and in flight at least the per-message \
                 count (both 0 for none)",
            )
        })
    }

    /// Whether any fd is accepted.
    pub fn accepts_any(&self) -> bool {
        self.per_message > 0
    }

    /// Encodes the terms.
    pub fn encode(&self) -> [u8; FD_TERMS_LEN] {
        let mut b = [0u8; FD_TERMS_LEN];
        b[0..2].copy_from_slice(&self.per_message.to_le_bytes());
        b[2..4].copy_from_slice(&u16::from(self.directories).to_le_bytes());
        b[4..8].copy_from_slice(&self.in_flight.to_le_bytes());
        b
    }

    /// Decodes and checks terms: a per-message count above
    /// [`MAX_MSG_FDS`], an unknown option, an in-flight limit below the
    /// per-message count (or any without one) is malformed.
    ///
    /// # Errors
    ///
    /// [`WireError::Length`], [`WireError::Reserved`].
    pub fn decode(b: &[u8]) -> Result<FdTerms, WireError> {
        if b.len() != FD_TERMS_LEN {
            return Err(WireError::Length);
        }
        let per_message = u16_at(b, 0);
        let options = u16_at(b, 2);
        let in_flight = u32_at(b, 4);
        let valid = per_message <= MAX_MSG_FDS
            && options & !1 == 0
            && if per_message == 0 {
                in_flight == 0 && options == 0
            } else {
                in_flight >= u32::from(per_message)
            };
        if !valid {
            return Err(WireError::Reserved);
        }
        Ok(FdTerms {
            per_message,
            in_flight,
            directories: options & 1 != 0,
        })
    }
}

/// Server → client, the answer to a [`ConnectRequest`]. On
/// [`Status::Ok`] with the shared-memory transport, [`SHM_FDS`] fds travel
/// with it (`SCM_RIGHTS`).
///
/// ```text
/// 0  u32 magic "RLr1"   4  u16 version   6  u16 status
/// 8  u64 connection id  16 u32 max_message  20 u16 fd count
/// 22 u16 ring path length
/// 24 u64 request ring capacity  32 u64 response ring capacity
/// 40 u64 event ring capacity                           = 48 bytes
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectResponse {
    /// Accepted, or why not.
    pub status: Status,
    /// Server-assigned connection id (0 on rejection).
    pub connection_id: u64,
    /// Negotiated largest message payload, both directions.
    pub max_message: u32,
    /// Number of fds attached.
    pub fd_count: u16,
    /// Length of the ring path prefix that follows the response (named
    /// rings; 0 otherwise), at most [`MAX_RING_PATH`].
    pub path_len: u16,
    /// Data capacity of the request ring.
    pub request_capacity: u64,
    /// Data capacity of the response ring.
    pub response_capacity: u64,
    /// Data capacity of the event ring.
    pub event_capacity: u64,
}

impl ConnectResponse {
    /// A rejection with no fds.
    pub fn reject(status: Status) -> ConnectResponse {
        ConnectResponse {
            status,
            connection_id: 0,
            max_message: 0,
            fd_count: 0,
            path_len: 0,
            request_capacity: 0,
            response_capacity: 0,
            event_capacity: 0,
        }
    }

    /// Encodes the response.
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[0..4].copy_from_slice(&RESPONSE_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(self.status as u16).to_le_bytes());
        b[8..16].copy_from_slice(&self.connection_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_message.to_le_bytes());
        b[20..22].copy_from_slice(&self.fd_count.to_le_bytes());
        b[22..24].copy_from_slice(&self.path_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.request_capacity.to_le_bytes());
        b[32..40].copy_from_slice(&self.response_capacity.to_le_bytes());
        b[40..48].copy_from_slice(&self.event_capacity.to_le_bytes());
        b
    }

    /// Decodes and checks a response.
    ///
    /// # Errors
    ///
    /// A [`WireError`] naming the first bad field.
    pub fn decode(b: &[u8]) -> Result<ConnectResponse, WireError> {
        if b.len() != RESPONSE_LEN {
            return Err(WireError::Length);
        }
        if u32_at(b, 0) != RESPONSE_MAGIC {
            return Err(WireError::Magic);
        }
        let version = u16_at(b, 4);
        if version != PROTOCOL_VERSION {
            return Err(WireError::Version(version));
        }
        let path_len = u16_at(b, 22);
        if path_len as usize > MAX_RING_PATH {
            return Err(WireError::PathLength(path_len));
        }
        Ok(ConnectResponse {
            status: Status::from_u16(u16_at(b, 6))?,
            connection_id: u64_at(b, 8),
            max_message: u32_at(b, 16),
            fd_count: u16_at(b, 20),
            path_len: u16_at(b, 22),
            request_capacity: u64_at(b, 24),
            response_capacity: u64_at(b, 32),
            event_capacity: u64_at(b, 40),
        })
    }
}

/// Client → server, after mapping the rings: the connection may start.
///
/// ```text
/// 0 u32 magic "RLok"   4 u32 reserved (0)              = 8 bytes
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm;

impl Confirm {
    /// Encodes the confirmation.
    pub fn encode(&self) -> [u8; CONFIRM_LEN] {
        let mut b = [0u8; CONFIRM_LEN];
        b[0..4].copy_from_slice(&CONFIRM_MAGIC.to_le_bytes());
        b
    }

    /// Checks a confirmation.
    ///
    /// # Errors
    ///
    /// [`WireError::Length`], [`Magic`](WireError::Magic) or
    /// [`Reserved`](WireError::Reserved).
    pub fn decode(b: &[u8]) -> Result<Confirm, WireError> {
        if b.len() != CONFIRM_LEN {
            return Err(WireError::Length);
        }
        if u32_at(b, 0) != CONFIRM_MAGIC {
            return Err(WireError::Magic);
        }
        if u32_at(b, 4) != 0 {
            return Err(WireError::Reserved);
        }
        Ok(Confirm)
    }
}

/// The header at the start of every message record in a ring.
///
/// ```text
/// 0 i32 id   4 u32 size   8 i32 error   12 u32 flags   16 u64 seq
/// ```
///
/// `id` is the application's message id; `size` the payload bytes that
/// follow; `error` is 0 except in responses, where the server may put an
/// error code; `flags` holds at most one flag in its low half
/// ([`FLAG_ONE_WAY`] on a one-way request, ...) and in its high half the
/// number of fds the message carries ([`MsgHeader::fds`]); `seq` numbers requests (from 1, per connection; one-way
/// requests carry 0 and take no number) and a response carries the `seq`
/// of its request; events carry 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MsgHeader {
    /// Application message id.
    pub id: i32,
    /// Payload length in bytes.
    pub size: u32,
    /// Error code (responses only; 0 otherwise).
    pub error: i32,
    /// Flags in the low half ([`FLAG_ONE_WAY`] on a one-way request, ...;
    /// 0 otherwise), the count of fds carried in the high half.
    pub flags: u32,
    /// Sequence number tying a response to its request.
    pub seq: u64,
}

impl MsgHeader {
    /// The number of fds the message carries (the high half of `flags`).
    #[inline]
    pub fn fds(&self) -> u16 {
        (self.flags >> 16) as u16
    }

    /// The header with its fd count set to `n`.
    #[inline]
    pub fn with_fds(mut self, n: u16) -> MsgHeader {
        self.flags = (self.flags & 0xffff) | (u32::from(n) << 16);
        self
    }

    /// The flags alone, without the fd count.
    #[inline]
    pub fn kinds(&self) -> u32 {
        self.flags & 0xffff
    }

    /// Whether this is a one-way request ([`FLAG_ONE_WAY`]).
    #[inline]
    pub fn is_one_way(&self) -> bool {
        self.flags & FLAG_ONE_WAY != 0
    }

    /// Whether this is a dropped-events notice ([`FLAG_LAGGED`]).
    #[inline]
    pub fn is_lagged(&self) -> bool {
        self.flags & FLAG_LAGGED != 0
    }

    /// Whether this is a call from the server ([`FLAG_CALL`]).
    #[inline]
    pub fn is_call(&self) -> bool {
        self.flags & FLAG_CALL != 0
    }

    /// Whether this is a reply to a call ([`FLAG_REPLY`]).
    #[inline]
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    /// Writes the header into the first [`MSG_HEADER_LEN`] bytes of `out`.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`MSG_HEADER_LEN`].
    #[inline]
    pub fn encode_into(&self, out: &mut [u8]) {
        use std::sync::atomic::{compiler_fence, Ordering};
        let b = &mut out[..MSG_HEADER_LEN];
        // Field by field, each read as wide as it was written. Without
        // the compiler fences (no instruction), LLVM read id, size, error
        // and flags as one 16-byte load; a header built just before with
        // 4-byte stores cannot be forwarded to it, so the send waited for
        // every earlier store to leave the CPU, the message just written
        // to the ring included (`docs/RING.md`, Measurements). The fences
        // keep the loads apart in practice (current LLVM does not merge
        // memory accesses across one); nothing in the language promises
        // it, and only `ipc-bench` would show it coming back.
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        compiler_fence(Ordering::SeqCst);
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        compiler_fence(Ordering::SeqCst);
        b[8..12].copy_from_slice(&self.error.to_le_bytes());
        compiler_fence(Ordering::SeqCst);
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        compiler_fence(Ordering::SeqCst);
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// Writes a whole record into `out`: the header, then the payload
    /// made of `parts`, one after the other (a ring grant of exactly
    /// [`MSG_HEADER_LEN`] plus the parts' total length).
    ///
    /// # Panics
    ///
    /// If `out` is shorter than that.
    #[inline]
    pub fn encode_record(&self, out: &mut [u8], parts: &[std::io::IoSlice<'_>]) {
        self.encode_into(out);
        let mut at = MSG_HEADER_LEN;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
    }

    /// Reads the header of a whole record (`header + payload`), checking
    /// that `size` matches the payload actually present.
    ///
    /// # Errors
    ///
    /// [`WireError::Length`] if the record is shorter than a header,
    /// [`Size`](WireError::Size), [`Reserved`](WireError::Reserved) (a
    /// flag this version does not define),
    /// [`OneWaySeq`](WireError::OneWaySeq).
    #[inline]
    pub fn decode(record: &[u8]) -> Result<MsgHeader, WireError> {
        if record.len() < MSG_HEADER_LEN {
            return Err(WireError::Length);
        }
        // Each field is copied out once; the record may sit in memory a
        // peer can still write.
        let h = MsgHeader {
            id: i32::from_le_bytes(record[0..4].try_into().expect("4 bytes")),
            size: u32_at(record, 4),
            error: i32::from_le_bytes(record[8..12].try_into().expect("4 bytes")),
            flags: u32_at(record, 12),
            seq: u64_at(record, 16),
        };
        if h.kinds() & !KNOWN_FLAGS != 0 || h.fds() > MAX_MSG_FDS {
            return Err(WireError::Reserved);
        }
        if h.is_one_way() && h.seq != 0 {
            return Err(WireError::OneWaySeq);
        }
        if (h.is_call() || h.is_reply()) && h.seq == 0 {
            return Err(WireError::CallSeq);
        }
        if h.size as usize != record.len() - MSG_HEADER_LEN {
            return Err(WireError::Size);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ConnectRequest {
        ConnectRequest {
            version: PROTOCOL_VERSION,
            transport: Transport::Shm,
            max_message: 4096,
            protocol: "echo".into(),
            fds: FdTerms {
                per_message: 4,
                in_flight: 16,
                directories: false,
            },
        }
    }

    #[test]
    fn request_round_trip_and_layout() {
        let b = req().encode();
        assert_eq!(&b[0..4], b"RLq1");
        assert_eq!(&b[16..20], b"echo");
        assert_eq!(ConnectRequest::decode(&b).unwrap(), req());
    }

    #[test]
    fn request_rejects_each_bad_field() {
        let good = req().encode();
        let bad = |f: &dyn Fn(&mut [u8; REQUEST_LEN])| {
            let mut b = good;
            f(&mut b);
            ConnectRequest::decode(&b).unwrap_err()
        };
        assert_eq!(ConnectRequest::decode(&good[..79]), Err(WireError::Length));
        assert_eq!(
            ConnectRequest::decode(&[good.as_slice(), &[0]].concat()),
            Err(WireError::Length)
        );
        assert_eq!(bad(&|b| b[0] = b'X'), WireError::Magic);
        assert_eq!(bad(&|b| b[4] = 1), WireError::Version(1));
        assert_eq!(bad(&|b| b[4] = 2), WireError::Version(2));
        assert_eq!(bad(&|b| b[4] = 3), WireError::Version(3));
        assert_eq!(bad(&|b| b[4] = 4), WireError::Version(4));
        assert_eq!(bad(&|b| b[4] = 6), WireError::Version(6));
        // A peer of another version is named from the head alone.
        let mut v3 = good;
        v3[4] = 3;
        assert_eq!(
            ConnectRequest::decode(&v3[..REQUEST_HEAD_LEN]),
            Err(WireError::Version(3))
        );
        assert_eq!(bad(&|b| b[81] = 1), WireError::Reserved); // 260 per message
        assert_eq!(bad(&|b| b[82] = 2), WireError::Reserved); // unknown option
        assert_eq!(bad(&|b| b[84] = 3), WireError::Reserved); // in flight < per message
        assert_eq!(bad(&|b| b[6] = 9), WireError::Transport(9));
        assert_eq!(bad(&|b| b[14] = 1), WireError::Reserved);
        assert_eq!(bad(&|b| b[12] = 0), WireError::ProtocolId);
        assert_eq!(bad(&|b| b[12] = 65), WireError::ProtocolId);
        assert_eq!(bad(&|b| b[40] = 1), WireError::ProtocolId);
        assert_eq!(bad(&|b| b[16] = 0xff), WireError::ProtocolId);
    }

    #[test]
    fn response_round_trip() {
        let r = ConnectResponse {
            status: Status::Ok,
            connection_id: 7,
            max_message: 1 << 20,
            fd_count: SHM_FDS as u16,
            path_len: 0,
            request_capacity: 1 << 22,
            response_capacity: 1 << 22,
            event_capacity: 1 << 22,
        };
        assert_eq!(ConnectResponse::decode(&r.encode()).unwrap(), r);
        let rej = ConnectResponse::reject(Status::TooManyClients);
        assert_eq!(ConnectResponse::decode(&rej.encode()).unwrap(), rej);
        let mut b = r.encode();
        b[6] = 99;
        assert_eq!(ConnectResponse::decode(&b), Err(WireError::Status(99)));
    }

    #[test]
    fn fd_terms_round_trip_and_refuse_nonsense() {
        for t in [
            FdTerms::NONE,
            FdTerms {
                per_message: 1,
                in_flight: 1,
                directories: true,
            },
            FdTerms {
                per_message: MAX_MSG_FDS,
                in_flight: u32::MAX,
                directories: false,
            },
        ] {
            assert_eq!(FdTerms::decode(&t.encode()), Ok(t));
        }
        let enc = |per: u16, opt: u16, fl: u32| {
            let mut b = [0u8; FD_TERMS_LEN];
            b[0..2].copy_from_slice(&per.to_le_bytes());
            b[2..4].copy_from_slice(&opt.to_le_bytes());
            b[4..8].copy_from_slice(&fl.to_le_bytes());
            FdTerms::decode(&b)
        };
        assert_eq!(enc(254, 0, 300), Err(WireError::Reserved));
        assert_eq!(enc(0, 0, 5), Err(WireError::Reserved));
        assert_eq!(enc(0, 1, 0), Err(WireError::Reserved));
        assert_eq!(enc(4, 0, 3), Err(WireError::Reserved));
        assert_eq!(enc(4, 4, 8), Err(WireError::Reserved));
        assert_eq!(FdTerms::decode(&[0; 7]), Err(WireError::Length));
    }

    #[test]
    fn a_header_counts_fds_in_the_high_half_of_its_flags() {
        let h = MsgHeader {
            id: 1,
            size: 0,
            error: 0,
            flags: FLAG_ONE_WAY,
            seq: 0,
        }
        .with_fds(3);
        assert_eq!((h.fds(), h.kinds()), (3, FLAG_ONE_WAY));
        let mut rec = [0u8; MSG_HEADER_LEN];
        h.encode_into(&mut rec);
        assert_eq!(MsgHeader::decode(&rec), Ok(h));
        h.with_fds(MAX_MSG_FDS + 1).encode_into(&mut rec);
        assert_eq!(MsgHeader::decode(&rec), Err(WireError::Reserved));
    }

    #[test]
    fn confirm_round_trip() {
        assert_eq!(Confirm::decode(&Confirm.encode()), Ok(Confirm));
        assert_eq!(Confirm::decode(&[0; 8]), Err(WireError::Magic));
    }

    #[test]
    fn header_checks_size_against_record() {
        let h = MsgHeader {
            id: -3,
            size: 5,
            error: 0,
            flags: 0,
            seq: 42,
        };
        let mut rec = vec![0u8; MSG_HEADER_LEN + 5];
        h.encode_into(&mut rec);
        assert_eq!(MsgHeader::decode(&rec), Ok(h));
        assert_eq!(
            MsgHeader::decode(&rec[..MSG_HEADER_LEN + 4]),
            Err(WireError::Size)
        );
        assert_eq!(MsgHeader::decode(&rec[..10]), Err(WireError::Length));
        rec[13] = 1;
        assert_eq!(MsgHeader::decode(&rec), Err(WireError::Reserved));
    }

    #[test]
    fn one_way_requests_carry_the_flag_and_no_sequence_number() {
        let one_way = MsgHeader {
            id: 7,
            size: 0,
            error: 0,
            flags: FLAG_ONE_WAY,
            seq: 0,
        };
        let mut rec = vec![0u8; MSG_HEADER_LEN];
        one_way.encode_into(&mut rec);
        assert_eq!(MsgHeader::decode(&rec), Ok(one_way));
        assert!(MsgHeader::decode(&rec).is_ok_and(|h| h.is_one_way()));
        // With a number: a lie.
        MsgHeader { seq: 9, ..one_way }.encode_into(&mut rec);
        assert_eq!(MsgHeader::decode(&rec), Err(WireError::OneWaySeq));
        // Any other flag, or a count of fds above the most a message
        // carries: not this version's.
        for bit in (4..16).chain(24..32) {
            MsgHeader {
                flags: 1 << bit,
                ..one_way
            }
            .encode_into(&mut rec);
            assert_eq!(
                MsgHeader::decode(&rec),
                Err(WireError::Reserved),
                "bit {bit}"
            );
        }
    }
}
