//! The errors of typed calls: what failed on the way ([`TypedError`]),
//! and the application's own failures ([`AppError`]) with the codes the
//! typed layer reserves.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{decode, encode, CodecError};
use crate::Error;

/// Error code of a response to a typed request whose payload did not
/// decode as the route's request type (`-EBADMSG`). The payload is a
/// short UTF-8 reason (at most [`MAX_REASON`] bytes); the client sees
/// [`TypedError::Rejected`].
pub const ERROR_DECODE: i32 = -74;

/// Error code of a response whose value the server could not encode
/// (its `Serialize` failed, or it exceeds the connection's largest
/// message) (`-EPROTO`). The payload is a short UTF-8 reason; the client
/// sees [`TypedError::ServerEncode`].
pub const ERROR_ENCODE: i32 = -71;

/// Longest reason, in bytes, that the server puts in an
/// [`ERROR_DECODE`] or [`ERROR_ENCODE`] response.
pub const MAX_REASON: usize = 200;

/// An application's failure, answered instead of a response: a positive
/// code, which travels in the response's error field, and an optional
/// detail, any serde value, encoded as the payload.
///
/// Codes are positive: 0 is success, and negative codes belong to
/// ringlink ([`ERROR_UNKNOWN_ID`](crate::ERROR_UNKNOWN_ID),
/// [`ERROR_DECODE`], [`ERROR_ENCODE`], and any it may add).
///
/// # Examples
///
/// ```
/// use ringlink::typed::AppError;
///
/// const NOT_FOUND: i32 = 2;
/// let e = AppError::with_detail(NOT_FOUND, "no key \"a\"");
/// assert_eq!(e.code(), NOT_FOUND);
/// assert_eq!(e.detail::<String>()?, "no key \"a\"");
/// assert!(AppError::new(NOT_FOUND).detail_bytes().is_empty());
/// # Ok::<(), ringlink::typed::CodecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppError {
    code: i32,
    detail: Vec<u8>,
    /// The detail given could not be encoded (the server answers
    /// `ERROR_ENCODE`).
    unencodable: Option<CodecError>,
}

impl AppError {
    /// A failure with `code` and no detail.
    ///
    /// # Panics
    ///
    /// If `code` is not positive (0 is success; negative codes are
    /// ringlink's).
    pub fn new(code: i32) -> AppError {
        assert!(
            code > 0,
            "application error codes are positive (0 is success, negative codes are ringlink's): {code}"
        );
        AppError {
            code,
            detail: Vec::new(),
            unencodable: None,
        }
    }

