//! A client written from `docs/PROTOCOL.md` alone, for the attack and
//! crash tests: it runs the handshake by hand (whole, split into single
//! bytes, truncated, or with anything else on the wire), and once
//! connected holds the connection's channels directly: the three rings
//! (memfd or named rings, §2.2; wake-ups as bytes on the stream socket,
//! §4) with a second, raw mapping of each ([`RawRing`]) through which it
//! corrupts what the server reads, or the two `SOCK_SEQPACKET` sockets
//! of the socket transport, on which it sends whatever datagrams it
//! likes.
//!
//! It uses the ring crate and the wire types only as a hostile client in
//! another language would use its own code for the same bytes; it never
//! goes through `ringlink-ipcc`.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlink_channel::socket::{self as seqpacket, RecvError, SendError, SockRx, SockTx};
use ringlink_channel::wait;
use ringlink_common::fdpass::recv_fds;
use ringlink_common::wire::{
    Confirm, ConnectRequest, ConnectResponse, FdTerms, MsgHeader, Status, Transport, FD_TERMS_LEN,
    MSG_HEADER_LEN, PROTOCOL_VERSION, REQUEST_LEN, RESPONSE_LEN, SHM_FDS, SOCKET_FDS,
};
use ringlink_common::ServiceAddr;
use ringlink_ringbuf::{Consumer, PopError, Producer, PushError, Ring, Wake};

use crate::raw::RawRing;

/// Deadline of every read from the server: only turns a hang into a
/// failure.
pub const HANG: Duration = Duration::from_secs(60);

/// A well-formed connection request of the test protocol
/// ([`crate::ipc::PROTOCOL`]) over `transport`, wishing for `max_message`.
pub fn request(transport: Transport, max_message: u32) -> [u8; REQUEST_LEN] {
    ConnectRequest {
        version: PROTOCOL_VERSION,
        transport,
        max_message,
        protocol: crate::ipc::PROTOCOL.into(),
        fds: FdTerms::NONE,
    }
    .encode()
}

/// A blocking stream socket connected to `addr`, reads and writes
/// bounded by [`HANG`].
///
/// # Panics
///
/// If the connection fails.
pub fn dial(addr: &ServiceAddr) -> UnixStream {
    let sock = addr
        .socket_addr()
        .and_then(|a| UnixStream::connect_addr(&a))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    sock.set_read_timeout(Some(HANG)).expect("read timeout");
    sock.set_write_timeout(Some(HANG)).expect("write timeout");
    sock
}

/// Writes `bytes` in pieces of `chunk` bytes, pausing `pause` after each,
/// so that the server sees every piece in a read of its own.
///
/// # Errors
///
/// The first write error (the server may close the socket half-way).
pub fn write_split(
    mut sock: &UnixStream,
    bytes: &[u8],
    chunk: usize,
    pause: Duration,
) -> io::Result<()> {
    for piece in bytes.chunks(chunk.max(1)) {
        sock.write_all(piece)?;
        std::thread::sleep(pause);
    }
    Ok(())
}

/// What the server answered a handshake with.
#[derive(Debug)]
pub enum Answer {
    /// It closed the socket without a complete response (`got` bytes
    /// came first).
    Closed {
        /// Bytes received before the end of the stream.
        got: usize,
    },
    /// A complete response and the fds that came with it.
    Response {
        /// The decoded response.
        response: ConnectResponse,
        /// The fds attached to it.
        fds: Vec<OwnedFd>,
    },
}

impl Answer {
    /// The response's status, `None` if the socket was closed.
    pub fn status(&self) -> Option<Status> {
        match self {
            Answer::Closed { .. } => None,
            Answer::Response { response, .. } => Some(response.status),
        }
    }
}

