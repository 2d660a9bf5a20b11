//! What a service is built with.

use std::time::Duration;

use ringlink_common::wire::Transport;

/// Where and how a service listens, and the limits it enforces.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServiceOptions {
    /// Largest message payload the server allows (a client asking for
    /// more gets this). Bounds what one client can make the server
    /// allocate. Default 1 MiB.
    pub max_message: usize,
    /// Smallest message payload every connection supports, whatever the
    /// client asks (libqb's enforced buffer size). Default 64 KiB.
    pub min_message: usize,
    /// Most live connections; further clients get `TooManyClients`.
    /// Default 1024.
    pub max_clients: usize,
    /// Most handshakes in progress at once; past it the oldest is dropped
    /// to make room, so stalled clients cannot lock others out. Default
    /// 1024.
    pub max_handshakes: usize,
    /// Listen backlog. Default 128.
    pub backlog: i32,
    /// Permissions of a filesystem socket (ignored for abstract names).
    /// Default 0o600.
    pub socket_mode: u32,
    /// Time a client has to complete the handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// How long the loop keeps polling the rings after its last piece of
    /// work before it sleeps in epoll. Default
    /// [`ringlink_ringbuf::DEFAULT_SPIN`].
    pub spin: Duration,
    /// Transport offered to clients.
    pub transport: Transport,
}

impl Default for ServiceOptions {
    fn default() -> ServiceOptions {
        ServiceOptions {
            max_message: 1 << 20,
            min_message: 64 << 10,
            max_clients: 1024,
            max_handshakes: 1024,
            backlog: 128,
            socket_mode: 0o600,
            handshake_timeout: Duration::from_secs(5),
            spin: ringlink_ringbuf::DEFAULT_SPIN,
            transport: Transport::Shm,
        }
    }
}

impl ServiceOptions {
    /// The payload size a connection gets when its client asks for
    /// `wanted` bytes: at least `min_message`, at most `max_message`.
    pub fn negotiate(&self, wanted: u32) -> usize {
        (wanted as usize)
            .max(self.min_message)
            .min(self.max_message)
    }
}
