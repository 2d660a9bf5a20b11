//! A live client connection, as the application sees it.

use std::any::Any;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use std::time::Instant;

use ringlink_common::seqpacket::{self, SendError, SockTx};
use ringlink_common::wire::{MsgHeader, MSG_HEADER_LEN};
use ringlink_common::{ConnectionStats, Credentials, Error, Result, Transport};
use ringlink_ringbuf::{Producer, PushError};

use crate::control::Control;

/// A client connection: cheap to clone, `Send + Sync`. Responses and
/// events can be sent from any thread, at any time until the connection
/// closes (after which they fail with [`Error::Disconnected`]).
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<ConnInner>,
}

pub(crate) struct ConnInner {
    pub(crate) id: u64,
    pub(crate) slot: usize,
    pub(crate) credentials: Credentials,
    pub(crate) max_message: usize,
    pub(crate) transport: Transport,
    pub(crate) connected_at: SystemTime,
    /// Server → client rings or sockets. `None` once the connection is
    /// destroyed, so that clones held by the application keep no mapping
    /// or fd alive.
    pub(crate) response: Mutex<Option<Tx>>,
    pub(crate) event: Mutex<Option<Tx>>,
    pub(crate) alive: AtomicBool,
    pub(crate) context: RwLock<Option<Arc<dyn Any + Send + Sync>>>,
    pub(crate) control: Arc<Control>,
    pub(crate) counters: Counters,
    /// Wake-ups from the client, for threads other than the loop waiting
    /// for room in its rings (`send_event_timeout`): the loop alone reads
    /// the connection's socket, and tells them here.
    pub(crate) wakeups: Wakeups,
}

/// A count of the wake-ups the loop read from a connection's socket (and
/// its closing), that threads waiting for room in a ring sleep on. The
/// socket itself is read by the loop alone: a second reader would take
/// wake-ups meant for it, and the other way round.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    seen: Mutex<u64>,
    changed: Condvar,
}

impl Wakeups {
    /// The count now: read before raising a waiting flag, then handed to
    /// [`wait`](Self::wait), so that a wake-up that comes in between is
    /// not missed.
    pub(crate) fn count(&self) -> u64 {
        *lock(&self.seen)
    }

    /// A wake-up came (or the connection closed): wakes every waiter.
    pub(crate) fn notify(&self) {
        *lock(&self.seen) += 1;
        self.changed.notify_all();
    }

