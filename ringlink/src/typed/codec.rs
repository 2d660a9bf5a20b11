//! The codec of typed messages: postcard (`docs/TYPED.md` says why),
//! encoding into a buffer reused from message to message, decoding from
//! the received bytes.

#[cfg(any(feature = "client", feature = "server"))]
use std::cell::RefCell;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value that could not be encoded, or bytes that do not decode as
/// the type asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(Why);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Why {
    Postcard(postcard::Error),
    /// The value ended before the bytes did.
    Trailing(usize),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Why::Postcard(e) => write!(f, "{e}"),
            Why::Trailing(1) => f.write_str("1 byte left over after the value"),
            Why::Trailing(n) => write!(f, "{n} bytes left over after the value"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Why::Postcard(e) => Some(e),
            Why::Trailing(_) => None,
        }
    }
}

/// Appends to a borrowed `Vec` (postcard's own `AllocVec` owns a new one
/// per message). Short pieces (varints, scalars: most of a small
/// message) are copied byte by byte rather than with a call to `memcpy`
/// each: the fastest of the ways measured (`benches/codecs`).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Encodes `value` into `out`, replacing what it held; `out` keeps its
/// capacity, so a buffer reused from message to message costs no
/// allocation once it has grown to the largest message.
///
/// # Errors
///
/// The value's `Serialize` failed, or asked for what postcard cannot
/// encode (a sequence of unknown length); `out` then holds part of it.
///
/// # Examples
///
/// ```
/// let mut buf = Vec::new();
/// ringlink::typed::encode(&(7u32, "seven"), &mut buf)?;
/// assert_eq!(ringlink::typed::decode::<(u32, String)>(&buf)?, (7, "seven".to_string()));
/// # Ok::<(), ringlink::typed::CodecError>(())
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    postcard::serialize_with_flavor(value, Append(out)).map_err(|e| CodecError(Why::Postcard(e)))
}

/// Decodes a `T` from all of `bytes`: bytes left over after the value
/// are an error too (they mean the two sides disagree on the type).
/// Types may borrow from `bytes` (`&str`, `&[u8]` with
/// `#[serde(borrow)]`).
///
/// `bytes` is peer input: a malformed message is an error, never a panic,
/// and a length prefix larger than what follows is refused before
/// anything is allocated for it. One caution: a recursive type (a tree:
/// `enum Node { Leaf, Branch(Box<Node>) }`) lets the peer nest it as
/// deep as its bytes allow, one level per byte, and decoding recurses as
/// deep; keep such types out of messages from peers you do not trust, or
/// their size small. Nor a collection of values that encode to no bytes
/// (`Vec<()>`, a set of unit structs): its claimed length, up to 2^64,
/// costs the peer ten bytes, and decoding loops that many times.
///
/// `bytes` must not change while they are decoded: postcard reads some
/// values' bytes twice (a string's, to check that it is UTF-8, then to
/// copy it), and a peer that rewrote them in between would make a
/// `String` that is not UTF-8, undefined behaviour for whoever uses it.
/// Bytes a peer can still write, a request's payload where it lies in
/// the client's ring (`Request::payload`) or a message read in place, go
/// through [`decode_copied`].
///
/// # Errors
///
/// The bytes are not a `T`, or more than one.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError(Why::Postcard(e)))?;
    if !rest.is_empty() {
        return Err(CodecError(Why::Trailing(rest.len())));
    }
    Ok(value)
}

/// [`decode`] from a copy of `bytes`, made first in a buffer of this
/// thread reused from call to call: for bytes the peer can still write
/// while they are read (see `decode`). A typed route on the service's
/// loop decodes its request this way; one on a worker already has a
/// copy.
///
/// # Errors
///
/// As [`decode`].
///
/// # Examples
///
/// ```
/// use ringlink::server::Dispatch;
/// use ringlink::typed::decode_copied;
///
/// let table = Dispatch::new().on(1, |conn, req| {
///     // The payload lies in the client's ring, which the client writes.
///     let name: Result<String, _> = decode_copied(req.payload());
///     let _ = conn.respond(req.seq(), 1, name.as_deref().unwrap_or("?").as_bytes());
/// });
/// # drop(table);
/// ```
pub fn decode_copied<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    COPIED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.extend_from_slice(bytes);
            let r = decode(&buf);
            if buf.capacity() > KEEP_COPY {
                *buf = Vec::new();
            }
            r
        }
        // In use further up the stack (a route decoding inside another's
        // decode): a copy of its own.
        Err(_) => {
            let copy: Vec<u8> = bytes.to_vec();
            decode(&copy)
        }
    })
}

/// A buffer kept by [`decode_copied`] for the next message: at most this
/// large.
const KEEP_COPY: usize = 64 << 10;

/// A buffer kept for the next message by [`with_encoded`]: at most this
/// large (a thread that once sent a large message does not keep its
/// memory).
#[cfg(any(feature = "client", feature = "server"))]
const KEEP: usize = 64 << 10;

thread_local! {
    /// The copy [`decode_copied`] decodes from.
    static COPIED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The encoding buffer of this thread (the service's loop, a worker,
    /// a client's thread).
    #[cfg(any(feature = "client", feature = "server"))]
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The receiving buffer of this thread's blocking typed calls.
    #[cfg(feature = "client")]
    static RECEIVED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `value` encoded, in this thread's reused buffer (or, if
/// `f` is running already on this thread, further up the stack: a call
/// handler making a typed call, in a buffer of its own).
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, CodecError> {
    ENCODED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let r = encode(value, &mut buf).map(|()| f(&buf));
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => {
            let mut buf = Vec::new();
            encode(value, &mut buf)?;
            Ok(f(&buf))
        }
    })
}

/// Runs `f` with a receiving buffer of at least `len` bytes: this
/// thread's, reused (it keeps the size of the largest connection that
/// used it, `max_message`), or a new one if that is in use further up
/// the stack.
#[cfg(feature = "client")]
pub(crate) fn with_received<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    RECEIVED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf)
        }
        Err(_) => f(&mut vec![0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_and_its_buffer_is_reused() {
        let mut buf = Vec::new();
        encode(&(1u64, -2i32, "three", [4u8; 3]), &mut buf).unwrap();
        let cap = buf.capacity();
        let ptr = buf.as_ptr();
        let got: (u64, i32, &str, [u8; 3]) = decode(&buf).unwrap();
        assert_eq!(got, (1, -2, "three", [4; 3]));
        encode(&(9u64, 9i32, "nine", [9u8; 3]), &mut buf).unwrap();
        assert_eq!((buf.capacity(), buf.as_ptr()), (cap, ptr));
    }

    #[test]
    fn leftover_and_missing_bytes_are_errors() {
        let mut buf = Vec::new();
        encode(&(1u8, 2u8), &mut buf).unwrap();
        assert_eq!(
            decode::<u8>(&buf).unwrap_err().to_string(),
            "1 byte left over after the value"
        );
        assert!(decode::<(u8, u8, u8)>(&buf).is_err());
        // A length prefix far beyond the bytes: refused, nothing allocated.
        assert!(decode::<Vec<u64>>(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    #[cfg(any(feature = "client", feature = "server"))]
    fn a_nested_use_gets_a_buffer_of_its_own() {
        let outer = with_encoded(&1u32, |a| {
            let inner = with_encoded(&2u32, |b| b.to_vec()).unwrap();
            (a.to_vec(), inner)
        })
        .unwrap();
        assert_eq!(outer, (vec![1], vec![2]));
    }
}
