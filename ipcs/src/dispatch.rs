//! A dispatch table: one handler per message id (lwmsg's dispatch spec).

use std::collections::HashMap;
use std::fmt;

use ringlink_common::wire::ERROR_UNKNOWN_ID;

use crate::{Connection, Handler, Request};

type Route = Box<dyn Fn(&Connection, &Request<'_>) + Send + Sync>;

/// Routes each request to the function registered for its message id; a
/// request with an id nobody registered gets an empty response with error
/// code [`ERROR_UNKNOWN_ID`], never silence.
///
/// Use it as the service's [`Handler`] directly, or call
/// [`dispatch`](Self::dispatch) from your own handler's `message` to keep
/// the other callbacks. A route may answer at once or keep a clone of the
/// connection and answer later from another thread.
///
/// # Examples
///
/// ```
/// use ringlink_ipcs::Dispatch;
///
/// const PING: i32 = 1;
/// let table = Dispatch::new().on(PING, |conn, req| {
///     let _ = conn.respond(req.seq(), PING, b"pong");
/// });
/// assert!(table.handles(PING));
/// ```
#[derive(Default)]
pub struct Dispatch {
    routes: HashMap<i32, Route>,
}

impl Dispatch {
    /// An empty table: every request gets `ERROR_UNKNOWN_ID`.
    pub fn new() -> Dispatch {
        Dispatch::default()
    }

    /// Registers `route` for message id `id`, replacing any earlier one.
    pub fn on(
        mut self,
        id: i32,
        route: impl Fn(&Connection, &Request<'_>) + Send + Sync + 'static,
    ) -> Dispatch {
        self.routes.insert(id, Box::new(route));
        self
    }

    /// Whether a route is registered for `id`.
    pub fn handles(&self, id: i32) -> bool {
        self.routes.contains_key(&id)
    }

    /// Runs the route for the request's id, or answers with
    /// `ERROR_UNKNOWN_ID`. Returns whether a route ran.
    pub fn dispatch(&self, conn: &Connection, request: &Request<'_>) -> bool {
        match self.routes.get(&request.id()) {
            Some(route) => {
                route(conn, request);
                true
            }
            None => {
                // The client learns its mistake; a full response ring is
                // its own problem, and a closed one means it is gone.
                let _ = conn.respond_vectored(request.seq(), request.id(), ERROR_UNKNOWN_ID, &[]);
                false
            }
        }
    }
}

impl Handler for Dispatch {
    fn message(&self, conn: &Connection, request: &Request<'_>) {
        self.dispatch(conn, request);
    }
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.routes.keys().collect();
        ids.sort();
        f.debug_struct("Dispatch").field("ids", &ids).finish()
    }
}