    /// Sleeps until the count moves past `seen`, or `deadline`.
    fn wait(&self, seen: u64, deadline: Instant) {
        let mut now = lock(&self.seen);
        while *now == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            now = self
                .changed
                .wait_timeout(now, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A connection's statistics, updated by the loop and by senders on any
/// thread (relaxed atomics: they count, they order nothing).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) responses: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) send_retries: AtomicU64,
    pub(crate) recv_retries: AtomicU64,
    pub(crate) flow_control: AtomicBool,
    pub(crate) flow_control_changes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn read(counter: &AtomicU64, clear: bool) -> u64 {
        if clear {
            counter.swap(0, Ordering::Relaxed)
        } else {
            counter.load(Ordering::Relaxed)
        }
    }
}

/// The sending end of a server → client channel.
pub(crate) enum Tx {
    /// A shared-memory ring.
    Ring(Producer),
    /// A `SOCK_SEQPACKET` socket (the socket transport).
    Sock(SockTx),
}

impl Tx {
    /// Bytes sent and not yet read by the client.
    fn queued(&self) -> usize {
        match self {
            Tx::Ring(p) => p.pending_bytes(),
            Tx::Sock(s) => s.queued(),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another sender cannot leave a producer half-updated (its
    // state changes only in `commit`), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    /// The server-assigned connection id (unique for the service's life).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The transport the connection's messages travel over.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The client's kernel-verified credentials.
    pub fn credentials(&self) -> Credentials {
        self.inner.credentials
    }

    /// Largest payload of a message on this connection, either way.
    pub fn max_message(&self) -> usize {
        self.inner.max_message
    }

    /// When the handshake completed.
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.inner.alive.load(Ordering::Acquire)
    }

    /// The connection's statistics; with `clear`, the counters restart
    /// from zero (the flow-control state and queue length are not
    /// counters and are not cleared).
    pub fn stats(&self, clear: bool) -> ConnectionStats {
        let c = &self.inner.counters;
        let event_queue_bytes = lock(&self.inner.event)
            .as_ref()
            .map_or(0, |p| p.queued() as u64);
        ConnectionStats {
            id: self.inner.id,
            client_pid: self.inner.credentials.pid,
            requests: Counters::read(&c.requests, clear),
            responses: Counters::read(&c.responses, clear),
            events: Counters::read(&c.events, clear),
            bytes_received: Counters::read(&c.bytes_received, clear),
            bytes_sent: Counters::read(&c.bytes_sent, clear),
            send_retries: Counters::read(&c.send_retries, clear),
            recv_retries: Counters::read(&c.recv_retries, clear),
            flow_control: c.flow_control.load(Ordering::Relaxed),
            flow_control_changes: Counters::read(&c.flow_control_changes, clear),
            event_queue_bytes,
            connected_at: self.inner.connected_at,
        }
    }

    /// Attaches the application's per-connection state, replacing any.
    pub fn set_context<T: Any + Send + Sync>(&self, value: T) {
        *self
            .inner
            .context
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(value));
    }

    /// The per-connection state, if one of type `T` was set.
    pub fn context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let ctx = self.inner.context.read().unwrap_or_else(|e| e.into_inner());
        ctx.as_ref()?.clone().downcast::<T>().ok()
    }

    /// Sends the response to request `seq` (see
    /// [`Request::seq`](crate::Request::seq)), without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] (nothing sent); [`Error::WouldBlock`] if
    /// the client's response ring is full; [`Error::Disconnected`].
    pub fn respond(&self, seq: u64, id: i32, payload: &[u8]) -> Result<()> {
        self.respond_vectored(seq, id, 0, &[IoSlice::new(payload)])
    }

    /// Sends a response with an error code and a payload made of several
    /// slices, without waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn respond_vectored(
        &self,
        seq: u64,
        id: i32,
        error: i32,
        parts: &[IoSlice<'_>],
    ) -> Result<()> {
        let h = MsgHeader {
            id,
            size: 0,
            error,
            seq,
        };
        self.send(Ring::Response, h, parts, None)
    }

    /// Sends an event (an unsolicited message) to the client, without
    /// waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn send_event(&self, id: i32, payload: &[u8]) -> Result<()> {
        self.send_event_vectored(id, &[IoSlice::new(payload)])
    }

    /// Sends an event made of several slices, without waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn send_event_vectored(&self, id: i32, parts: &[IoSlice<'_>]) -> Result<()> {
        let h = MsgHeader {
            id,
            size: 0,
            error: 0,
            seq: 0,
        };
        self.send(Ring::Event, h, parts, None)
    }

    /// Sends an event, waiting up to `timeout` for room in the client's
    /// event ring. The wait ends when the loop reads a wake-up from the
    /// client (it frees room), so the service's loop must be running on
    /// another thread: do not call this from a handler, where the loop
    /// would stop serving everyone and the wait would last its whole
    /// timeout.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond), with [`Error::TimedOut`] instead of
    /// `WouldBlock`.
    pub fn send_event_timeout(&self, id: i32, payload: &[u8], timeout: Duration) -> Result<()> {
        let h = MsgHeader {
            id,
            size: 0,
            error: 0,
            seq: 0,
        };
        self.send(Ring::Event, h, &[IoSlice::new(payload)], Some(timeout))
    }

    /// Closes the connection from the server side. Takes effect on the
    /// loop's next turn (at once if called from a handler, before the next
    /// request is dispatched); the client sees `Disconnected`.
    pub fn disconnect(&self) {
        self.condemn(None);
    }

    /// Closes the connection on the loop's next turn, reporting `fault`
    /// (a protocol violation by the client) to the error hook if given.
    fn condemn(&self, fault: Option<String>) {
        if self.inner.alive.swap(false, Ordering::AcqRel) {
            self.inner
                .control
                .request_disconnect(self.inner.id, self.inner.slot, fault);
        }
    }
}

/// Which server → client ring.
#[derive(Clone, Copy)]
enum Ring {
    Response,
    Event,
}

