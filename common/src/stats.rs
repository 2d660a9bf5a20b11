//! Statistics snapshots of a service and its connections.

use std::time::SystemTime;

/// Handshakes refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rejections {
    /// The accept handler said no.
    pub permission_denied: u64,
    /// Unknown protocol id.
    pub unknown_protocol: u64,
    /// Unsupported protocol version.
    pub version_mismatch: u64,
    /// The service was full.
    pub too_many_clients: u64,
    /// Rings could not be made.
    pub resources: u64,
    /// Malformed request.
    pub bad_request: u64,
    /// The client wanted the other transport.
    pub transport_mismatch: u64,
    /// The client's user had as many connections as
    /// `max_clients_per_uid` allows.
    pub user_quota: u64,
    /// The client's process had as many connections as
    /// `max_clients_per_pid` allows.
    pub process_quota: u64,
    /// Handshakes dropped: deadline passed, client left half-way, or
    /// evicted to make room for newer ones.
    pub abandoned: u64,
}

/// A service's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ServiceStats {
    /// Connections open now (never cleared).
    pub active_connections: u64,
    /// Connections closed.
    pub closed_connections: u64,
    /// Handshakes refused or dropped, by reason.
    pub rejected: Rejections,
}

/// One connection's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConnectionStats {
    /// Server-assigned connection id.
    pub id: u64,
    /// The client's process id.
    pub client_pid: i32,
    /// Requests dispatched to the handler.
    pub requests: u64,
    /// Responses sent.
    pub responses: u64,
    /// Events sent.
    pub events: u64,
    /// Request payload bytes received.
    pub bytes_received: u64,
    /// Response and event payload bytes sent.
    pub bytes_sent: u64,
    /// Responses or events refused because the client's ring was full.
    pub send_retries: u64,
    /// Events dropped by the connection's event queue policy
    /// (`ServiceOptions::event_queue`); the client was told of each gap.
    pub events_dropped: u64,
    /// Events waiting in the connection's event queue (not yet in the
    /// client's ring).
    pub events_backlogged: u64,
    /// Times the server left requests waiting because the client's
    /// response ring had no room for an answer.
    pub recv_retries: u64,
    /// Whether the server holds this client's requests back now.
    pub flow_control: bool,
    /// Times flow control went on or off.
    pub flow_control_changes: u64,
    /// Bytes of events sent and not yet read by the client (computed when
    /// read).
    pub event_queue_bytes: u64,
    /// Events sent and not yet read, counted, where the transport counts
    /// them (libqb's `event_q_length`: its ring's semaphore, or its
    /// socket transport's control file); `None` over ringlink's own.
    pub events_queued: Option<u64>,
    /// When the handshake completed.
    pub connected_at: SystemTime,
}

/// A client's counters for its connection (`Client::stats`), the
/// mirror of the server's [`ConnectionStats`] (miniRPC keeps both sides'
/// counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClientStats {
    /// Requests sent, one-way ones included.
    pub requests: u64,
    /// Of which one-way.
    pub one_way: u64,
    /// Responses received.
    pub responses: u64,
    /// Events received.
    pub events: u64,
    /// Request payload bytes sent.
    pub bytes_sent: u64,
    /// Response and event payload bytes received.
    pub bytes_received: u64,
    /// Sends that found no room (the ring full, or flow control holding
    /// them): each wait or `WouldBlock` counts once.
    pub send_retries: u64,
    /// Events the server said it dropped (`Error::Lagged`), summed.
    pub events_lagged: u64,
    /// Calls from the server served (answered or refused).
    pub calls: u64,
}
