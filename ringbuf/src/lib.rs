//! A lock-free single-producer / single-consumer ring of variable-length
//! records in shared memory, safe to share with a process that does not
//! follow the rules.
//!
//! A [`Ring`] lives in one file — by default a sealed memfd, or a named
//! file for processes that meet without a server — made of a header page
//! and a power-of-two data region (layout in [`layout`]). Each process
//! maps the file and claims one role: the [`Producer`] writes records, the
//! [`Consumer`] reads them. A record is published by its own header word
//! (a Release store, after the word where the next record goes was
//! cleared), which the consumer polls with Acquire loads: a small record
//! costs one cache line's transfer, not the producer's position's line as
//! well. The consumer publishes its position for the producer, which reads
//! it only when it runs short of room. While both sides are busy, no
//! operation makes a system call or allocates.
//!
//! A side that finds nothing to do spins for a bounded time
//! ([`DEFAULT_SPIN`], configurable down to zero), then sleeps on what its
//! [`Wake`] says (a Unix socket to the peer, an eventfd, or a futex),
//! which the other side signals only when asked to (see [`wake`] for the
//! no-lost-wake-up argument, and [`Wake`] for which to use with a peer
//! that does not follow the rules).
//!
//! Everything read from the shared memory is read once, validated, then
//! used: a corrupted ring yields [`PopError::Corrupt`] or
//! [`PushError::Corrupt`], never a panic, an out-of-bounds access or an
//! endless loop.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ringlink_ringbuf::Ring;
//! use std::time::Duration;
//!
//! let ring = Ring::create(64 * 1024)?;
//! let mut tx = ring.producer()?;
//! let mut rx = ring.consumer()?;
//!
//! // Zero-copy: reserve, write in place, commit.
//! let mut grant = tx.try_reserve(5)?;
//! grant.copy_from_slice(b"hello");
//! grant.commit();
//!
//! // Zero-copy read: peek, use, release.
//! let rec = rx.peek_timeout(Duration::from_secs(1))?;
//! assert_eq!(&*rec, b"hello");
//! rec.release();
//! # Ok(())
//! # }
//! ```
//!
//! Between processes, send [`Ring::memory_fd`], [`Ring::data_ready_fd`]
//! and [`Ring::space_ready_fd`] over a Unix socket and rebuild the ring on
//! the other side with [`Ring::from_fds`].
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
// Under loom only heap rings are built; the file and fd paths go unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

pub mod bias;
mod consumer;
mod error;
pub mod guard;
pub mod layout;

mod mem;
mod producer;
pub mod qb;
mod ring;
mod signals;
mod sync;
mod sys;
pub mod wake;

pub use consumer::{Consumer, ReadGrant};
pub use error::{ClaimError, Corruption, OpenError, PopError, PushError, Role};
pub use layout::{LAYOUT_VERSION, MAX_CAPACITY, MIN_CAPACITY};
pub use producer::{Producer, Reservation, WriteGrant};
pub use ring::{Ring, Wake, WakeFds, WakeMode, DEFAULT_FILE_MODE};
pub use wake::DEFAULT_SPIN;

#[cfg(all(test, not(loom)))]
mod tests;