impl Connection {
    /// Sends one message and counts it (or its refusal).
    fn send(
        &self,
        ring: Ring,
        header: MsgHeader,
        parts: &[IoSlice<'_>],
        timeout: Option<Duration>,
    ) -> Result<()> {
        let (producer, sent) = match ring {
            Ring::Response => (&self.inner.response, &self.inner.counters.responses),
            Ring::Event => (&self.inner.event, &self.inner.counters.events),
        };
        let c = &self.inner.counters;
        if !self.is_connected() {
            return Err(Error::Disconnected);
        }
        let name = match ring {
            Ring::Response => "response",
            Ring::Event => "event",
        };
        match write_message(
            producer,
            &self.inner.wakeups,
            name,
            self.inner.max_message,
            header,
            parts,
            timeout,
        ) {
            Ok(len) => {
                Counters::add(sent, 1);
                Counters::add(&c.bytes_sent, len as u64);
                Ok(())
            }
            Err(e) => {
                match &e {
                    Error::WouldBlock | Error::TimedOut => Counters::add(&c.send_retries, 1),
                    // The client broke its ring: it is dropped like one
                    // that broke its requests (PROTOCOL.md, section 5).
                    Error::Protocol(why) => self.condemn(Some(why.clone())),
                    _ => {}
                }
                Err(e)
            }
        }
    }
}

/// Writes one message: header, then the parts. Returns the payload
/// length.
fn write_message(
    ring: &Mutex<Option<Tx>>,
    wakeups: &Wakeups,
    name: &str,
    max: usize,
    mut header: MsgHeader,
    parts: &[IoSlice<'_>],
    timeout: Option<Duration>,
) -> Result<usize> {
    let len = ringlink_common::wire::payload_len(parts, max)?;
    header.size = len as u32;
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let mut guard = lock(ring);
        let tx = match guard.as_mut().ok_or(Error::Disconnected)? {
            Tx::Ring(producer) => {
                let seen = wakeups.count();
                if write_record(producer, name, header, parts, max)? {
                    return Ok(len);
                }
                let Some(deadline) = deadline else {
                    return Err(Error::WouldBlock);
                };
                if Instant::now() >= deadline {
                    return Err(Error::TimedOut);
                }
                // Full: raise the ring's waiting flag, so that the client
                // sends a wake-up when it frees room, and sleep until the
                // loop reports one; without the lock, which the loop
                // takes. The count was read before the flag went up.
                if producer.prepare_sleep() {
                    drop(guard);
                    wakeups.wait(seen, deadline);
                } else {
                    // Room appeared, and the failed arm lowered the flag,
                    // which another thread waiting here may have raised:
                    // it looks again too.
                    wakeups.notify();
                }
                continue;
            }
            Tx::Sock(tx) => tx,
        };
        match tx.try_send(&header, parts) {
            Ok(()) => return Ok(len),
            Err(SendError::WouldBlock) => {}
            Err(SendError::Closed) => return Err(Error::Disconnected),
            Err(SendError::Io(e)) => return Err(Error::Io(e)),
        }
        let Some(deadline) = deadline else {
            return Err(Error::WouldBlock);
        };
        if Instant::now() >= deadline {
            return Err(Error::TimedOut);
        }
        // Wait without the lock: the loop flushes this socket's tails
        // under it, and must not wait for a slow client on our account.
        let fd = tx.fd().try_clone_to_owned()?;
        drop(guard);
        let mut fds = [nix::poll::PollFd::new(fd.as_fd(), seqpacket::WRITABLE)];
        seqpacket::poll_until(&mut fds, Some(deadline))?;
    }
}

/// Writes one record if there is room now: `Ok(false)` if the ring is
/// full.
fn write_record(
    producer: &mut Producer,
    name: &str,
    header: MsgHeader,
    parts: &[IoSlice<'_>],
    max: usize,
) -> Result<bool> {
    let len = header.size as usize;
    let total = MSG_HEADER_LEN + len;
    let mut grant = match producer.try_reserve(total) {
        Ok(grant) => grant,
        Err(PushError::Full) => return Ok(false),
        Err(PushError::TooLarge { .. }) => return Err(Error::MessageTooLarge { len, max }),
        Err(PushError::Corrupt(c)) => {
            return Err(Error::protocol(
                &format!("client corrupted its {name} ring"),
                c,
            ))
        }
        Err(_) => return Err(Error::Disconnected),
    };
    header.encode_record(&mut grant, parts);
    grant.commit();
    Ok(true)
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("credentials", &self.inner.credentials)
            .field("max_message", &self.inner.max_message)
            .field("alive", &self.is_connected())
            .finish_non_exhaustive()
    }
}
