//! `uds-baseline`: a bare Unix `SOCK_SEQPACKET` server and client on
//! `nix`, with no ringlink code, doing what the bench's ringlink server
//! does: check every request, stamp every response.
//!
//! Each message is an 8-byte header (message id and payload length,
//! little-endian) and the payload, sent with one `sendmsg` of two
//! slices and received with one `recvmsg` (no copy to join them). The
//! server is one thread: a level-triggered epoll set of the listening
//! socket and the connections, each readable connection read with
//! `MSG_DONTWAIT` until it is empty (at most [`BATCH`] messages per turn,
//! so that one busy client cannot starve the others), answers sent with
//! blocking `sendmsg`. The client blocks in `recvmsg`. Neither spins:
//! this is what a socket server costs.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, setsockopt, socket, sockopt,
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr,
};

use super::control::ServerConfig;
use super::{burst_len, decode_id, message_id, Kind, ACK_LEN};
use crate::payload::{check, pattern, stamp};
use crate::seqpacket;

/// Bytes of the message header.
pub const HEADER: usize = 8;

/// Most messages the server reads from one connection per loop turn.
pub const BATCH: usize = 64;

fn header(id: i32, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&id.to_le_bytes());
    h[4..].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

fn parse_header(h: &[u8; HEADER]) -> (i32, usize) {
    let id = i32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(h[4..].try_into().expect("4 bytes"));
    (id, len as usize)
}

/// Raises the socket's send buffer so that a message of `max_message`
/// payload bytes fits (a `SOCK_SEQPACKET` message must fit in the send
/// buffer whole), keeping room for about two of them in flight.
///
/// # Errors
///
/// `InvalidInput` if the system's limit (`net.core.wmem_max`) is too
/// low for such a message.
fn size_send_buffer(fd: &impl AsFd, max_message: usize) -> io::Result<()> {
    // The kernel refuses a message longer than the send buffer less 32
    // bytes; leave room for its bookkeeping too.
    let need = max_message + HEADER + 4096;
    if getsockopt(fd, sockopt::SndBuf)? < 2 * need {
        // The kernel doubles the value, and caps it at twice wmem_max.
        setsockopt(fd, sockopt::SndBuf, &need)?;
    }
    let got = getsockopt(fd, sockopt::SndBuf)?;
    if got < need {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a {max_message}-byte SOCK_SEQPACKET message does not fit in the largest send \
                 buffer this system allows ({got} bytes; raise net.core.wmem_max)"
            ),
        ));
    }
    Ok(())
}

/// Sends one message.
fn send_message(fd: &impl AsRawFd, id: i32, payload: &[u8]) -> io::Result<()> {
    let h = header(id, payload.len());
    let iov = [IoSlice::new(&h), IoSlice::new(payload)];
    let n = sendmsg::<UnixAddr>(fd.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)?;
    if n != HEADER + payload.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short seqpacket send",
        ));
    }
    Ok(())
}

/// Receives one message into `buf`: `Ok(None)` at the end of the stream.
fn recv_message(
    fd: &impl AsRawFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> io::Result<Option<(i32, usize)>> {
    let mut h = [0u8; HEADER];
    let (bytes, truncated) = {
        let mut iov = [IoSliceMut::new(&mut h), IoSliceMut::new(buf)];
        let r = recvmsg::<()>(fd.as_raw_fd(), &mut iov, None, flags)?;
        (r.bytes, r.flags.contains(MsgFlags::MSG_TRUNC))
    };
    if bytes == 0 {
        return Ok(None);
    }
    let (id, len) = parse_header(&h);
    if truncated || bytes < HEADER || len != bytes - HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed message ({bytes} bytes, header says {len} + {HEADER})"),
        ));
    }
    Ok(Some((id, len)))
}

/// The client's end: a connected `SOCK_SEQPACKET` socket with blocking
/// calls bounded by [`STALL`](crate::STALL).
#[derive(Debug)]
pub struct UdsLink {
    sock: OwnedFd,
}

impl UdsLink {
    /// Connects to the baseline server at abstract `name`, retrying
    /// until `timeout` while it is not there yet.
    ///
    /// # Errors
    ///
    /// If the server cannot be reached, or the send buffer cannot hold a
    /// `max_message`-byte message.
    pub fn connect(name: &str, max_message: usize, timeout: Duration) -> io::Result<UdsLink> {
        let addr = UnixAddr::new_abstract(name.as_bytes())?;
        let deadline = Instant::now() + timeout;
        loop {
            let fd = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            // Timeouts first: they also bound a connect to a full backlog.
            let fd = OwnedFd::from(seqpacket::prepare(fd)?);
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => {
                    size_send_buffer(&fd, max_message)?;
                    return Ok(UdsLink { sock: fd });
                }
                Err(Errno::ECONNREFUSED | Errno::ENOENT | Errno::EAGAIN | Errno::EINTR)
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl super::link::Link for UdsLink {
    #[inline]
    fn send(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        send_message(&self.sock, id, payload)
    }

    #[inline]
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        recv_message(&self.sock, buf, MsgFlags::empty())?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "server closed"))
    }

    #[inline]
    fn round_trip(&mut self, id: i32, payload: &[u8], buf: &mut [u8]) -> io::Result<(i32, usize)> {
        self.send(id, payload)?;
        self.recv(buf)
    }

    /// Events come on the same socket as answers.
    #[inline]
    fn event_recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        self.recv(buf)
    }
}

