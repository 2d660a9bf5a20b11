//! The live connections, as the loop holds them: taking their requests
//! (the sweep), arming their wake-ups before the loop sleeps, hearing
//! their sockets, publishing the flow-control level, and taking one out
//! when it closes. It returns what happened (work done, connections to
//! close and why) and calls back into nothing but the delivery closure it
//! is handed.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use ringlink_channel::set::{ServerSide, Watch};
use ringlink_channel::stream::{self, Drained};
use ringlink_channel::TryRecvError;
use ringlink_common::fdpass::PeerFds;
use ringlink_common::wire::MsgHeader;
use ringlink_common::Violation;

use crate::flow;
use crate::hooks::{Closing, FaultKind};
use crate::slab::Slab;
use crate::Connection;

/// Epoll token kinds of a connection's fds (the service's kinds, in the
/// top byte; the slot below).
pub(crate) const CONN_SOCK: u64 = 4 << 56;
pub(crate) const CONN_REQ: u64 = 5 << 56;
pub(crate) const CONN_SPACE: u64 = 6 << 56;

/// A live connection, as the loop holds it.
pub(crate) struct Conn {
    pub(crate) handle: Connection,
    /// The handshake's socket: liveness both ways, and the rings'
    /// wake-ups (a byte each) over shared memory.
    pub(crate) sock: Arc<UnixStream>,
    /// The requests, and what closes the channels and publishes the
    /// flow-control level.
    pub(crate) side: ServerSide,
    /// Waiting for room for a response before taking more requests.
    parked: bool,
    /// The handler could not take its next request (`Handler::ready`):
    /// its requests are not handed over until `Connection::resume`.
    held: bool,
    /// Requests taken out of the ring while held, in order, so that the
    /// replies to the server's calls behind them can be read (a worker
    /// waiting for one may be what holds the connection); at most
    /// [`STASH_MAX`] of them and [`STASH_BYTES`] bytes.
    stash: std::collections::VecDeque<(MsgHeader, Vec<u8>, PeerFds)>,
    stash_bytes: usize,
    /// The fds the stash holds: at most the service's in-flight limit, so
    /// that what a held connection keeps is what its client could have
    /// in flight.
    stash_fds: usize,
    /// The request at the front of the ring did not fit the stash's fds.
    stash_fds_full: bool,
    /// In the `hot` list: may have requests, so the sweep looks at it. A
    /// cold connection has its wake-up armed and comes back through
    /// epoll.
    hot: bool,
    /// The client hung up (or shut its socket down): what it sent before
    /// is still served, and the connection closes, as `Left`, once its
    /// requests run dry. Hot until then (no wake-up will come), unless
    /// the handler holds it; its socket is out of epoll (a hang-up stays
    /// readable), and its answers are not waited for (nobody reads them).
    leaving: bool,
    /// Requests delivered, and that count when the idle timer last
    /// looked, and how many of its looks in a row found it unchanged.
    received: u64,
    idle_mark: u64,
    idle_looks: u32,
}

/// Most requests a held connection's stash keeps ([`Conn::stash`]).
const STASH_MAX: usize = 64;
/// Most payload bytes it keeps (one request at least).
const STASH_BYTES: usize = 1 << 20;

impl Conn {
    /// Whether the stash takes no more: the ring keeps the rest.
    fn stash_full(&self) -> bool {
        self.stash.len() >= STASH_MAX || self.stash_bytes >= STASH_BYTES || self.stash_fds_full
    }
}

/// The live connections.
#[derive(Default)]
pub(crate) struct Connections {
    conns: Slab<Conn>,
    /// Slots of the connections the sweep reads: those active since the
    /// loop last slept, and those epoll reported since. Idle connections
    /// cost the sweep nothing, so its cost follows the active ones.
    hot: Vec<usize>,
    /// Slots of the connections whose clients say nothing when they make
    /// room (libqb's): looked at by [`poll_quiet`](Self::poll_quiet).
    polled: Vec<usize>,
    /// Slots of connections woken on their stream socket (ringlink's and
    /// libqb's rings) that epoll reported readable, read by
    /// [`read_streams`](Self::read_streams) once the sweep after it has
    /// looked at their rings, and before any flag goes up again.
    unread: Vec<usize>,
}

