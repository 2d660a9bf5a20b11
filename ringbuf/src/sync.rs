//! Atomics shim: `std` atomics normally, `loom` atomics under `--cfg loom`.
//!
//! Every atomic the ring algorithm touches comes from here, so the same
//! code is model-checked by loom (see `tests/loom.rs`) and run for real.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
