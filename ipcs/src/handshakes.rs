//! The handshakes in progress: each a socket, a deadline and the sans-IO
//! machine of `ringlink_common::handshake`, fed by reads that never wait.
//! The table reads and sends; what to answer is the service's decision
//! ([`Progress::Request`]), and what a handshake leaves behind when it
//! ends is given back ([`Ended`]) for the service to release.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{self, MsgFlags};
use ringlink_channel::set::Offer;
use ringlink_channel::stream;
use ringlink_common::fdpass;
use ringlink_common::handshake::{ServerEvent, ServerHandshake};
use ringlink_common::qb::{ConnRequest, ConnResponse, QbServerHandshake};
use ringlink_common::wire::{ConnectRequest, Status};
use ringlink_common::Credentials;

use crate::slab::Slab;

/// Send buffer of a connection's stream socket (the kernel's minimum
/// applies if larger): the answer, wake-up bytes and flow-control levels
/// fit many times over, and a client that never reads pins no more than
/// this of the server's socket memory.
const SOCKET_SNDBUF: usize = 16 << 10;

/// A handshake in progress.
struct Handshake {
    /// Shared with the rings once made, which send their wake-ups on it.
    sock: Arc<UnixStream>,
    started: Instant,
    deadline: Instant,
    machine: Machine,
    /// The listener it came from (`None`: adopted).
    listener: Option<usize>,
    /// Set once the answer and its fds are sent: the confirmation is
    /// awaited.
    pending: Option<Box<Pending>>,
}

/// The protocol a handshake speaks.
#[derive(Debug)]
enum Machine {
    Ringlink(ServerHandshake),
    Libqb(QbServerHandshake),
}

impl Machine {
    fn buffer(&mut self) -> &mut [u8] {
        match self {
            Machine::Ringlink(m) => m.buffer(),
            Machine::Libqb(m) => m.buffer(),
        }
    }
}

/// A connection answered but not confirmed by its client yet.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The connection's id.
    pub(crate) id: u64,
    /// The client's credentials (a census slot is held for them).
    pub(crate) credentials: Credentials,
    /// The channels made and offered.
    pub(crate) offer: Offer,
}

/// What reading a handshake's socket brought.
pub(crate) enum Progress {
    /// Nothing decisive: wait for more.
    Wait,
    /// A whole request, to decide on: [`Handshakes::answer`] or
    /// [`Handshakes::refuse`]. The client's credentials, from the kernel.
    Request(ConnectRequest, Credentials),
    /// A malformed request (or a client of another version): refuse it
    /// with this status.
    Malformed(Status),
    /// A whole libqb connection request, from the clients of listener
    /// `listener` ([`Handshakes::answer_libqb`] or
    /// [`Handshakes::refuse_libqb`]).
    LibqbRequest {
        request: ConnRequest,
        credentials: Credentials,
        listener: usize,
    },
    /// A libqb request that does not decode: libqb's server closes such
    /// a connection without an answer; the handshake left the table.
    LibqbMalformed(Ended),
    /// The client confirmed: the handshake left the table, and the
    /// connection starts from here.
    Confirmed(Arc<UnixStream>, Box<Pending>),
    /// The client left, broke the exchange, or its socket failed; the
    /// handshake left the table.
    Ended(Ended),
}

/// What an ended handshake leaves: its socket, and the connection it
/// offered if it got that far.
pub(crate) struct Ended {
    sock: Arc<UnixStream>,
    pending: Option<Box<Pending>>,
}

impl Ended {
    /// Releases everything: an offered connection's channels are
    /// abandoned (rings marked closed by both sides, named files removed;
    /// `docs/PROTOCOL.md` §2.3), and the socket closed where its closing
    /// cannot hold the loop. Returns the credentials whose census slot
    /// the offer held.
    pub(crate) fn release(self) -> Option<Credentials> {
        let credentials = self.pending.map(|p| {
            let Pending {
                credentials, offer, ..
            } = *p;
            // The rings go first: they hold the socket for their wake-ups.
            offer.abandon();
            credentials
        });
        stream::release(self.sock);
        credentials
    }
}

/// The handshakes in progress, registered in the loop's epoll set.
pub(crate) struct Handshakes {
    table: Slab<Handshake>,
    /// Epoll token kind (the slot goes below).
    token: u64,
    timeout: Duration,
}

impl Handshakes {
    /// An empty table; each handshake is given `timeout`.
    pub(crate) fn new(token: u64, timeout: Duration) -> Handshakes {
        Handshakes {
            table: Slab::new(),
            token,
            timeout,
        }
    }