impl Connections {
    /// How many.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// The slot the next insert takes.
    pub(crate) fn next_slot(&self) -> usize {
        self.conns.next_slot()
    }

    /// The live connections' handles.
    pub(crate) fn handles(&self) -> impl Iterator<Item = &Connection> {
        self.conns.iter().map(|(_, c)| &c.handle)
    }

    /// Whether a connection is at `slot` with this id.
    pub(crate) fn holds(&self, slot: usize, id: u64) -> bool {
        self.conns.get(slot).is_some_and(|c| c.handle.id() == id)
    }

    /// How many connections are hot (each sweep looks at their rings).
    pub(crate) fn hot_count(&self) -> usize {
        self.hot.len()
    }

    /// Whether any hot connection shows something to read without a
    /// system call (a ring: a word published at the reader's position):
    /// one load per ring, for the idle loop's light looks between sweeps.
    pub(crate) fn any_pending(&self) -> bool {
        self.hot.iter().any(|&slot| {
            self.conns
                .get(slot)
                .is_some_and(|c| c.side.request.pending())
        })
    }

    /// Whether every connection the loop reads is armed (none is hot).
    pub(crate) fn all_armed(&self) -> bool {
        self.hot.is_empty()
    }

    /// Adds a connection made from a confirmed handshake, registered in
    /// `epoll`; its requests are looked at on the next sweep (the client
    /// may have sent some already). If it cannot be registered, it comes
    /// back, to be closed and released.
    pub(crate) fn insert(
        &mut self,
        handle: Connection,
        sock: Arc<UnixStream>,
        mut side: ServerSide,
        epoll: &Epoll,
    ) -> Result<usize, Box<Conn>> {
        // The sweep drains requests in bursts and publishes what it
        // released when it leaves a connection: the client's producer is
        // not told of every request read (the ring's position is the one
        // line the reader writes per request; see `sweep`).
        side.request.batch_releases();
        let slot = self.conns.next_slot();
        let ev = |flags, kind: u64| EpollEvent::new(flags, kind | slot as u64);
        let registered = (|| -> io::Result<()> {
            // Level-triggered: the loop drains what a readiness reports
            // (wake-up bytes, bounded per turn), or the client hung up.
            epoll.add(
                &*sock,
                ev(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, CONN_SOCK),
            )?;
            for (fd, watch) in side.watched() {
                let (flags, kind) = match watch {
                    Watch::Requests => (EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, CONN_REQ),
                    Watch::Events => (EpollFlags::EPOLLOUT, CONN_SPACE),
                };
                epoll.add(fd, ev(EpollFlags::EPOLLET | flags, kind))?;
            }
            Ok(())
        })();
        let conn = Conn {
            handle,
            sock,
            side,
            parked: false,
            held: false,
            stash: std::collections::VecDeque::new(),
            stash_bytes: 0,
            stash_fds: 0,
            stash_fds_full: false,
            hot: false,
            leaving: false,
            received: 0,
            // The first look counts as activity: the time runs from it.
            idle_mark: u64::MAX,
            idle_looks: 0,
        };
        if registered.is_err() {
            let _ = epoll.delete(&*conn.sock);
            for (fd, _) in conn.side.watched() {
                let _ = epoll.delete(fd);
            }
            return Err(Box::new(conn));
        }
        let polled = conn.side.polled();
        let at = self.conns.insert(conn);
        debug_assert_eq!(at, slot);
        if polled {
            self.polled.push(at);
        }
        self.make_hot(at);
        Ok(at)
    }

