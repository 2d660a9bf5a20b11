//! The server's side of flow control: the rate it reads requests at, the
//! level it publishes to clients (`docs/PROTOCOL.md` §4), and the rule
//! that a request is taken only when its answer fits.

use std::io;

use ringlink_channel::TrySendError;
use ringlink_common::RateLimit;

use crate::hooks::{Closing, FaultKind};
use crate::Connection;

/// The rate limit the loop applies (the one asked for is in the
/// service's `Remote`, written by any thread).
#[derive(Debug, Default)]
pub(crate) struct Flow {
    rate: RateLimit,
}

/// What a new rate changes for the clients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change {
    /// The level to publish.
    pub(crate) level: u32,
    /// Whether it differs from the last one published.
    pub(crate) changed: bool,
    /// Requests are read again after `Off`: those queued meanwhile
    /// signalled no one, so every connection must be looked at.
    pub(crate) resumed: bool,
}

impl Flow {
    /// The rate applied.
    pub(crate) fn rate(&self) -> RateLimit {
        self.rate
    }

    /// Whether requests are read at all.
    pub(crate) fn reading(&self) -> bool {
        self.rate.reads()
    }

    /// The level clients see now: 0 while requests are read, 1 while not.
    pub(crate) fn level(&self) -> u32 {
        self.rate.flow_control_level()
    }

    /// Applies `rate` if it is new.
    pub(crate) fn apply(&mut self, rate: RateLimit) -> Option<Change> {
        if rate == self.rate {
            return None;
        }
        let change = Change {
            level: rate.flow_control_level(),
            changed: rate.flow_control_level() != self.level(),
            resumed: !self.rate.reads() && rate.reads(),
        };
        self.rate = rate;
        Some(change)
    }
}

/// Whether the connection's response channel has room for a full-size
/// answer (and, to a client that takes fds, for a full message's worth
/// of them within its in-flight limit); if not, parks the connection (`parked`), its wake-up armed: a
/// wake-up from the client, or the socket's writability, brings it back.
/// `Err` if the client corrupted its ring, or closed it.
pub(crate) fn answer_fits(handle: &Connection, parked: &mut bool) -> Result<bool, Closing> {
    // Most of the time the last send left room enough, and said so: no
    // lock, and nothing read that the client writes.
    if handle.answer_surely_fits() {
        return Ok(true);
    }
    let max = handle.max_message();
    handle.with_response(|tx| {
        let Some(tx) = tx else {
            return Ok(false);
        };
        // Until there is room or the wake-up is armed: a failed arm lowered
        // the flag again (the client freed room meanwhile), and a parked
        // connection must not go cold without its wake-up.
        let fds = usize::from(tx.fd_terms().per_message);
        loop {
            match tx.room_for(max) {
                Ok(true) if tx.fd_room_for(fds) => return Ok(true),
                Ok(true) => {}
                Ok(false) => {}
                Err(TrySendError::Violation(v)) => return Err(v.into()),
                // The client closed its end (it left): `Connections` then
                // serves what it sent before.
                Err(TrySendError::Closed) => return Err(Closing::Left),
                Err(TrySendError::Io(e)) => {
                    return Err(Closing::Fault(FaultKind::SocketError(e.kind())))
                }
                // A room check sends nothing: no other error can come.
                Err(_) => return Err(Closing::Fault(FaultKind::SocketError(io::ErrorKind::Other))),
            }
            if tx.prepare_sleep() {
                *parked = true;
                handle.count_recv_retry();
                return Ok(false);
            }
            // Room appeared, and the failed arm lowered the flag, which a
            // thread waiting for room in this channel (a call, a send with
            // a timeout) may have raised: it must look again, as no
            // wake-up will come for it now.
            handle.woken();
        }
    })
}