    /// A failure with `code` and `detail`, encoded now. A detail that
    /// cannot be encoded is reported to the client as [`ERROR_ENCODE`]
    /// (the client sees [`TypedError::ServerEncode`]).
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new).
    pub fn with_detail<T: Serialize + ?Sized>(code: i32, detail: &T) -> AppError {
        let mut e = AppError::new(code);
        if let Err(why) = encode(detail, &mut e.detail) {
            e.detail = Vec::new();
            e.unencodable = Some(why);
        }
        e
    }

    /// A failure as it came in a response (any code, as sent).
    #[cfg(feature = "client")]
    pub(crate) fn received(code: i32, detail: &[u8]) -> AppError {
        AppError {
            code,
            detail: detail.to_vec(),
            unencodable: None,
        }
    }

    /// The code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The detail, decoded as a `T`.
    ///
    /// # Errors
    ///
    /// The detail is not a `T` (or there is none, and `T` is not a type
    /// that encodes as nothing, such as `()`).
    pub fn detail<T: DeserializeOwned>(&self) -> Result<T, CodecError> {
        decode(&self.detail)
    }

    /// The detail as encoded (empty if there is none).
    pub fn detail_bytes(&self) -> &[u8] {
        &self.detail
    }

    /// Why the detail given to [`with_detail`](Self::with_detail) could
    /// not be encoded.
    #[cfg(feature = "server")]
    pub(crate) fn unencodable(&self) -> Option<&CodecError> {
        self.unencodable.as_ref()
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "application error {}", self.code)?;
        if !self.detail.is_empty() {
            write!(f, " ({} bytes of detail)", self.detail.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for AppError {}

/// Why a typed call, event or response failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TypedError {
    /// The message could not travel: a timeout, a disconnection, a
    /// message larger than the connection allows...
    Ipc(Error),
    /// This side could not encode the value (its `Serialize` failed);
    /// nothing was sent.
    Encode(CodecError),
    /// What came back (a response, an event) did not decode as the type
    /// expected: the two sides disagree on the type of this id.
    Decode(CodecError),
    /// The server could not decode the request as its route's type
    /// ([`ERROR_DECODE`]), and says why: the two sides disagree on the
    /// type of this id.
    Rejected(String),
    /// The server has no route for this id
    /// ([`ERROR_UNKNOWN_ID`](crate::ERROR_UNKNOWN_ID)).
    UnknownId(i32),
    /// The server could not encode its response, or it was larger than
    /// the connection allows ([`ERROR_ENCODE`]), and says why.
    ServerEncode(String),
    /// The application's failure: a positive code, and its detail.
    App(AppError),
    /// A negative error code the typed layer does not define (the server
    /// answered this id with an untyped route), with its payload.
    OtherCode {
        /// The code.
        code: i32,
        /// The payload.
        payload: Vec<u8>,
    },
    /// A message of another id than the type expected: a response to an
    /// untyped route, or an event of another type
    /// ([`decode_event`](super::decode_event)).
    UnexpectedId {
        /// The id of the type expected.
        expected: i32,
        /// The id that came.
        got: i32,
    },
}

impl TypedError {
    /// The application's failure, if that is what this is.
    pub fn app(&self) -> Option<&AppError> {
        match self {
            TypedError::App(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for TypedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedError::Ipc(e) => write!(f, "{e}"),
            TypedError::Encode(e) => write!(f, "cannot encode the message: {e}"),
            TypedError::Decode(e) => write!(f, "the message received did not decode: {e}"),
            TypedError::Rejected(why) => {
                write!(f, "the server could not decode the request: {why}")
            }
            TypedError::UnknownId(id) => write!(f, "the server has no route for message id {id}"),
            TypedError::ServerEncode(why) => {
                write!(f, "the server could not encode its response: {why}")
            }
            TypedError::App(e) => write!(f, "{e}"),
            TypedError::OtherCode { code, payload } => write!(
                f,
                "the server answered with error code {code} ({} bytes)",
                payload.len()
            ),
            TypedError::UnexpectedId { expected, got } => {
                write!(
                    f,
                    "a message of id {got} where one of id {expected} was expected"
                )
            }
        }
    }
}

impl std::error::Error for TypedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TypedError::Ipc(e) => Some(e),
            TypedError::Encode(e) | TypedError::Decode(e) => Some(e),
            TypedError::App(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for TypedError {
    fn from(e: Error) -> TypedError {
        TypedError::Ipc(e)
    }
}

/// The reason text of a reserved-code response, as the client shows it.
#[cfg(feature = "client")]
fn reason(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(MAX_REASON)]).into_owned()
}

/// What a response of message id `id` and error code `error`, with
/// `payload`, to a request of id `expected`, means.
#[cfg(feature = "client")]
pub(crate) fn interpret<T: DeserializeOwned>(
    expected: i32,
    id: i32,
    error: i32,
    payload: &[u8],
) -> Result<T, TypedError> {
    if id != expected {
        return Err(TypedError::UnexpectedId { expected, got: id });
    }
    match error {
        0 => decode(payload).map_err(TypedError::Decode),
        code if code > 0 => Err(TypedError::App(AppError::received(code, payload))),
        crate::ERROR_UNKNOWN_ID => Err(TypedError::UnknownId(id)),
        ERROR_DECODE => Err(TypedError::Rejected(reason(payload))),
        ERROR_ENCODE => Err(TypedError::ServerEncode(reason(payload))),
        code => Err(TypedError::OtherCode {
            code,
            payload: payload.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "client")]
    fn every_code_has_its_meaning() {
        let ok: Result<u32, _> = interpret(5, 5, 0, &[7]);
        assert_eq!(ok.unwrap(), 7);
        let app = interpret::<u32>(5, 5, 3, &[1, 2]).unwrap_err();
        assert_eq!(app.app(), Some(&AppError::received(3, &[1, 2])));
        assert!(matches!(
            interpret::<u32>(5, 5, crate::ERROR_UNKNOWN_ID, &[]),
            Err(TypedError::UnknownId(5))
        ));
        assert!(matches!(
            interpret::<u32>(5, 5, ERROR_DECODE, b"bad"),
            Err(TypedError::Rejected(w)) if w == "bad"
        ));
        assert!(matches!(
            interpret::<u32>(5, 5, ERROR_ENCODE, b"big"),
            Err(TypedError::ServerEncode(w)) if w == "big"
        ));
        assert!(matches!(
            interpret::<u32>(5, 5, -22, b"x"),
            Err(TypedError::OtherCode { code: -22, .. })
        ));
        assert!(matches!(
            interpret::<u32>(5, 6, 0, &[7]),
            Err(TypedError::UnexpectedId {
                expected: 5,
                got: 6
            })
        ));
        assert!(matches!(
            interpret::<u32>(5, 5, 0, &[7, 7]),
            Err(TypedError::Decode(_))
        ));
    }

    #[test]
    #[should_panic(expected = "application error codes are positive")]
    fn a_reserved_code_is_refused() {
        let _ = AppError::new(ERROR_DECODE);
    }

    #[test]
    #[cfg(feature = "server")]
    fn an_unencodable_detail_is_kept_as_such() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let e = AppError::with_detail(1, &Fails);
        assert!(e.unencodable().is_some());
        assert!(e.detail_bytes().is_empty());
    }
}