    /// Puts a connection in the sweep's list.
    pub(crate) fn make_hot(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.hot {
                c.hot = true;
                self.hot.push(slot);
            }
        }
    }

    /// Looks at the connections whose clients make room without a word
    /// (libqb's): sends what waited for room (responses held for their
    /// turn, owed notification bytes), and, with `unpark` (on the loop's
    /// tick), puts one that waited for room for an answer back in the
    /// sweep, which parks it again if there is still none. Returns
    /// whether one still waits: the tick must run.
    pub(crate) fn poll_quiet(&mut self, unpark: bool) -> bool {
        let mut waiting = false;
        for i in 0..self.polled.len() {
            let slot = self.polled[i];
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            let left = !c.handle.flush(false) | !c.handle.flush(true);
            waiting |= left || c.parked;
            if unpark && std::mem::take(&mut c.parked) {
                self.make_hot(slot);
            }
        }
        waiting
    }

    /// The idle timer's look: a connection that delivered no request in
    /// `looks` looks in a row is added to `dead`, as idle.
    pub(crate) fn look_for_idle(&mut self, looks: u32, dead: &mut Vec<(usize, Closing)>) {
        for (slot, c) in self.conns.iter_mut() {
            // A client whose requests wait for the server (parked for
            // room, held by the handler) is not idle; nor is one being
            // closed for another reason already.
            if c.parked || c.held || !c.handle.is_connected() {
                c.idle_looks = 0;
                continue;
            }
            if c.received != c.idle_mark {
                c.idle_mark = c.received;
                c.idle_looks = 0;
            } else {
                c.idle_looks += 1;
                if c.idle_looks >= looks {
                    // One that left (the loop not reading, or a stalled
                    // handler) is closed for that.
                    let why = if c.leaving {
                        Closing::Left
                    } else {
                        Closing::Idle
                    };
                    dead.push((slot, why));
                }
            }
        }
    }

    /// The handler can take this connection's requests again.
    pub(crate) fn resume(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            c.held = false;
        }
        self.make_hot(slot);
    }

    /// Puts every connection in the sweep's list (requests queued while
    /// the rate limit was `Off` signalled no one).
    pub(crate) fn make_all_hot(&mut self) {
        for slot in 0..self.conns.slots() {
            self.make_hot(slot);
        }
    }

    /// Reads every hot connection's waiting requests, at most `per_turn`
    /// from each (so that one busy client cannot starve the others), and
    /// hands each to `deliver` as a view of the ring or socket buffer.
    /// Returns whether any was delivered, and adds the connections to
    /// close (with why) to `dead`.
    pub(crate) fn sweep(
        &mut self,
        per_turn: usize,
        dead: &mut Vec<(usize, Closing)>,
        mut ready: impl FnMut(&Connection, i32) -> bool,
        mut deliver: impl FnMut(&Connection, MsgHeader, &[u8], PeerFds),
    ) -> bool {
        let mut did = false;
        for i in 0..self.hot.len() {
            let slot = self.hot[i];
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.parked || !conn.handle.is_connected() {
                continue;
            }
            // Requests stashed while held go first, in order.
            let mut budget = per_turn;
            while !conn.held && budget > 0 {
                let Some(id) = conn.stash.front().map(|(h, _, _)| h.id) else {
                    break;
                };
                if !ready(&conn.handle, id) {
                    conn.held = true;
                    break;
                }
                match answer_fits(&mut conn.leaving, &conn.handle, &mut conn.parked) {
                    Ok(true) => {
                        let (h, body, fds) = conn.stash.pop_front().expect("a request");
                        conn.stash_bytes -= body.len();
                        conn.stash_fds -= fds.len();
                        conn.stash_fds_full = false;
                        conn.received += 1;
                        deliver(&conn.handle, h, &body, fds);
                        did = true;
                        budget -= 1;
                    }
                    Ok(false) => break,
                    Err(closing) => {
                        dead.push((slot, closing));
                        budget = 0; // closing: nothing more read
                        break;
                    }
                }
            }
            if conn.parked || !conn.handle.is_connected() {
                continue;
            }
            let fd_room = conn.side.fd_terms().in_flight as usize;
            for _ in 0..budget {
                // Take a request only if its answer will fit; otherwise
                // leave it queued and park until the client makes room.
                let closing = match conn.side.request.try_recv() {
                    // Run dry: a client that left is gone once nothing it
                    // sent waits (the stash included).
                    Ok(None) if conn.leaving && !conn.held && conn.stash.is_empty() => {
                        Some(Closing::Left)
                    }
                    Ok(None) => break,
                    // A reply to a call: to its waiter, whatever the
                    // handler's readiness (a worker may be the waiter).
                    Ok(Some(incoming)) if incoming.header().is_reply() => {
                        let r = conn
                            .handle
                            .deliver_reply(&incoming.header(), incoming.payload());
                        incoming.release();
                        conn.received += 1;
                        match r {
                            Ok(()) => {
                                did = true;
                                continue;
                            }
                            Err(v) => Some(v.into()),
                        }
                    }
                    // Held (or requests stashed before it): to the stash, in
                    // order, so that replies behind it are read; the ring
                    // keeps the rest once the stash is full.
                    Ok(Some(mut incoming))
                        if conn.held
                            || !conn.stash.is_empty()
                            || !ready(&conn.handle, incoming.header().id) =>
                    {
                        conn.held = true;
                        let n = usize::from(incoming.header().fds());
                        if conn.stash.len() >= STASH_MAX
                            || conn.stash_bytes >= STASH_BYTES
                            || (n > 0 && conn.stash_fds + n > fd_room)
                        {
                            conn.stash_fds_full = n > 0 && conn.stash_fds + n > fd_room;
                            break;
                        }
                        let body = incoming.payload().to_vec();
                        conn.stash_bytes += body.len();
                        conn.stash_fds += n;
                        let fds = incoming.take_fds();
                        conn.stash.push_back((incoming.header(), body, fds));
                        incoming.release();
                        continue;
                    }
                    Ok(Some(mut incoming)) => {
                        match answer_fits(&mut conn.leaving, &conn.handle, &mut conn.parked) {
                            Ok(true) => {
                                conn.received += 1;
                                let fds = incoming.take_fds();
                                deliver(&conn.handle, incoming.header(), incoming.payload(), fds);
                                incoming.release();
                                did = true;
                                None
                            }
                            Ok(false) => break,
                            Err(closing) => Some(closing),
                        }
                    }
                    Err(TryRecvError::Closed) => Some(Closing::Left),
                    Err(TryRecvError::Violation(v)) => Some(v.into()),
                    Err(TryRecvError::Io(e)) => {
                        Some(Closing::Fault(FaultKind::SocketError(e.kind())))
                    }
                    Err(_) => Some(Closing::Left),
                };
                if let Some(closing) = closing {
                    dead.push((slot, closing));
                    break;
                }
                if !conn.handle.is_connected() {
                    break; // disconnected by the handler
                }
            }
            // Leaving the connection, with requests left or not (the
            // budget, a full response ring, the stash, a handler that
            // holds): the room read requests freed goes to the client
            // now, not at the next sweep.
            conn.side.request.publish_released();
            // A request's fds were fetched from the stream: the wake-ups
            // read with them count as read by `on_stream`.
            if conn.side.fd_inbox().is_some_and(|i| i.took_wakeups()) {
                conn.parked = false;
                conn.handle.woken();
                conn.handle.flush_events();
            }
        }
        did
    }

    /// Arms the wake-ups of the hot connections before the loop sleeps,
    /// turning them cold. Returns `false` if some still has requests (do
    /// not sleep).
    pub(crate) fn arm_all(&mut self) -> bool {
        // Raise every flag, pay the sleeper's fence once,
        // then check every ring: the handshake for all connections at the
        // price of one. Those still empty turn cold, armed, until epoll
        // brings them back; cold ones are armed already. Socket
        // connections need no arming (epoll watches them), but one left
        // readable by the rate limit has work.
        // A held connection stays armed while its stash takes more (the
        // replies behind its requests must be read).
        let stalled = |c: &Conn| c.parked || (c.held && c.stash_full());
        let live = |c: &Conn| !stalled(c) && !c.leaving && c.handle.is_connected();
        let mut prep = ringlink_ringbuf::wake::prepare_sleep();
        for &slot in &self.hot {
            if let Some(c) = self.conns.get_mut(slot).filter(|c| live(c)) {
                c.side.request.raise_wake_flag(&mut prep);
            }
        }
        let fenced = prep.fence();
        let mut sleep = true;
        let conns = &mut self.conns;
        self.hot.retain(|&slot| {
            let Some(c) = conns.get_mut(slot) else {
                return false;
            };
            // A client that left sends no wake-up: looked at until it
            // runs dry, unless the handler holds it (`resume` brings it
            // back).
            let busy = (c.leaving && !c.held && !c.parked && c.handle.is_connected())
                || (live(c) && !c.side.request.confirm_wake(&fenced));
            // A parked connection comes back with room (a wake-up).
            c.hot = busy;
            sleep &= !busy;
            busy
        });
        sleep
    }

    /// A connection's socket is readable or hung up: wake-up bytes from a
    /// ring client (it published a request, or freed room, while a flag
    /// was up), or the client left, died, or, over the socket transport,
    /// wrote on it (a violation). Returns why to close it, if so.
    ///
    /// The socket of a client whose wake-ups come on it (ringlink's rings,
    /// libqb's) that did not hang up most likely holds a wake-up: the
    /// connection turns hot (and unparked: the byte may say there is
    /// room) and its socket is read after the next sweep
    /// ([`read_streams`](Self::read_streams)), so that the request the
    /// byte announced is served before the `recv` that takes the byte.
    pub(crate) fn on_stream(
        &mut self,
        slot: usize,
        hung_up: bool,
        epoll: &Epoll,
    ) -> Option<Closing> {
        let c = self.conns.get_mut(slot)?;
        if c.leaving {
            // Heard already (the sweep may have found its rings closed
            // first): out of epoll, where a hang-up stays readable.
            let _ = epoll.delete(&*c.sock);
            return None;
        }
        if !hung_up && c.side.wakes_on_stream() {
            c.parked = false;
            self.unread.push(slot);
            self.make_hot(slot);
            return None;
        }
        self.read_stream(slot, hung_up, epoll)
    }

    /// Whether some stream socket waits for [`read_streams`](Self::read_streams).
    pub(crate) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Reads the stream sockets [`on_stream`](Self::on_stream) left for
    /// after the sweep; those to close go to `dead`.
    pub(crate) fn read_streams(&mut self, dead: &mut Vec<(usize, Closing)>, epoll: &Epoll) {
        let mut unread = std::mem::take(&mut self.unread);
        for slot in unread.drain(..) {
            if let Some(closing) = self.read_stream(slot, false, epoll) {
                dead.push((slot, closing));
            }
        }
        self.unread = unread;
    }

    /// Reads what a connection's stream socket holds (see
    /// [`on_stream`](Self::on_stream)). Returns why to close it, if so.
    fn read_stream(&mut self, slot: usize, hung_up: bool, epoll: &Epoll) -> Option<Closing> {
        let c = self.conns.get_mut(slot)?;
        if c.leaving {
            return None;
        }
        match stream::read_out(&c.sock, c.side.fd_inbox().map(|i| &**i)) {
            Drained::Gone => self.leave(slot, epoll),
            // Fds out of the service's terms: the rest of what it sent
            // does not matter.
            Drained::Fault(v) => Some(v.into()),
            Drained::Bytes(_) if c.side.wakes_on_stream() => {
                // A wake-up: look at its rings again, both ways, and tell
                // the threads waiting for room in them.
                c.parked = false;
                c.handle.woken();
                // Events kept for room go now.
                c.handle.flush_events();
                self.make_hot(slot);
                None
            }
            Drained::Bytes(_) => Some(Violation::DataOnStream.into()),
            Drained::Nothing if hung_up => self.leave(slot, epoll),
            Drained::Nothing => None,
            Drained::Failed => Some(Closing::Fault(FaultKind::SocketError(io::ErrorKind::Other))),
        }
    }

    /// The client hung up: its connection is served until what it sent
    /// runs dry ([`Conn::leaving`]), then closed as `Left`.
    fn leave(&mut self, slot: usize, epoll: &Epoll) -> Option<Closing> {
        let c = self.conns.get_mut(slot)?;
        mark_leaving(&mut c.leaving, &c.handle);
        c.parked = false;
        // Over sockets, dry only once a read says so (end, or nothing):
        // the request socket's edge may not have been reported yet.
        c.side.request.mark_readable();
        // Level-triggered, a hang-up would be reported at every wait.
        let _ = epoll.delete(&*c.sock);
        self.make_hot(slot);
        None
    }

    /// A socket-transport connection's socket is ready: its request
    /// socket readable (requests) or writable (a response's tail may go),
    /// or its event socket writable.
    pub(crate) fn on_socket(&mut self, slot: usize, watch: Watch, readable: bool, writable: bool) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let hot = match watch {
            Watch::Requests => {
                if readable {
                    c.side.request.mark_readable();
                }
                if writable && c.handle.flush(false) {
                    c.parked = false;
                }
                // Not readable, the sweep finds it dry without a system
                // call, and the arming turns it cold again.
                !c.parked
            }
            Watch::Events => {
                c.handle.flush(true);
                false
            }
        };
        if hot {
            self.make_hot(slot);
        }
    }

    /// Publishes a flow-control level to every client (`changed`: it
    /// differs from the last), waking those that wait for it.
    pub(crate) fn publish_level(&mut self, level: u32, changed: bool) {
        for slot in 0..self.conns.slots() {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            if changed {
                c.handle.set_flow_control(level > 0, true);
            }
            c.side.publish_level(level, changed, &c.sock);
        }
    }

    /// Takes a connection out, its fds out of `epoll`.
    pub(crate) fn remove(&mut self, slot: usize, epoll: &Epoll) -> Option<Conn> {
        let c = self.conns.remove(slot)?;
        if c.hot {
            self.hot.retain(|&s| s != slot);
        }
        if c.side.polled() {
            self.polled.retain(|&s| s != slot);
        }
        // Not read for the next connection in this slot.
        self.unread.retain(|&s| s != slot);
        let _ = epoll.delete(&*c.sock);
        for (fd, _) in c.side.watched() {
            let _ = epoll.delete(fd);
        }
        Some(c)
    }

    /// Every slot that may hold a connection.
    pub(crate) fn slots(&self) -> usize {
        self.conns.slots()
    }
}

