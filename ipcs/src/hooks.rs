//! The trace and error hooks (lwmsg's trace and exception functions):
//! what they see, and the handler call between the trace hook's two
//! calls.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use ringlink_common::fdpass::PeerFds;
use ringlink_common::wire::MsgHeader;
use ringlink_common::Violation;

use crate::{Connection, Handler, Request};

/// The trace hook: called at the start and the end of each dispatched
/// request, and when its response goes, from whichever thread sends it.
pub(crate) type TraceHook = dyn Fn(&Trace<'_>) + Send + Sync;
/// The error hook: called for failures the loop handles on its own.
pub(crate) type ErrorHook = dyn Fn(&Fault<'_>) + Send;

/// What the trace hook sees of a dispatched request.
#[derive(Debug)]
pub struct Trace<'a> {
    /// The connection the request came on.
    pub connection: &'a Connection,
    /// The request's message id.
    pub id: i32,
    /// The request's sequence number.
    pub seq: u64,
    /// Start or end of the handler call.
    pub stage: TraceStage,
}

/// The two moments the trace hook is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceStage {
    /// Before the handler runs.
    Start,
    /// After it returned.
    End {
        /// Time spent in the handler.
        duration: Duration,
        /// Whether a response was sent on the connection while the
        /// handler ran (synchronous completion).
        responded: bool,
        /// Whether the handler disconnected the client.
        disconnected: bool,
    },
    /// The response went to the client (handed to its ring or socket;
    /// on a libqb connection, to the queue that puts responses in request
    /// order), from whichever thread answered, with its error code: the
    /// end of the request as the client sees it. Not for requests that
    /// get no response.
    Responded {
        /// The response's error code.
        error: i32,
    },
}

/// What the error hook sees: a failure, and the connection it ended, if
/// any. Its `Display` says it in words.
#[derive(Debug)]
pub struct Fault<'a> {
    /// The connection concerned (it has been disconnected), if any.
    pub connection: Option<&'a Connection>,
    /// What went wrong.
    pub kind: FaultKind,
}

/// What went wrong, as a value to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// The client broke the protocol; it was disconnected.
    Violation(Violation),
    /// A system call failed on a client's socket; it was disconnected.
    SocketError(io::ErrorKind),
    /// `accept(2)` failed (out of fds or memory): listening is paused
    /// until a connection or a handshake ends.
    AcceptFailed(io::ErrorKind),
    /// A connection's channels could not be made (out of fds or memory):
    /// its client was refused with `Resources`.
    ChannelsFailed(io::ErrorKind),
    /// The handler panicked on one of the connection's requests, on the
    /// service's loop thread: the panic was caught, the connection
    /// closed, and the service goes on (with `panic = "abort"` the
    /// process aborts, as any panic does).
    HandlerPanicked,
}

impl Fault<'_> {
    /// The protocol violation, if that is what it is.
    pub fn violation(&self) -> Option<Violation> {
        match self.kind {
            FaultKind::Violation(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Violation(v) => write!(f, "{v}"),
            FaultKind::SocketError(k) => write!(f, "error on the client socket: {k}"),
            FaultKind::AcceptFailed(k) => write!(f, "accept failed, listening paused: {k}"),
            FaultKind::ChannelsFailed(k) => {
                write!(f, "cannot make a connection's channels: {k}")
            }
            FaultKind::HandlerPanicked => {
                f.write_str("the handler panicked on the connection's request")
            }
        }
    }
}

impl fmt::Display for Fault<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

/// Why a connection is to be closed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Closing {
    /// The client closed its socket or its rings: it disconnected,
    /// exited or died.
    Left,
    /// [`Connection::disconnect`].
    Disconnected,
    /// It sent nothing for the idle timeout.
    Idle,
    /// The service shut down.
    Shutdown,
    /// It broke the protocol, or its socket failed.
    Fault(FaultKind),
}

