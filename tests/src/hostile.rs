//! A server written from `docs/PROTOCOL.md` alone, for the tests of the
//! client against a hostile server: a thread with a listening socket of
//! its own (no `ringlink-ipcs`) that runs a test's script on the first
//! connection. The helpers here do the honest parts (read the request,
//! make the rings, answer, read the confirmation), so that a script
//! lies exactly where it means to.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::thread::JoinHandle;

use ringlink_channel::set::ring_capacity_for;
use ringlink_common::fdpass::send_fds;
use ringlink_common::wire::{
    ConnectRequest, ConnectResponse, Status, CONFIRM_LEN, REQUEST_LEN, SHM_FDS,
};
use ringlink_common::ServiceAddr;
use ringlink_ringbuf::{Ring, Wake};

use crate::attack::HANG;
use crate::procs::unique_addr;

/// Listens on a fresh address and runs `script` on the first connection
/// (reads bounded by [`HANG`]) in a thread of its own. Returns the
/// address and the thread.
///
/// # Panics
///
/// In the thread, if the connection cannot be accepted.
pub fn listen<T: Send + 'static>(
    tag: &str,
    script: impl FnOnce(Arc<UnixStream>) -> T + Send + 'static,
) -> (ServiceAddr, JoinHandle<T>) {
    let addr = unique_addr(tag);
    let listener = UnixListener::bind_addr(&addr.socket_addr().expect("address")).expect("bind");
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(HANG)).expect("timeout");
        script(Arc::new(sock))
    });
    (addr, server)
}

/// Reads the client's connection request.
///
/// # Panics
///
/// If it does not come or does not decode.
pub fn read_request(mut sock: &UnixStream) -> ConnectRequest {
    let mut b = [0u8; REQUEST_LEN];
    sock.read_exact(&mut b).expect("the client's request");
    ConnectRequest::decode(&b).expect("a valid request")
}

/// Three memfd rings for messages of `max` bytes, as a server makes
/// them, waking the client through `sock`.
///
/// # Panics
///
/// If a ring cannot be made.
pub fn rings(max: usize, sock: &Arc<UnixStream>) -> [Ring; 3] {
    let cap = ring_capacity_for(max);
    [(); 3].map(|_| {
        Ring::create_memfd_waking("hostile", cap, Wake::Socket(sock.clone())).expect("a ring")
    })
}

/// An honest answer for `rings`, granting messages of `max` bytes.
pub fn answer_for(rings: &[Ring; 3], max: usize) -> ConnectResponse {
    let cap = |r: &Ring| r.capacity() as u64;
    ConnectResponse {
        status: Status::Ok,
        connection_id: 7,
        max_message: max as u32,
        fd_count: SHM_FDS as u16,
        path_len: 0,
        request_capacity: cap(&rings[0]),
        response_capacity: cap(&rings[1]),
        event_capacity: cap(&rings[2]),
    }
}

/// The fds of `rings` in handshake order: their memory fds.
///
/// # Panics
///
/// If a ring has forgotten its memory fd.
pub fn fds(rings: &[Ring; 3]) -> Vec<BorrowedFd<'_>> {
    rings
        .iter()
        .map(|r| r.memory_fd().expect("a memfd ring"))
        .collect()
}

/// Reads until the client closes its end (or [`HANG`]), discarding
/// what it writes (wake-ups), so that a client waiting on the socket is
/// not woken by our leaving.
pub fn hold(mut sock: &UnixStream) {
    let mut b = [0u8; 64];
    while matches!(sock.read(&mut b), Ok(n) if n > 0) {}
}

/// The bytes of an accepting `answer`: the response, then the server's
/// fd terms (none), which begin every accepting answer's trailer.
pub fn accepting(answer: &ConnectResponse) -> Vec<u8> {
    let mut b = answer.encode().to_vec();
    b.extend_from_slice(&ringlink_common::wire::FdTerms::NONE.encode());
    b
}

/// A whole honest handshake for messages of `max` bytes: request,
/// answer with the rings' fds, confirmation. Returns the rings, the
/// client connected.
///
/// # Panics
///
/// If the client does not follow the protocol.
pub fn handshake(sock: &Arc<UnixStream>, max: usize) -> [Ring; 3] {
    read_request(sock);
    let rings = rings(max, sock);
    send_fds(sock, &accepting(&answer_for(&rings, max)), &fds(&rings)).expect("send the answer");
    let mut confirm = [0u8; CONFIRM_LEN];
    (&**sock)
        .read_exact(&mut confirm)
        .expect("the confirmation");
    rings
}

/// Wakes the client, whatever it waits for: one byte on the stream
/// socket (`docs/PROTOCOL.md` §4).
pub fn kick(sock: &UnixStream) {
    let _ = crate::raw::send_datagram(sock.as_fd(), &[1], libc::MSG_DONTWAIT);
}