/// [`flow::answer_fits`], but a client that left is not waited for:
/// nobody reads its answers, and a full ring would park it for good. A
/// response ring the client closed says it left (its socket may not
/// have said so yet): it is `leaving` from here.
fn answer_fits(
    leaving: &mut bool,
    handle: &Connection,
    parked: &mut bool,
) -> Result<bool, Closing> {
    if *leaving {
        return Ok(true);
    }
    match flow::answer_fits(handle, parked) {
        Err(Closing::Left) => {
            mark_leaving(leaving, handle);
            Ok(true)
        }
        r => r,
    }
}

/// A connection turns leaving ([`Conn::leaving`]): calls to its client
/// get no reply, so they fail with `Disconnected` now, as they did when
/// the connection closed at the hang-up.
fn mark_leaving(leaving: &mut bool, handle: &Connection) {
    *leaving = true;
    handle.client_left();
}

impl Conn {
    /// Marks the connection's channels closed (rings: both bits; sockets:
    /// shut down) and its handle dead, before anyone hears of it: from
    /// here every send fails with `Disconnected`, a thread blocked
    /// sending wakes, and the client still reads what was published.
    pub(crate) fn close(&self) {
        self.handle.mark_closed();
        self.side.close();
    }

    /// Releases everything the connection holds: the senders taken from
    /// the handle (so that clones held by the application keep no mapping
    /// or fd), the rings unmapped, the sockets closed where their closing
    /// cannot hold the loop.
    pub(crate) fn release(self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let senders = self.handle.take_senders();
        self.side.release(senders.into_iter().flatten());
        // The rings (which held the stream socket for their wake-ups) are
        // gone: the last handle closes here.
        stream::release(self.sock);
    }
}
