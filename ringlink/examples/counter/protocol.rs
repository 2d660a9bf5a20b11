//! The counter's protocol, shared by `counter_daemon`, `counter_cli` and
//! `counter_watch` (in a real project, a small crate of its own).
#![allow(dead_code)] // each program uses its part

use ringlink::typed::{Event, Request};
use ringlink::ServiceAddr;
use serde::{Deserialize, Serialize};

/// The protocol id both sides name in the handshake.
pub(crate) const PROTOCOL: &str = "counter";

/// Adds `by` to the counter; answers the new value.
#[derive(Serialize, Deserialize)]
pub(crate) struct Incr {
    pub(crate) by: i64,
}

impl Request for Incr {
    const ID: i32 = 1;
    type Response = i64;
}

/// Answers the counter's value.
#[derive(Serialize, Deserialize)]
pub(crate) struct Get;

impl Request for Get {
    const ID: i32 = 2;
    type Response = i64;
}

/// Answers the counter's value; from then on, each change comes as a
/// [`Changed`] event.
#[derive(Serialize, Deserialize)]
pub(crate) struct Subscribe;

impl Request for Subscribe {
    const ID: i32 = 3;
    type Response = i64;
}

/// The counter's new value.
#[derive(Serialize, Deserialize)]
pub(crate) struct Changed {
    pub(crate) value: i64,
}

impl Event for Changed {
    const ID: i32 = 100;
}

/// The application's error code for an increment that would overflow;
/// its detail is the value.
pub(crate) const OVERFLOW: i32 = 1;

/// The daemon's address: `--name NAME` taken from the front of `args`,
/// or the abstract name `ringlink-counter`.
pub(crate) fn address(args: &mut Vec<String>) -> ServiceAddr {
    if args.len() >= 2 && args[0] == "--name" {
        let name: Vec<String> = args.drain(..2).collect();
        return ServiceAddr::named(&name[1]);
    }
    ServiceAddr::named("ringlink-counter")
}
