//! Statistics snapshots of a service and its connections.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

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
///
/// Its `Debug` shows `connected_at` as an RFC 3339 UTC time
/// (`2026-03-01T12:00:00.250000000Z`), not as the clock's raw fields.
#[derive(Clone, Copy, PartialEq, Eq)]
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

impl fmt::Debug for ConnectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field named, so that a new one cannot be left out here.
        let Self {
            id,
            client_pid,
            requests,
            responses,
            events,
            bytes_received,
            bytes_sent,
            send_retries,
            events_dropped,
            events_backlogged,
            recv_retries,
            flow_control,
            flow_control_changes,
            event_queue_bytes,
            events_queued,
            connected_at,
        } = self;
        f.debug_struct("ConnectionStats")
            .field("id", id)
            .field("client_pid", client_pid)
            .field("requests", requests)
            .field("responses", responses)
            .field("events", events)
            .field("bytes_received", bytes_received)
            .field("bytes_sent", bytes_sent)
            .field("send_retries", send_retries)
            .field("events_dropped", events_dropped)
            .field("events_backlogged", events_backlogged)
            .field("recv_retries", recv_retries)
            .field("flow_control", flow_control)
            .field("flow_control_changes", flow_control_changes)
            .field("event_queue_bytes", event_queue_bytes)
            .field("events_queued", events_queued)
            .field("connected_at", &Utc(*connected_at))
            .finish()
    }
}

/// A time shown as RFC 3339 in UTC, to the nanosecond
/// (`1970-01-01T00:00:00.000000000Z`); outside the years 0 to 9999, which
/// RFC 3339 cannot write, as signed seconds since the Unix epoch.
struct Utc(SystemTime);

impl fmt::Debug for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whole seconds since the epoch, rounded down, and the nanoseconds
        // after them (a time before the epoch too).
        let (secs, nanos) = match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let secs = -i128::from(d.as_secs());
                match d.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs - 1, 1_000_000_000 - n),
                }
            }
        };
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        if !(0..=9999).contains(&year) {
            return write!(f, "{secs}.{nanos:09}s since the Unix epoch");
        }
        let second = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            second / 3600,
            second / 60 % 60,
            second % 60,
        )
    }
}

/// The proleptic Gregorian date (year, month, day) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097); // 400-year eras from 0000-03-01
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn utc(t: SystemTime) -> String {
        format!("{:?}", Utc(t))
    }

    fn stats(connected_at: SystemTime) -> ConnectionStats {
        ConnectionStats {
            id: 7,
            client_pid: 4242,
            requests: 1,
            responses: 2,
            events: 3,
            bytes_received: 4,
            bytes_sent: 5,
            send_retries: 6,
            events_dropped: 0,
            events_backlogged: 0,
            recv_retries: 0,
            flow_control: false,
            flow_control_changes: 0,
            event_queue_bytes: 0,
            events_queued: None,
            connected_at,
        }
    }

    #[test]
    fn debug_shows_the_connection_time_as_rfc3339() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
        let shown = format!("{:?}", stats(at));
        assert!(!shown.contains("tv_sec"), "{shown}");
        assert!(
            shown.contains("connected_at: 2023-11-14T22:13:20.250000000Z"),
            "{shown}"
        );
        assert!(shown.starts_with("ConnectionStats { id: 7, client_pid: 4242,"));
        // The alternate form too, and a time taken from the clock.
        let now = format!("{:#?}", stats(SystemTime::now()));
        assert!(!now.contains("tv_sec"), "{now}");
    }

    #[test]
    fn times_as_rfc3339() {
        let secs = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(utc(secs(951_782_400)), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(utc(secs(1_709_164_799)), "2024-02-28T23:59:59.000000000Z");
        assert_eq!(utc(secs(1_709_164_800)), "2024-02-29T00:00:00.000000000Z");
        assert_eq!(utc(secs(253_402_300_799)), "9999-12-31T23:59:59.000000000Z");
        // Before the epoch, the fraction still counts forward.
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(utc(before), "1969-12-31T23:59:58.750000000Z");
        assert_eq!(
            utc(UNIX_EPOCH - Duration::from_secs(86_400)),
            "1969-12-31T00:00:00.000000000Z"
        );
        // Past what RFC 3339 writes.
        assert_eq!(
            utc(secs(253_402_300_800)),
            "253402300800.000000000s since the Unix epoch"
        );
    }
}
