//! The two transports under the client's calls: what one attempt to send
//! or receive does, and how to wait for the next attempt to succeed.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use ringlink_common::seqpacket::{self, RecvError, SendError, SockRx, SockTx};
use ringlink_common::wire::{MsgHeader, MSG_HEADER_LEN};
use ringlink_common::Error;
use ringlink_ringbuf::{Consumer, PopError, Producer, PushError, Ring};

use crate::Message;

/// What a wait is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Response,
    Event,
    Space,
}

/// A connection's message channels.
pub(crate) enum Link {
    Shm(ShmLink),
    Sock(SockLink),
}

/// Shared-memory rings.
pub(crate) struct ShmLink {
    /// Request, response and event rings.
    pub(crate) rings: [Ring; 3],
    pub(crate) request: Producer,
    pub(crate) response: Consumer,
    pub(crate) event: Consumer,
    /// The negotiated payload maximum: the rings hold larger records,
    /// the protocol does not.
    pub(crate) max_message: usize,
}

/// `SOCK_SEQPACKET` sockets: one for requests and responses, one for
/// events.
pub(crate) struct SockLink {
    pub(crate) tx: SockTx,
    pub(crate) rx: SockRx,
    pub(crate) ev: SockRx,
}

/// Why a send attempt did not go through.
pub(crate) enum Refused {
    /// No room (or flow control): wait and retry.
    Full,
    /// The connection is unusable: this error, and the client fails.
    Fatal(Error),
}

impl Link {
    /// Whether the server closed a channel (rings only; a socket's close
    /// shows as end of stream when read).
    pub(crate) fn closed(&self) -> bool {
        match self {
            Link::Shm(l) => l.response.is_closed() || l.event.is_closed() || l.request.is_closed(),
            Link::Sock(_) => false,
        }
    }

    /// Marks the rings closed from the client's side (its roles' bits:
    /// producer on the request ring, consumer on the others); nothing
    /// for sockets, whose closing says it all.
    pub(crate) fn close(&mut self) {
        if let Link::Shm(l) = self {
            l.request.close();
            l.response.close();
            l.event.close();
        }
    }

