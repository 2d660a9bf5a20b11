//! Responses to a libqb client in the order of its requests.
//!
//! libqb has no sequence numbers: a libqb client takes the next response
//! in its channel as the answer to its oldest request. ringlink's handlers
//! may answer out of order (from other threads, later); so the server
//! numbers the requests as they come, and a response to a later request
//! waits here, copied, until every earlier one has been answered. Each
//! request gets exactly one response in this scheme; a second response to
//! a request already answered goes at once, as libqb allows.

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;

use ringlink_common::wire::MsgHeader;

use crate::error::TrySendError;

/// Where a libqb sender's messages go: each written whole or not at all.
pub(crate) trait Out {
    /// Writes one message: `Ok(false)` if there is no room now.
    fn write(&mut self, h: &MsgHeader, parts: &[IoSlice<'_>]) -> Result<bool, TrySendError>;

    /// Sends what is owed from before (notification bytes); whether
    /// nothing is left owed.
    fn pay(&mut self) -> bool {
        true
    }
}

/// A libqb sender: its messages to `out`, and, for responses, those held
/// for their turn.
#[derive(Debug)]
pub(crate) struct Ordered<O> {
    pub(crate) out: O,
    order: Option<Order>,
}

impl<O: Out> Ordered<O> {
    /// `ordered`: a server's responses, put in request order.
    pub(crate) fn new(out: O, ordered: bool) -> Ordered<O> {
        Ordered {
            out,
            order: ordered.then(Order::default),
        }
    }

    /// One message; a response waits (copied) while an earlier request
    /// is unanswered, and goes with the ones it held back once it is.
    pub(crate) fn send(
        &mut self,
        h: &MsgHeader,
        parts: &[IoSlice<'_>],
    ) -> Result<(), TrySendError> {
        self.out.pay();
        if let Some(o) = self.order.as_mut() {
            if o.admit(h.seq) == Admit::Later {
                o.hold(*h, parts);
                return self.flush().map(drop);
            }
        }
        if !self.out.write(h, parts)? {
            return Err(TrySendError::Full);
        }
        if let Some(o) = self.order.as_mut() {
            o.sent(h.seq);
        }
        self.flush().map(drop)
    }

    /// Sends the held responses whose turn came, while there is room, and
    /// what is owed: whether nothing is left.
    pub(crate) fn flush(&mut self) -> Result<bool, TrySendError> {
        let paid = self.out.pay();
        while let Some((h, body)) = self.order.as_mut().and_then(Order::next_due) {
            if !self.out.write(&h, &[IoSlice::new(&body)])? {
                self.order.as_mut().expect("ordered").put_back(h, body);
                return Ok(false);
            }
            self.order.as_mut().expect("ordered").sent(h.seq);
        }
        Ok(paid)
    }

    /// Request `seq` gets no response (see [`Order::skip`]); what waited
    /// for it goes, if there is room.
    pub(crate) fn skip(&mut self, seq: u64) -> Result<bool, TrySendError> {
        if let Some(o) = self.order.as_mut() {
            o.skip(seq);
        }
        self.flush()
    }

    /// Whether responses are held.
    pub(crate) fn holding(&self) -> bool {
        self.order.as_ref().is_some_and(|o| !o.is_empty())
    }

    /// Payload bytes held.
    pub(crate) fn held_bytes(&self) -> usize {
        self.order.as_ref().map_or(0, Order::bytes)
    }
}

/// Whether a response may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Its request is the oldest unanswered one, or was answered already.
    Now,
    /// An earlier request is unanswered: hold it.
    Later,
}

/// The responses held back.
#[derive(Debug)]
pub(crate) struct Order {
    /// The oldest request not answered yet.
    next: u64,
    held: BTreeMap<u64, VecDeque<(MsgHeader, Vec<u8>)>>,
    bytes: usize,
    /// Later requests declared to get no response.
    skipped: std::collections::BTreeSet<u64>,
}

impl Default for Order {
    fn default() -> Order {
        Order {
            next: 1,
            held: BTreeMap::new(),
            bytes: 0,
            skipped: std::collections::BTreeSet::new(),
        }
    }
}

impl Order {
    /// Whether the response to request `seq` may go now.
    pub(crate) fn admit(&self, seq: u64) -> Admit {
        if seq <= self.next && !self.held.contains_key(&seq) {
            Admit::Now
        } else {
            Admit::Later
        }
    }

    /// Keeps a copy of a response that must wait.
    pub(crate) fn hold(&mut self, h: MsgHeader, parts: &[IoSlice<'_>]) {
        let body: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        self.bytes += body.len();
        self.held.entry(h.seq).or_default().push_back((h, body));
    }

    /// The next held response whose turn came.
    pub(crate) fn next_due(&mut self) -> Option<(MsgHeader, Vec<u8>)> {
        let mut entry = self.held.first_entry()?;
        if *entry.key() > self.next {
            return None;
        }
        let (h, body) = entry.get_mut().pop_front().expect("no empty queue is kept");
        if entry.get().is_empty() {
            entry.remove();
        }
        self.bytes -= body.len();
        Some((h, body))
    }

    /// A response taken by [`next_due`](Self::next_due) did not fit: it
    /// goes back to the front.
    pub(crate) fn put_back(&mut self, h: MsgHeader, body: Vec<u8>) {
        self.bytes += body.len();
        self.held.entry(h.seq).or_default().push_front((h, body));
    }

    /// The response to request `seq` went.
    pub(crate) fn sent(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            while self.skipped.remove(&self.next) {
                self.next += 1;
            }
        }
    }

    /// Request `seq` gets no response: later ones stop waiting for it.
    pub(crate) fn skip(&mut self, seq: u64) {
        if seq == self.next {
            self.sent(seq);
        } else if seq > self.next {
            self.skipped.insert(seq);
        }
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Payload bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u64) -> MsgHeader {
        MsgHeader {
            id: seq as i32,
            size: 0,
            error: 0,
            flags: 0,
            seq,
        }
    }

    #[test]
    fn out_of_order_answers_leave_in_request_order() {
        let mut o = Order::default();
        let mut out = Vec::new();
        for seq in [3u64, 2, 5, 1, 4] {
            if o.admit(seq) == Admit::Now {
                out.push(seq);
                o.sent(seq);
            } else {
                o.hold(h(seq), &[IoSlice::new(&[seq as u8])]);
            }
            while let Some((hh, body)) = o.next_due() {
                assert_eq!(body, [hh.seq as u8]);
                out.push(hh.seq);
                o.sent(hh.seq);
            }
        }
        assert_eq!(out, [1, 2, 3, 4, 5]);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
        // A second answer to an answered request goes at once.
        assert_eq!(o.admit(2), Admit::Now);
    }

    #[test]
    fn skipped_requests_hold_nothing_back() {
        let mut o = Order::default();
        // Requests 1..=4: 2 and 3 get no response, 4 is answered first.
        o.skip(3);
        assert_eq!(o.admit(4), Admit::Later);
        o.hold(h(4), &[IoSlice::new(b"4")]);
        assert_eq!(o.admit(1), Admit::Now);
        o.sent(1);
        assert!(o.next_due().is_none(), "2 is not answered yet");
        o.skip(2);
        let (hh, _) = o.next_due().expect("4 is due");
        assert_eq!(hh.seq, 4);
        o.sent(4);
        assert_eq!(o.admit(5), Admit::Now);
    }
}