    /// How many are in progress.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Starts a handshake on a new client's socket (make room first with
    /// [`evict_oldest`](Self::evict_oldest) when the table is full).
    /// Returns its deadline.
    ///
    /// # Errors
    ///
    /// The socket cannot be made non-blocking or registered; it is
    /// dropped (the client sees the connection end).
    pub(crate) fn start(
        &mut self,
        sock: UnixStream,
        epoll: &Epoll,
        listener: Option<usize>,
        libqb: bool,
    ) -> io::Result<Instant> {
        sock.set_nonblocking(true)?;
        // A client passes us no fds, ever: refused by the kernel where it
        // can (Linux 6.16), reaped where it cannot (every read goes
        // through `fdpass::recv_nowait`).
        fdpass::refuse_fds(sock.as_fd());
        // libqb's peers keep the default buffer: one byte per event rides
        // on this socket, each costing a buffer of its own.
        if !libqb {
            let _ = socket::setsockopt(&sock, socket::sockopt::SndBuf, &SOCKET_SNDBUF);
        }
        let machine = if libqb {
            Machine::Libqb(QbServerHandshake::default())
        } else {
            Machine::Ringlink(ServerHandshake::new())
        };
        let slot = self.table.next_slot();
        let ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            self.token | slot as u64,
        );
        epoll.add(&sock, ev)?;
        let now = Instant::now();
        let deadline = now
            .checked_add(self.timeout)
            .unwrap_or_else(|| ringlink_common::time::deadline_in(self.timeout));
        self.table.insert(Handshake {
            sock: Arc::new(sock),
            started: now,
            deadline,
            machine,
            listener,
            pending: None,
        });
        Ok(deadline)
    }

    /// Ends the oldest handshake, to make room for a new one.
    pub(crate) fn evict_oldest(&mut self, epoll: &Epoll) -> Option<Ended> {
        let oldest = self
            .table
            .iter()
            .min_by_key(|(_, h)| h.started)
            .map(|(slot, _)| slot)?;
        self.end(oldest, epoll)
    }

    /// When the handshake at `slot` started and its deadline, if one is
    /// there that has not been answered (the start tells it from a later
    /// one in the same slot).
    pub(crate) fn unanswered(&self, slot: usize) -> Option<(Instant, Instant)> {
        self.table
            .get(slot)
            .filter(|h| h.pending.is_none())
            .map(|h| (h.started, h.deadline))
    }

    /// The stream socket of the handshake at `slot`: the channels made
    /// for it send their wake-ups on it.
    pub(crate) fn stream(&self, slot: usize) -> Option<&Arc<UnixStream>> {
        self.table.get(slot).map(|h| &h.sock)
    }

    /// Reads what the handshake at `slot` has and moves it on.
    pub(crate) fn advance(&mut self, slot: usize, epoll: &Epoll) -> Progress {
        let Some(h) = self.table.get_mut(slot) else {
            return Progress::Wait;
        };
        loop {
            let buf = h.machine.buffer();
            if buf.is_empty() {
                // Deciding, or done: nothing is read (a client that
                // writes more waits, and its extra bytes are a bad
                // confirmation or the connection's first wake-ups).
                return Progress::Wait;
            }
            let n = match fdpass::recv_nowait(h.sock.as_fd(), buf, MsgFlags::empty()) {
                // The client left, or its socket failed.
                Ok(0) => return self.ended(slot, epoll),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.ended(slot, epoll),
            };
            match &mut h.machine {
                Machine::Ringlink(m) => match m.received(n) {
                    ServerEvent::NeedMore => {}
                    event => return self.on_event(slot, event, epoll),
                },
                Machine::Libqb(m) => match m.received(n) {
                    None => {}
                    Some(Ok(request)) => {
                        let listener = h.listener.unwrap_or(0);
                        return match Credentials::of_peer(&h.sock) {
                            Ok(credentials) => Progress::LibqbRequest {
                                request,
                                credentials,
                                listener,
                            },
                            Err(_) => self.ended(slot, epoll),
                        };
                    }
                    Some(Err(_)) => {
                        return match self.end(slot, epoll) {
                            Some(ended) => Progress::LibqbMalformed(ended),
                            None => Progress::Wait,
                        }
                    }
                },
            }
        }
    }

    /// What a ringlink handshake's machine found.
    fn on_event(&mut self, slot: usize, event: ServerEvent, epoll: &Epoll) -> Progress {
        let Some(h) = self.table.get_mut(slot) else {
            return Progress::Wait;
        };
        match event {
            ServerEvent::NeedMore => Progress::Wait,
            ServerEvent::Request(Err(status)) => Progress::Malformed(status),
            ServerEvent::Request(Ok(request)) => match Credentials::of_peer(&h.sock) {
                Ok(credentials) => Progress::Request(request, credentials),
                Err(_) => self.ended(slot, epoll),
            },
            ServerEvent::Confirmed => {
                let h = self.remove(slot, epoll).expect("present");
                match h.pending {
                    Some(pending) => Progress::Confirmed(h.sock, pending),
                    // The machine confirms only after an answer.
                    None => Progress::Ended(Ended {
                        sock: h.sock,
                        pending: None,
                    }),
                }
            }
            ServerEvent::BadConfirm(_) => self.ended(slot, epoll),
        }
    }

    /// Sends a libqb connection response accepting the client (in one
    /// `send`, never waiting: libqb's client reads it with one read) and
    /// takes the handshake out of the table: the connection starts now.
    ///
    /// # Errors
    ///
    /// The answer could not go whole; the handshake ended.
    pub(crate) fn answer_libqb(
        &mut self,
        slot: usize,
        answer: &[u8],
        epoll: &Epoll,
    ) -> Result<Arc<UnixStream>, Option<Ended>> {
        let Some(h) = self.table.get_mut(slot) else {
            return Err(None);
        };
        let sent = socket::send(
            h.sock.as_raw_fd(),
            answer,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
        let h = self.remove(slot, epoll).expect("present");
        match sent {
            Ok(n) if n == answer.len() => Ok(h.sock),
            _ => Err(Some(Ended {
                sock: h.sock,
                pending: None,
            })),
        }
    }

    /// Refuses a libqb client with `errno` (its `qb_ipcc_connect` fails
    /// with it) and ends the handshake.
    pub(crate) fn refuse_libqb(&mut self, slot: usize, errno: i32, epoll: &Epoll) -> Option<Ended> {
        let h = self.table.get_mut(slot)?;
        let _ = socket::send(
            h.sock.as_raw_fd(),
            &ConnResponse::refuse(errno).encode(),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
        self.end(slot, epoll)
    }

    /// Sends the accepting answer for `offer` (with its fds, never
    /// waiting: the socket's buffer is empty and the answer small); the
    /// confirmation is awaited next, read by [`advance`](Self::advance)
    /// (the client may have sent it already: call it again).
    ///
    /// # Errors
    ///
    /// The answer could not go whole: the offer is abandoned, and the
    /// handshake ended.
    pub(crate) fn answer(
        &mut self,
        slot: usize,
        id: u64,
        credentials: Credentials,
        mut offer: Offer,
        epoll: &Epoll,
    ) -> Result<(), Option<Ended>> {
        let Some(h) = self.table.get_mut(slot) else {
            offer.abandon();
            return Err(None);
        };
        let Machine::Ringlink(m) = &mut h.machine else {
            offer.abandon();
            return Err(self.end(slot, epoll));
        };
        let bytes = m.accept(&offer.answer(id), &offer.fd_terms(), &offer.trailer());
        match fdpass::send_fds(&h.sock, &bytes, &offer.fds()) {
            Ok(n) if n == bytes.len() => {}
            _ => {
                offer.abandon();
                return Err(self.end(slot, epoll));
            }
        }
        // Sent: the client has its own copies of the fds (or opens the
        // files by path); the server keeps only the mappings.
        offer.sent();
        h.pending = Some(Box::new(Pending {
            id,
            credentials,
            offer,
        }));
        Ok(())
    }

    /// Sends a refusal (best effort and without waiting: the socket's
    /// buffer is empty, so the answer fits) and ends the handshake.
    pub(crate) fn refuse(&mut self, slot: usize, status: Status, epoll: &Epoll) -> Option<Ended> {
        let h = self.table.get_mut(slot)?;
        let Machine::Ringlink(m) = &mut h.machine else {
            return self.end(slot, epoll);
        };
        let _ = socket::send(
            h.sock.as_raw_fd(),
            &m.reject(status),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
        self.end(slot, epoll)
    }

    /// Ends the handshake at `slot` (expired, evicted, refused, or the
    /// service is closing).
    pub(crate) fn end(&mut self, slot: usize, epoll: &Epoll) -> Option<Ended> {
        let h = self.remove(slot, epoll)?;
        Some(Ended {
            sock: h.sock,
            pending: h.pending,
        })
    }

    /// Ends every handshake whose deadline passed.
    pub(crate) fn expire(&mut self, now: Instant, epoll: &Epoll) -> Vec<Ended> {
        let expired: Vec<usize> = self
            .table
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(slot, _)| slot)
            .collect();
        expired
            .into_iter()
            .filter_map(|slot| self.end(slot, epoll))
            .collect()
    }

    /// The earliest deadline, if any handshake is in progress (those
    /// waiting for a slot included: theirs is their handshake's).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.table.iter().map(|(_, h)| h.deadline).min()
    }

    /// Every slot that may hold a handshake.
    pub(crate) fn slots(&self) -> usize {
        self.table.slots()
    }

    fn ended(&mut self, slot: usize, epoll: &Epoll) -> Progress {
        match self.end(slot, epoll) {
            Some(ended) => Progress::Ended(ended),
            None => Progress::Wait,
        }
    }

    fn remove(&mut self, slot: usize, epoll: &Epoll) -> Option<Handshake> {
        let h = self.table.remove(slot)?;
        let _ = epoll.delete(&*h.sock);
        Some(h)
    }
}
