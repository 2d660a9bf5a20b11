//! The client's side of flow control (`docs/PROTOCOL.md` §4): where the
//! server's level is read, and whether it holds sends back. Computed here
//! once, for the blocking and the async client alike.

use ringlink_channel::set::ClientSide;

use crate::stream::Stream;

/// The application's threshold (`ConnectOptions::fc_enable_max`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flow {
    threshold: u32,
}

impl Flow {
    /// Sends are held back while the level is above 0 and at most
    /// `threshold` ([`holds`](Self::holds)); 0 ignores flow control.
    pub(crate) fn new(threshold: u32) -> Flow {
        Flow { threshold }
    }

    /// Whether flow control is respected at all.
    pub(crate) fn enabled(self) -> bool {
        self.threshold != 0
    }

    /// Whether `level` holds sends back: libqb's rule, `0 < level <=
    /// fc_enable_max` (levels: 0 reading, 1 `RateLimit::Off`, 2
    /// `RateLimit::Off2`).
    pub(crate) fn holds(self, level: u32) -> bool {
        ringlink_common::qb::holds(level.min(i32::MAX as u32) as i32, self.threshold)
    }
}

/// The server's flow-control level as last seen: the request ring's user
/// word (shared memory), or the last byte read from the stream socket
/// (socket transport; read it first to be current).
pub(crate) fn level(side: &ClientSide, stream: &Stream) -> u32 {
    side.level().unwrap_or_else(|| stream.level())
}
