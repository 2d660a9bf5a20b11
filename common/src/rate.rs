//! Rate limiting of a service's request intake (libqb's
//! `QB_IPCS_RATE_*`).

/// How many requests the server takes from each connection per loop turn,
/// or none at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RateLimit {
    /// Up to [`FAST_PER_TURN`](RateLimit::FAST_PER_TURN) requests per
    /// connection per turn.
    Fast = 0,
    /// Up to [`NORMAL_PER_TURN`](RateLimit::NORMAL_PER_TURN) (the
    /// default).
    #[default]
    Normal = 1,
    /// Up to [`SLOW_PER_TURN`](RateLimit::SLOW_PER_TURN).
    Slow = 2,
    /// No requests are read: clients see flow control (their sends return
    /// `WouldBlock` or wait) and then full rings; nothing is lost, and the
    /// server spends no CPU on their requests.
    Off = 3,
    /// As `Off`, but the flow-control level clients see is 2 (libqb's
    /// `QB_IPCS_RATE_OFF_2`): only clients whose threshold is 2 or more
    /// hold their sends (libqb's default threshold is 1); the others
    /// send until their rings are full.
    Off2 = 4,
}

impl RateLimit {
    /// Requests per connection per turn at `Fast`.
    pub const FAST_PER_TURN: usize = 256;
    /// Requests per connection per turn at `Normal`.
    pub const NORMAL_PER_TURN: usize = 64;
    /// Requests per connection per turn at `Slow`.
    pub const SLOW_PER_TURN: usize = 8;

    /// Requests one connection may have dispatched per loop turn.
    pub fn per_turn(self) -> usize {
        match self {
            RateLimit::Fast => Self::FAST_PER_TURN,
            RateLimit::Normal => Self::NORMAL_PER_TURN,
            RateLimit::Slow => Self::SLOW_PER_TURN,
            RateLimit::Off | RateLimit::Off2 => 0,
        }
    }

    /// The flow-control level published to clients: 0 while requests
    /// are read, 1 at `Off`, 2 at `Off2` (libqb's levels). A client with
    /// threshold `t` holds its sends while `0 < level <= t`.
    pub fn flow_control_level(self) -> u32 {
        match self {
            RateLimit::Off => 1,
            RateLimit::Off2 => 2,
            _ => 0,
        }
    }

    /// Whether requests are read at all.
    pub fn reads(self) -> bool {
        self.per_turn() > 0
    }

    /// The inverse of `self as u8`.
    pub fn from_u8(v: u8) -> Option<RateLimit> {
        Some(match v {
            0 => RateLimit::Fast,
            1 => RateLimit::Normal,
            2 => RateLimit::Slow,
            3 => RateLimit::Off,
            4 => RateLimit::Off2,
            _ => return None,
        })
    }
}