impl Closing {
    /// What the application is told.
    pub(crate) fn reason(self) -> CloseReason {
        match self {
            Closing::Left => CloseReason::ClientLeft,
            Closing::Disconnected => CloseReason::Disconnected,
            Closing::Idle => CloseReason::Idle,
            Closing::Shutdown => CloseReason::Shutdown,
            Closing::Fault(FaultKind::Violation(v)) => CloseReason::Violation(v),
            Closing::Fault(FaultKind::HandlerPanicked) => CloseReason::HandlerPanicked,
            Closing::Fault(
                FaultKind::SocketError(k)
                | FaultKind::AcceptFailed(k)
                | FaultKind::ChannelsFailed(k),
            ) => CloseReason::SocketError(k),
        }
    }
}

/// Why a connection ended ([`Connection::close_reason`], known from
/// `connection_closed` on; miniRPC tells its close callback the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed its end: it disconnected, exited, or died (the
    /// kernel does not tell these apart).
    ClientLeft,
    /// The server closed it ([`Connection::disconnect`], from a handler
    /// or any thread).
    Disconnected,
    /// The client broke the protocol (also reported to the error hook).
    Violation(Violation),
    /// A system call failed on the client's socket (also reported to the
    /// error hook).
    SocketError(io::ErrorKind),
    /// The client sent nothing for
    /// [`ServiceOptions::idle_timeout`](crate::ServiceOptions::idle_timeout).
    Idle,
    /// The service shut down (the end of `Service::run`, or `close_all`).
    Shutdown,
    /// The handler panicked on one of its requests, on the service's
    /// loop thread (also reported to the error hook).
    HandlerPanicked,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientLeft => f.write_str("the client left"),
            CloseReason::Disconnected => f.write_str("disconnected by the server"),
            CloseReason::Violation(v) => write!(f, "protocol violation: {v}"),
            CloseReason::SocketError(k) => write!(f, "error on the client socket: {k}"),
            CloseReason::Idle => f.write_str("idle for longer than the idle timeout"),
            CloseReason::Shutdown => f.write_str("the service shut down"),
            CloseReason::HandlerPanicked => {
                f.write_str("the handler panicked on one of its requests")
            }
        }
    }
}

impl From<Violation> for Closing {
    fn from(v: Violation) -> Closing {
        Closing::Fault(FaultKind::Violation(v))
    }
}

impl From<FaultKind> for Closing {
    fn from(kind: FaultKind) -> Closing {
        Closing::Fault(kind)
    }
}

/// Hands one request to the handler, under the trace hook if there is
/// one, and counts it. A handler that panics loses that connection, not
/// the service: one client's request that trips a bug in a route must not
/// end every other client's (the panic message goes where the process's
/// panic hook sends it; the connection closes as `HandlerPanicked`).
pub(crate) fn deliver<H: Handler>(
    handler: &H,
    trace: Option<&TraceHook>,
    conn: &Connection,
    header: MsgHeader,
    payload: &[u8],
    fds: PeerFds,
) {
    conn.count_request(payload.len());
    let request = Request::new(header, payload, fds);
    // The handler's own state is its to keep consistent across a panic
    // (a poisoned lock says so); the loop's is not touched in between.
    let message = || {
        let run = std::panic::AssertUnwindSafe(|| handler.message(conn, &request));
        if std::panic::catch_unwind(run).is_err() {
            conn.condemn_for(Some(FaultKind::HandlerPanicked));
        }
    };
    let Some(hook) = trace else {
        message();
        return;
    };
    let mut t = Trace {
        connection: conn,
        id: request.id(),
        seq: request.seq(),
        stage: TraceStage::Start,
    };
    hook(&t);
    let before = conn.responses_sent();
    let start = Instant::now();
    message();
    t.stage = TraceStage::End {
        duration: start.elapsed(),
        responded: conn.responses_sent() != before,
        disconnected: !conn.is_connected(),
    };
    hook(&t);
}

/// The hooks a service calls, if set.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) trace: Option<std::sync::Arc<TraceHook>>,
    pub(crate) error: Option<Box<ErrorHook>>,
}

impl Hooks {
    /// Reports a failure the loop handled on its own.
    pub(crate) fn fault(&self, connection: Option<&Connection>, kind: FaultKind) {
        event!(
            warn,
            conn = ?connection.map(Connection::id),
            fault = %kind,
            "fault"
        );
        if let Some(hook) = &self.error {
            hook(&Fault { connection, kind });
        }
    }
}