    /// One attempt to send a request.
    pub(crate) fn try_send(
        &mut self,
        header: MsgHeader,
        parts: &[IoSlice<'_>],
        max: usize,
    ) -> Result<(), Refused> {
        let len = header.size as usize;
        match self {
            Link::Shm(l) => match l.request.try_reserve(MSG_HEADER_LEN + len) {
                Ok(mut grant) => {
                    header.encode_record(&mut grant, parts);
                    grant.commit();
                    Ok(())
                }
                Err(PushError::Full) => Err(Refused::Full),
                Err(PushError::Corrupt(c)) => Err(Refused::Fatal(Error::protocol(
                    "server corrupted the request ring",
                    c,
                ))),
                Err(PushError::TooLarge { .. }) => {
                    Err(Refused::Fatal(Error::MessageTooLarge { len, max }))
                }
                Err(_) => Err(Refused::Fatal(Error::Disconnected)),
            },
            Link::Sock(l) => match l.tx.try_send(&header, parts) {
                Ok(()) => Ok(()),
                Err(SendError::WouldBlock) => Err(Refused::Full),
                Err(SendError::Closed) => Err(Refused::Fatal(Error::Disconnected)),
                Err(SendError::Io(e)) => Err(Refused::Fatal(Error::Io(e))),
            },
        }
    }

    /// One attempt to receive a response or an event into `buf`: `None`
    /// if there is none yet.
    pub(crate) fn try_read(
        &mut self,
        which: Wait,
        buf: &mut [u8],
    ) -> Option<Result<Message, Error>> {
        let deliver = |h: MsgHeader, payload: &[u8], buf: &mut [u8]| {
            let msg = Message {
                id: h.id,
                seq: h.seq,
                error: h.error,
                len: payload.len(),
            };
            if msg.len > buf.len() {
                return Err(Error::BufferTooSmall { needed: msg.len });
            }
            buf[..msg.len].copy_from_slice(payload);
            Ok(msg)
        };
        match self {
            Link::Shm(l) => {
                let rx = if which == Wait::Event {
                    &mut l.event
                } else {
                    &mut l.response
                };
                match rx.try_peek() {
                    Ok(record) => Some(match MsgHeader::decode(&record) {
                        Ok(h) if h.size as usize > l.max_message => Err(Error::protocol(
                            "message from the server over the negotiated maximum",
                            format_args!("{} bytes, maximum {}", h.size, l.max_message),
                        )),
                        Ok(h) => {
                            let r = deliver(h, &record[MSG_HEADER_LEN..], buf);
                            if r.is_ok() {
                                record.release();
                            }
                            r
                        }
                        Err(e) => Err(Error::protocol("bad message header from the server", e)),
                    }),
                    Err(PopError::Empty) => None,
                    Err(PopError::Corrupt(c)) => {
                        Some(Err(Error::protocol("server corrupted its ring", c)))
                    }
                    Err(_) => Some(Err(Error::Disconnected)),
                }
            }
            Link::Sock(l) => {
                // The tail of our last request must go before its answer
                // can come (errors show on the next send).
                let _ = l.tx.flush();
                let rx = if which == Wait::Event {
                    &mut l.ev
                } else {
                    &mut l.rx
                };
                match rx.fill() {
                    Ok(()) => {
                        let (h, payload) = rx.message().expect("filled");
                        let r = deliver(h, payload, buf);
                        if r.is_ok() {
                            rx.consume();
                        }
                        Some(r)
                    }
                    Err(RecvError::Empty) => None,
                    Err(RecvError::Closed) => Some(Err(Error::Disconnected)),
                    Err(RecvError::Protocol(why)) => Some(Err(Error::Protocol(format!(
                        "server broke the socket framing: {why}"
                    )))),
                    Err(RecvError::Io(e)) => Some(Err(Error::Io(e))),
                }
            }
        }
    }

    /// Waits until `which` may have progressed, or `deadline`: polls the
    /// rings for `spin`, then sleeps on the stream socket, which carries
    /// the rings' wake-ups and hears a dead server (over the socket
    /// transport, on the channel's socket and the stream socket
    /// together, so a dead server or a flow-control change wakes us).
    /// `drain` takes the wake-ups already on the stream socket; it runs
    /// before a ring's flag goes up. `fc_held` says flow control holds
    /// sends back (then only the level can release a `Space` wait).
    /// Returns whether the stream socket fired.
    pub(crate) fn wait(
        &mut self,
        which: Wait,
        sock: &UnixStream,
        deadline: Option<Instant>,
        spin: Duration,
        fc: (u32, bool),
        drain: impl FnOnce() -> bool,
    ) -> Result<bool, Error> {
        let (threshold, fc_held) = fc;
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
        match self {
            Link::Shm(l) => {
                let need = MSG_HEADER_LEN;
                let held = |ring: &Ring| threshold != 0 && ring.user_word() >= threshold;
                let ready = match which {
                    Wait::Response => {
                        let rx = &l.response;
                        ringlink_ringbuf::wake::spin_until(spin, || {
                            rx.pending_bytes() > 0 || rx.is_closed()
                        })
                    }
                    Wait::Event => {
                        let rx = &l.event;
                        ringlink_ringbuf::wake::spin_until(spin, || {
                            rx.pending_bytes() > 0 || rx.is_closed()
                        })
                    }
                    Wait::Space => {
                        let (tx, ring) = (&mut l.request, &l.rings[0]);
                        ringlink_ringbuf::wake::spin_until(spin, || {
                            !held(ring) && tx.has_room(need).unwrap_or(true)
                        })
                    }
                };
                if ready {
                    return Ok(false);
                }
                // Drain, then raise the flag: a wake-up sent after the
                // flag went up stays on the socket until the poll below.
                drain();
                let armed = match which {
                    Wait::Response => l.response.prepare_sleep(),
                    Wait::Event => l.event.prepare_sleep(),
                    Wait::Space => l.request.prepare_sleep(),
                };
                // Read after raising the flag: the server lowers the
                // level, then wakes flagged waiters
                // (`Ring::wake_waiters`), so either we see the new level
                // here or we are woken.
                if !armed || (which == Wait::Space && !held(&l.rings[0])) {
                    return Ok(false);
                }
            }
            Link::Sock(l) => {
                // The tail of our last request must go before its
                // response can come.
                let tail = match l.tx.flush() {
                    Ok(done) => !done,
                    Err(SendError::Closed) => return Err(Error::Disconnected),
                    Err(SendError::Io(e)) => return Err(Error::Io(e)),
                    Err(SendError::WouldBlock) => true,
                };
                match which {
                    Wait::Response => fds.push(PollFd::new(l.rx.fd(), seqpacket::READABLE)),
                    Wait::Event => fds.push(PollFd::new(l.ev.fd(), seqpacket::READABLE)),
                    // Held by flow control, only the level (on the stream
                    // socket) can release us: writability would spin.
                    Wait::Space if fc_held => {}
                    Wait::Space => fds.push(PollFd::new(l.tx.fd(), seqpacket::WRITABLE)),
                }
                if tail && which != Wait::Space {
                    fds.push(PollFd::new(l.tx.fd(), seqpacket::WRITABLE));
                }
            }
        }
        fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        let polled = seqpacket::poll_until(&mut fds, deadline);
        let last = fds.last().and_then(PollFd::revents);
        let fired = last.is_some_and(|r| !r.is_empty());
        drop(fds);
        // Awake: the flag comes down (the server swapped it already if it
        // woke us), so that no wake-up is sent that nobody waits for.
        if let Link::Shm(l) = self {
            match which {
                Wait::Response => l.response.lower_wake_flag(),
                Wait::Event => l.event.lower_wake_flag(),
                Wait::Space => l.request.lower_wake_flag(),
            }
        }
        polled?;
        Ok(fired)
    }

    /// Arms the wake-ups of the response and event channels for a poll
    /// of the client's fd (the stream socket was drained first): `false`
    /// if a message is already waiting.
    pub(crate) fn prepare_poll(&mut self) -> bool {
        match self {
            Link::Shm(l) => {
                // Both flags up, one fence, then both rings looked at:
                // each ring's flag is up before the other is checked, so
                // no wake-up is lost between them.
                let mut prep = ringlink_ringbuf::wake::prepare_sleep();
                l.response.raise_wake_flag(&mut prep);
                l.event.raise_wake_flag(&mut prep);
                let fenced = prep.fence();
                let a = l.response.confirm_wake(&fenced);
                let b = l.event.confirm_wake(&fenced);
                a && b
            }
            // Queued datagrams keep the sockets readable; only a message
            // already reassembled (and refused for a small buffer) is not
            // seen by poll.
            Link::Sock(l) => !l.rx.ready() && !l.ev.ready(),
        }
    }

    /// The fds that signal a response or an event besides the stream
    /// socket (which carries the rings' wake-ups): the two sockets of the
    /// socket transport, none for rings.
    pub(crate) fn readable_fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Link::Shm(_) => Vec::new(),
            Link::Sock(l) => vec![l.rx.fd(), l.ev.fd()],
        }
    }
}