/// Reads the server's answer: exactly [`RESPONSE_LEN`] bytes (with their
/// fds), and for an acceptance the server's fd terms after them, or the
/// end of the stream.
///
/// # Errors
///
/// A read error (`WouldBlock`/`TimedOut` after [`HANG`]), or
/// `InvalidData` if the bytes do not decode as a response.
pub fn read_answer(sock: &UnixStream) -> io::Result<Answer> {
    let mut buf = [0u8; RESPONSE_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < RESPONSE_LEN {
        let (n, more) = recv_fds(sock, &mut buf[got..])?;
        fds.extend(more);
        if n == 0 {
            return Ok(Answer::Closed { got });
        }
        got += n;
    }
    let response =
        ConnectResponse::decode(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if response.status == Status::Ok {
        let mut terms = [0u8; FD_TERMS_LEN];
        let mut sock = sock;
        sock.read_exact(&mut terms)?;
        FdTerms::decode(&terms).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(Answer::Response { response, fds })
}

/// Reads until the server closes the socket; returns how many bytes came
/// first (fds are received and closed).
///
/// # Errors
///
/// A read error, `TimedOut` if the socket is still open after [`HANG`].
pub fn read_to_end(sock: &UnixStream) -> io::Result<usize> {
    let mut total = 0;
    let mut buf = [0u8; 256];
    loop {
        match recv_fds(sock, &mut buf) {
            Ok((0, _)) => return Ok(total),
            Ok((n, _)) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "socket still open"))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// The shared-memory channels of a raw connection: the three rings with
/// the client's roles claimed, and a raw mapping of each.
#[derive(Debug)]
pub struct ShmChannels {
    /// Request, response and event rings.
    pub rings: [Ring; 3],
    /// A second mapping of each, for writing anything anywhere.
    pub raw: [RawRing; 3],
    /// The request ring's producer role.
    pub request: Producer,
    /// The response ring's consumer role.
    pub response: Consumer,
    /// The event ring's consumer role.
    pub event: Consumer,
}

/// The socket-transport channels of a raw connection.
#[derive(Debug)]
pub struct SockChannels {
    /// Requests out (and raw datagrams).
    pub tx: SockTx,
    /// Responses in.
    pub rx: SockRx,
    /// Events in.
    pub ev: SockRx,
}

/// A connection's message channels, as the raw client holds them.
#[derive(Debug)]
pub enum Channels {
    /// Rings.
    Shm(Box<ShmChannels>),
    /// Sockets.
    Sock(Box<SockChannels>),
}

/// A connection made by hand. Dropping it closes everything, as a client
/// that dies does.
#[derive(Debug)]
pub struct RawClient {
    /// The handshake socket, kept open as the connection's liveness; the
    /// rings' wake-ups travel on it.
    pub sock: Arc<UnixStream>,
    /// The connection id the server gave.
    pub id: u64,
    /// The negotiated largest payload.
    pub max_message: usize,
    /// The message channels.
    pub ch: Channels,
    next_seq: u64,
}

/// Why a raw receive gave nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum RawRecvError {
    /// Nothing came in time.
    TimedOut,
    /// The server closed the channel.
    Closed,
    /// Anything else, described.
    Other(String),
}

impl RawClient {
    /// Connects to `addr` over `transport`: request, response, roles,
    /// confirmation, all by hand.
    ///
    /// # Panics
    ///
    /// If any step fails or the server refuses.
    pub fn connect(addr: &ServiceAddr, transport: Transport) -> RawClient {
        RawClient::connect_with(addr, transport, 0)
    }

    /// [`connect`](Self::connect), wishing for messages of `max_message`
    /// bytes.
    ///
    /// # Panics
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_with(addr: &ServiceAddr, transport: Transport, max_message: u32) -> RawClient {
        let sock = dial(addr);
        (&sock)
            .write_all(&request(transport, max_message))
            .expect("send the request");
        let client = RawClient::accept_answer(sock, transport);
        (&*client.sock)
            .write_all(&Confirm.encode())
            .expect("send the confirmation");
        client
    }

    /// [`connect`](Self::connect) over an already-connected socket (one
    /// end of a socketpair whose other end the server adopted).
    ///
    /// # Panics
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_stream(sock: UnixStream, transport: Transport) -> RawClient {
        sock.set_read_timeout(Some(HANG)).expect("read timeout");
        sock.set_write_timeout(Some(HANG)).expect("write timeout");
        (&sock)
            .write_all(&request(transport, 0))
            .expect("send the request");
        let client = RawClient::accept_answer(sock, transport);
        (&*client.sock)
            .write_all(&Confirm.encode())
            .expect("send the confirmation");
        client
    }

    /// Reads the server's answer on `sock` (the request was sent) and
    /// takes the connection's channels, without confirming.
    ///
    /// # Panics
    ///
    /// If the answer is not an acceptance with the documented fds.
    pub fn accept_answer(sock: UnixStream, transport: Transport) -> RawClient {
        let Answer::Response { response, fds } = read_answer(&sock).expect("read the response")
        else {
            panic!("the server closed the socket instead of answering");
        };
        assert_eq!(response.status, Status::Ok, "handshake refused");
        RawClient::from_response(sock, transport, &response, fds)
            .unwrap_or_else(|e| panic!("taking the connection's channels: {e}"))
    }

    /// Takes the channels of an accepted `response` (what follows it on
    /// the stream is read here: the socket transport's level byte, or
    /// the named rings' path prefix).
    ///
    /// # Errors
    ///
    /// What does not match the protocol.
    pub fn from_response(
        sock: UnixStream,
        transport: Transport,
        response: &ConnectResponse,
        fds: Vec<OwnedFd>,
    ) -> Result<RawClient, String> {
        let max_message = response.max_message as usize;
        let sock = Arc::new(sock);
        let ch = match transport {
            Transport::Socket => {
                if fds.len() != SOCKET_FDS {
                    return Err(format!("{} fds with a socket response", fds.len()));
                }
                let mut level = [0u8; 1];
                (&*sock)
                    .read_exact(&mut level)
                    .map_err(|e| format!("level byte: {e}"))?;
                let mut fds = fds.into_iter();
                let (rr, ev) = (fds.next().expect("2 fds"), fds.next().expect("2 fds"));
                for fd in [&rr, &ev] {
                    seqpacket::check(fd.as_fd()).map_err(|e| format!("socket: {e}"))?;
                }
                let dup = rr.try_clone().map_err(|e| format!("dup: {e}"))?;
                Channels::Sock(Box::new(SockChannels {
                    tx: SockTx::new(dup).map_err(|e| format!("SockTx: {e}"))?,
                    rx: SockRx::new(rr, max_message),
                    ev: SockRx::new(ev, max_message),
                }))
            }
            _ => {
                // Named rings: no fds, the path prefix follows.
                let named = response.path_len != 0;
                let expected = if named { 0 } else { SHM_FDS };
                if fds.len() != expected || response.fd_count as usize != expected {
                    return Err(format!(
                        "{} fds, path length {}",
                        fds.len(),
                        response.path_len
                    ));
                }
                let mut prefix = vec![0u8; response.path_len as usize];
                (&*sock)
                    .read_exact(&mut prefix)
                    .map_err(|e| format!("ring path prefix: {e}"))?;
                let mut fds = fds.into_iter();
                let mut ring = |name: &str| -> Result<Ring, String> {
                    let wake = Wake::Socket(sock.clone());
                    if named {
                        use std::os::unix::ffi::OsStrExt;
                        let mut p = prefix.clone();
                        p.extend_from_slice(name.as_bytes());
                        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&p));
                        let ring = Ring::open_path_waking(&path, wake)
                            .map_err(|e| format!("open {}: {e}", path.display()))?;
                        let _ = std::fs::remove_file(&path);
                        Ok(ring)
                    } else {
                        let memory = fds.next().expect("3 fds");
                        Ring::from_memfd(memory, wake).map_err(|e| format!("Ring::from_memfd: {e}"))
                    }
                };
                let rings = [ring("request")?, ring("response")?, ring("event")?];
                let raw = |r: &Ring| RawRing::map(r).map_err(|e| format!("map: {e}"));
                let raw = [raw(&rings[0])?, raw(&rings[1])?, raw(&rings[2])?];
                let claim = |e| format!("claim: {e:?}");
                let request = rings[0].producer().map_err(claim)?;
                let response = rings[1].consumer().map_err(claim)?;
                let event = rings[2].consumer().map_err(claim)?;
                Channels::Shm(Box::new(ShmChannels {
                    rings,
                    raw,
                    request,
                    response,
                    event,
                }))
            }
        };
        Ok(RawClient {
            sock,
            id: response.connection_id,
            max_message,
            ch,
            next_seq: 1,
        })
    }

    /// The ring channels.
    ///
    /// # Panics
    ///
    /// On a socket-transport connection.
    pub fn shm(&mut self) -> &mut ShmChannels {
        match &mut self.ch {
            Channels::Shm(s) => s,
            Channels::Sock(_) => panic!("not a shared-memory connection"),
        }
    }

    /// Sends a request (the next sequence number), waiting up to [`HANG`]
    /// for room. Returns its sequence number.
    ///
    /// # Errors
    ///
    /// What the ring or socket said.
    pub fn send(&mut self, id: i32, payload: &[u8]) -> Result<u64, String> {
        let seq = self.next_seq;
        let header = MsgHeader {
            id,
            size: payload.len() as u32,
            error: 0,
            flags: 0,
            seq,
        };
        self.send_header(header, payload)?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Sends `payload` behind `header` as it is (its `size` is set to the
    /// payload's length), lies included, waiting up to [`HANG`] for room.
    ///
    /// # Errors
    ///
    /// What the ring or socket said.
    pub fn send_header(&mut self, header: MsgHeader, payload: &[u8]) -> Result<(), String> {
        let header = MsgHeader {
            size: payload.len() as u32,
            ..header
        };
        match &mut self.ch {
            Channels::Shm(s) => {
                let mut rec = vec![0u8; MSG_HEADER_LEN + payload.len()];
                header.encode_into(&mut rec);
                rec[MSG_HEADER_LEN..].copy_from_slice(payload);
                s.request
                    .push_timeout(&rec, HANG)
                    .map_err(|e: PushError| format!("push: {e}"))?;
            }
            Channels::Sock(s) => {
                let deadline = Instant::now() + HANG;
                loop {
                    match s.tx.try_send(&header, &[io::IoSlice::new(payload)], &[]) {
                        Ok(()) => break,
                        Err(SendError::WouldBlock) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(1))
                        }
                        Err(e) => return Err(format!("send: {e:?}")),
                    }
                }
                while !s.tx.flush().map_err(|e| format!("flush: {e:?}"))? {
                    if Instant::now() >= deadline {
                        return Err("flush: the server reads nothing".into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        Ok(())
    }

    /// Sends `payload` behind `header` as it is (its `size` set to the
    /// payload's length, its count of fds left as given, lies included)
    /// with `fds`: over shared memory on the stream socket first, attached
    /// to `tag` (the request channel's is `0x80`; none sent if `fds` is
    /// empty), then the record; over sockets attached to the one datagram
    /// (keep the payload small).
    ///
    /// # Errors
    ///
    /// What the socket or the ring said.
    pub fn send_with_fds(
        &mut self,
        header: MsgHeader,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        tag: u8,
    ) -> Result<(), String> {
        let header = MsgHeader {
            size: payload.len() as u32,
            ..header
        };
        let mut rec = vec![0u8; MSG_HEADER_LEN + payload.len()];
        header.encode_into(&mut rec);
        rec[MSG_HEADER_LEN..].copy_from_slice(payload);
        match &mut self.ch {
            Channels::Shm(s) => {
                if !fds.is_empty() {
                    ringlink_channel::fds::send_attached(self.sock.as_fd(), tag, fds)
                        .map_err(|e| format!("fds on the stream: {e:?}"))?;
                }
                s.request
                    .push_timeout(&rec, HANG)
                    .map_err(|e: PushError| format!("push: {e}"))?;
            }
            Channels::Sock(s) => {
                use std::os::fd::AsRawFd;
                let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
                let rights = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
                let cmsgs: &[nix::sys::socket::ControlMessage<'_>] =
                    if raw.is_empty() { &[] } else { &rights };
                nix::sys::socket::sendmsg::<()>(
                    s.tx.fd().as_raw_fd(),
                    &[io::IoSlice::new(&rec)],
                    cmsgs,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(|e| format!("sendmsg: {e}"))?;
            }
        }
        Ok(())
    }

    /// Sends `fds` on the stream socket alone, attached to one byte,
    /// `tag` (shared memory's way of carrying them; over sockets the
    /// server takes nothing there).
    ///
    /// # Errors
    ///
    /// What `sendmsg` said.
    pub fn send_stream_fds(&self, tag: u8, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        ringlink_channel::fds::send_attached(self.sock.as_fd(), tag, fds)
            .map_err(|e| format!("{e:?}"))
    }

    /// Sends a request if it goes at once (room in the ring, or the
    /// socket takes its first datagram): `Ok(None)` if not. Over sockets
    /// the rest of a long message is left to [`send`](Self::send)'s
    /// flushing; use small payloads here.
    ///
    /// # Errors
    ///
    /// What the ring or socket said, other than "full".
    pub fn try_send(&mut self, id: i32, payload: &[u8]) -> Result<Option<u64>, String> {
        let seq = self.next_seq;
        let header = MsgHeader {
            id,
            size: payload.len() as u32,
            error: 0,
            flags: 0,
            seq,
        };
        match &mut self.ch {
            Channels::Shm(s) => {
                let mut rec = vec![0u8; MSG_HEADER_LEN + payload.len()];
                header.encode_into(&mut rec);
                rec[MSG_HEADER_LEN..].copy_from_slice(payload);
                match s.request.try_push(&rec) {
                    Ok(()) => {}
                    Err(PushError::Full) => return Ok(None),
                    Err(e) => return Err(format!("push: {e}")),
                }
            }
            Channels::Sock(s) => match s.tx.try_send(&header, &[io::IoSlice::new(payload)], &[]) {
                Ok(()) => {}
                Err(SendError::WouldBlock) => return Ok(None),
                Err(e) => return Err(format!("send: {e:?}")),
            },
        }
        self.next_seq += 1;
        Ok(Some(seq))
    }

    /// The fds this client itself signals the server through (the
    /// request ring's data-ready eventfd, the response and event rings'
    /// space-ready eventfds, where the protocol passes eventfds): an
    /// attacker poisoning the fds the server writes leaves these alone,
    /// or it would block itself.
    pub fn fds_it_signals(&self) -> Vec<i32> {
        use std::os::fd::AsRawFd;
        match &self.ch {
            Channels::Shm(s) => [
                s.rings[0].data_ready_fd(),
                s.rings[1].space_ready_fd(),
                s.rings[2].space_ready_fd(),
            ]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd())
            .collect(),
            Channels::Sock(_) => Vec::new(),
        }
    }

    /// Raises every waiting flag a client may raise (shared memory): the
    /// consumer-waiting flags of the response and event rings and the
    /// producer-waiting flag of the request ring, written through the
    /// raw mappings, so that the server signals this client on its next
    /// publication or release. Nothing over sockets.
    pub fn raise_all_flags(&self) {
        use crate::raw::off;
        if let Channels::Shm(s) = &self.ch {
            s.raw[0].store32(off::PRODUCER_WAITING, 1);
            s.raw[1].store32(off::CONSUMER_WAITING, 1);
            s.raw[2].store32(off::CONSUMER_WAITING, 1);
        }
    }

    /// Receives the next response, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`RawRecvError`].
    pub fn recv(&mut self, timeout: Duration) -> Result<(MsgHeader, Vec<u8>), RawRecvError> {
        let deadline = Instant::now() + timeout;
        match &mut self.ch {
            Channels::Shm(s) => {
                let rec = s.response.peek_timeout(timeout).map_err(|e| match e {
                    PopError::TimedOut => RawRecvError::TimedOut,
                    PopError::Closed => RawRecvError::Closed,
                    e => RawRecvError::Other(format!("{e}")),
                })?;
                let h = MsgHeader::decode(&rec).map_err(|e| RawRecvError::Other(e.to_string()))?;
                let payload = rec[MSG_HEADER_LEN..].to_vec();
                rec.release();
                Ok((h, payload))
            }
            Channels::Sock(s) => loop {
                match s.rx.fill() {
                    Ok(()) => {
                        let (h, p) = s.rx.message().expect("filled");
                        let out = (h, p.to_vec());
                        s.rx.consume();
                        return Ok(out);
                    }
                    Err(RecvError::Empty) => {
                        if Instant::now() >= deadline {
                            return Err(RawRecvError::TimedOut);
                        }
                        let mut fds = [nix::poll::PollFd::new(s.rx.fd(), wait::READABLE)];
                        wait::poll_until(&mut fds, Some(deadline))
                            .map_err(|e| RawRecvError::Other(e.to_string()))?;
                    }
                    Err(RecvError::Closed) => return Err(RawRecvError::Closed),
                    Err(e) => return Err(RawRecvError::Other(format!("{e:?}"))),
                }
            },
        }
    }

    /// Sends `payload` as an echo request of the test protocol and checks
    /// the answer.
    ///
    /// # Errors
    ///
    /// What went wrong, described.
    pub fn echo(&mut self, payload: &[u8]) -> Result<(), String> {
        let seq = self.send(crate::ipc::id::ECHO, payload)?;
        let (h, p) = self.recv(HANG).map_err(|e| format!("echo {seq}: {e:?}"))?;
        if h.seq != seq || p != payload {
            return Err(format!(
                "echo {seq}: answer seq {} with {} bytes",
                h.seq,
                p.len()
            ));
        }
        Ok(())
    }

    /// Sends one raw datagram on the request socket (socket transport).
    ///
    /// # Panics
    ///
    /// On a shared-memory connection, or if the datagram is not sent
    /// whole.
    pub fn send_datagram(&self, bytes: &[u8]) {
        let Channels::Sock(s) = &self.ch else {
            panic!("not a socket-transport connection");
        };
        match crate::raw::send_datagram(s.tx.fd(), bytes, 0) {
            Ok(n) if n == bytes.len() => {}
            other => panic!("send a datagram of {} bytes: {other:?}", bytes.len()),
        }
    }

    /// Wakes the server as if a request had been published (a byte on
    /// the stream socket; nothing for sockets, where the server would
    /// take it for a violation).
    pub fn kick(&self) {
        if let Channels::Shm(_) = &self.ch {
            let _ = crate::raw::send_datagram(self.sock.as_fd(), &[1], libc::MSG_DONTWAIT);
        }
    }

    /// Whether the server has closed the connection: its end of the
    /// handshake socket is gone (read returns 0) or it reset it.
    pub fn server_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.sock.set_read_timeout(Some(left));
            match (&*self.sock).read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {} // wake-ups (rings), flow-control levels (sockets)
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A well-behaved client that does checked round trips
/// ([`crate::ipc::id::CHECKED`]: numbered requests whose every byte the
/// server verifies, echoed back and verified here) in a thread of its
/// own for as long as an attack lasts: the proof that the service goes
/// on serving others during the attack. Every call has the [`HANG`]
/// deadline; none may fail.
#[derive(Debug)]
pub struct Bystander {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<BystanderReport, String>>>,
}

/// What a [`Bystander`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct BystanderReport {
    /// Round trips completed and checked.
    pub requests: u64,
    /// The median round trip.
    pub median: Duration,
    /// The slowest one.
    pub max: Duration,
}

impl Bystander {
    /// Connects to `addr` (in this thread, so that a refusal fails the
    /// test at once) and starts the round trips.
    ///
    /// # Panics
    ///
    /// If it cannot connect.
    pub fn start(addr: &ServiceAddr) -> Bystander {
        Bystander::start_with(addr, HANG)
    }

    /// [`start`](Self::start), with every round trip bounded by `call`
    /// instead of [`HANG`]: a round trip that takes longer fails the
    /// bystander (the "within a second", as a deadline that
    /// catches a frozen server, not a speed).
    ///
    /// # Panics
    ///
    /// If it cannot connect.
    pub fn start_with(addr: &ServiceAddr, call: Duration) -> Bystander {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let mut c = crate::procs::connect(addr, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let (mut req, mut buf) = (Vec::new(), vec![0u8; c.max_message()]);
            let mut times = Vec::new();
            let seed = 0xB1_5747;
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                crate::ipc::checked_request(seed, n, 1024, &mut req);
                let t = Instant::now();
                let m = c
                    .send_recv(crate::ipc::id::CHECKED, &req, &mut buf, Some(call))
                    .map_err(|e| format!("bystander request {n}: {e}"))?;
                times.push(t.elapsed());
                if m.error != 0 || buf[..m.len] != req[..] {
                    return Err(format!(
                        "bystander request {n}: error {} or wrong echo",
                        m.error
                    ));
                }
                n += 1;
                d.store(n, Ordering::Relaxed);
            }
            times.sort_unstable();
            Ok(BystanderReport {
                requests: n,
                median: times.get(times.len() / 2).copied().unwrap_or_default(),
                max: times.last().copied().unwrap_or_default(),
            })
        });
        Bystander {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Waits until `more` further round trips completed: the service is
    /// serving this client now.
    ///
    /// # Panics
    ///
    /// If they do not within [`HANG`], or the bystander failed.
    pub fn served(&mut self, more: u64) {
        use std::sync::atomic::Ordering;
        let target = self.done.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + HANG;
        while self.done.load(Ordering::Relaxed) < target {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let r = self.finish();
                panic!("the bystander stopped: {r:?}");
            }
            assert!(Instant::now() < deadline, "the bystander was not served");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops it and returns what it did.
    ///
    /// # Panics
    ///
    /// If any of its round trips failed.
    pub fn finish(&mut self) -> BystanderReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => panic!("{e}"),
            Some(Err(_)) => panic!("the bystander thread panicked"),
            None => BystanderReport::default(),
        }
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A fresh client connects to `addr` and gets one echo: the service
/// takes newcomers.
///
/// # Panics
///
/// If it cannot, within [`HANG`].
pub fn newcomer(addr: &ServiceAddr) {
    let mut c = crate::procs::connect(addr, 0);
    let mut buf = [0u8; 16];
    let m = c
        .send_recv(crate::ipc::id::ECHO, b"newcomer", &mut buf, Some(HANG))
        .unwrap_or_else(|e| panic!("a newcomer's echo: {e}"));
    assert_eq!(&buf[..m.len], b"newcomer");
}