/// A connection on the server side, the stamp its next request must
/// carry, the number of its next event, and the largest message its send
/// buffer has been sized for.
struct Conn {
    sock: OwnedFd,
    expected: u64,
    event: u64,
    sized_for: usize,
}

const LISTENER: u64 = u64::MAX;
const STDIN: u64 = u64::MAX - 1;

/// The baseline server: serves until its standard input closes. Prints
/// `ready` on standard output once it listens.
///
/// # Errors
///
/// If the socket cannot be made or bound, or epoll fails.
pub fn serve(cfg: &ServerConfig) -> io::Result<()> {
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(
        listener.as_raw_fd(),
        &UnixAddr::new_abstract(cfg.name.as_bytes())?,
    )?;
    let backlog = i32::try_from(cfg.clients.max(128)).unwrap_or(i32::MAX);
    listen(&listener, Backlog::new(backlog).unwrap_or(Backlog::MAXCONN))?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    let stdin = io::stdin();
    epoll.add(stdin.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STDIN))?;
    super::server::announce_ready()?;

    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buf = vec![0u8; cfg.max_message];
    let mut out = pattern(cfg.max_message.max(ACK_LEN));
    let mut events = vec![EpollEvent::empty(); 256];
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for ev in &events[..n] {
            match ev.data() {
                LISTENER => accept_all(&listener, &epoll, &mut conns)?,
                STDIN => {
                    // The coordinator never writes: readable means closed.
                    let mut byte = [0u8; 1];
                    if matches!(stdin.lock().read(&mut byte), Ok(0) | Err(_)) {
                        return Ok(());
                    }
                }
                slot => {
                    let slot = slot as usize;
                    let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    if let Err(e) = serve_conn(conn, &mut buf, &mut out) {
                        if let Some(e) = e {
                            eprintln!("ipc-bench uds-baseline server: connection {slot}: {e}");
                        }
                        let _ = epoll.delete(&conn.sock);
                        conns[slot] = None;
                    }
                }
            }
        }
    }
}

/// Accepts every waiting client.
fn accept_all(listener: &OwnedFd, epoll: &Epoll, conns: &mut Vec<Option<Conn>>) -> io::Result<()> {
    loop {
        let raw = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(Errno::EAGAIN | Errno::ECONNABORTED | Errno::EINTR) => return Ok(()),
            Err(Errno::EMFILE | Errno::ENFILE) => {
                eprintln!("ipc-bench uds-baseline server: out of file descriptors");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // SAFETY: `accept4` just returned this fd; nothing else owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        // Blocking sends (bounded by the stall timeout); reads use
        // MSG_DONTWAIT. The send buffer grows with the first response
        // that needs it (the client sized its own for its requests).
        let sock = match seqpacket::prepare(sock) {
            Ok(s) => OwnedFd::from(s),
            Err(e) => {
                eprintln!("ipc-bench uds-baseline server: refusing a connection: {e}");
                continue;
            }
        };
        let slot = match conns.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                conns.push(None);
                conns.len() - 1
            }
        };
        epoll.add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, slot as u64))?;
        conns[slot] = Some(Conn {
            sock,
            expected: 0,
            event: 0,
            sized_for: 0,
        });
    }
}

/// Reads and answers what a connection has (at most [`BATCH`] messages).
/// `Err(None)`: the client left; `Err(Some(e))`: close it for `e`.
fn serve_conn(conn: &mut Conn, buf: &mut [u8], out: &mut [u8]) -> Result<(), Option<io::Error>> {
    for _ in 0..BATCH {
        let (id, len) = match recv_message(&conn.sock, buf, MsgFlags::MSG_DONTWAIT) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(None),
            Err(e) => return Err(Some(e)),
        };
        let seq = conn.expected;
        conn.expected += 1;
        let Some((kind, size)) = decode_id(id) else {
            return Err(Some(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown message id {id:#x}"),
            )));
        };
        // A burst's request is a stamp; the size is its events'.
        let want = if kind == Kind::Burst { ACK_LEN } else { size };
        std::hint::black_box(check(&buf[..len], want, seq).map_err(Some)?);
        if size > conn.sized_for && matches!(kind, Kind::Echo | Kind::EchoInPlace | Kind::Burst) {
            size_send_buffer(&conn.sock, size).map_err(Some)?;
            conn.sized_for = size;
        }
        match kind {
            Kind::OneWay => {}
            // A bare socket has nothing to write in place: as Echo.
            Kind::Echo | Kind::EchoInPlace => {
                let resp = &mut out[..size];
                stamp(resp, seq);
                send_message(&conn.sock, id, resp).map_err(Some)?;
            }
            Kind::Ack => send_message(&conn.sock, id, &seq.to_le_bytes()).map_err(Some)?,
            // Each event a blocking `sendmsg`, as each answer is.
            Kind::Burst => {
                let id = message_id(Kind::Event, size);
                for _ in 0..burst_len(size) {
                    let event = out.get_mut(..size).ok_or_else(|| {
                        Some(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "events above the maximum",
                        ))
                    })?;
                    stamp(event, conn.event);
                    conn.event += 1;
                    send_message(&conn.sock, id, event).map_err(Some)?;
                }
            }
            Kind::Event => {
                return Err(Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an event sent as a request",
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        assert_eq!(parse_header(&header(-5, 1 << 20)), (-5, 1 << 20));
    }
}
