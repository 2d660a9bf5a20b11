//! The handshake (`docs/PROTOCOL.md` §2) as two state machines without
//! I/O: each is fed the bytes (and fds) that came, and gives the bytes to
//! send. The server's loop, the client, the tests' raw clients and the
//! fuzzers run the same machines; only the socket calls differ.
//!
//! ```
//! use ringlink_common::handshake::{ClientEvent, ClientHandshake, ServerEvent, ServerHandshake};
//! use ringlink_common::wire::{ConnectRequest, ConnectResponse, FdTerms, Status, Transport, PROTOCOL_VERSION};
//! use ringlink_common::fdpass::PeerFds;
//!
//! let request = ConnectRequest {
//!     version: PROTOCOL_VERSION,
//!     transport: Transport::Shm,
//!     max_message: 0,
//!     protocol: "echo".into(),
//!     fds: FdTerms::NONE,
//! };
//! let (mut client, hello) = ClientHandshake::new(&request);
//! let mut server = ServerHandshake::new();
//! // The server reads exactly what it is missing, here all at once.
//! let room = server.buffer();
//! room.copy_from_slice(&hello);
//! let n = room.len();
//! let ServerEvent::Request(Ok(req)) = server.received(n) else { panic!() };
//! assert_eq!(req.protocol, "echo");
//! let answer = ConnectResponse::reject(Status::PermissionDenied).encode();
//! let room = client.buffer();
//! room.copy_from_slice(&answer);
//! let n = room.len();
//! assert!(client.received(n, PeerFds::default()).is_err()); // refused
//! ```

use crate::fdpass::PeerFds;
use crate::wire::{
    Confirm, ConnectRequest, ConnectResponse, FdTerms, Status, Transport, WireError, CONFIRM_LEN,
    FD_TERMS_LEN, MAX_MESSAGE, REQUEST_HEAD_LEN, REQUEST_LEN, RESPONSE_LEN,
};
use crate::{Error, Violation};

/// The bytes that follow an accepted answer on the stream: the server's
/// [`FdTerms`], then the socket transport's flow-control level (1), or
/// the named rings' path prefix (`path_len`).
pub fn trailer_len(transport: Transport, answer: &ConnectResponse) -> usize {
    FD_TERMS_LEN
        + match transport {
            Transport::Socket => 1,
            _ => answer.path_len as usize,
        }
}

/// What the server's side of a handshake found in the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// More bytes are needed: read into [`ServerHandshake::buffer`].
    NeedMore,
    /// A whole request: decoded, or the status to refuse it with
    /// (`VersionMismatch` for another version, whatever follows;
    /// `BadRequest` for anything else malformed).
    Request(Result<ConnectRequest, Status>),
    /// The client confirmed: the connection may start.
    Confirmed,
    /// The confirmation is malformed: the handshake ends.
    BadConfirm(WireError),
}

/// Where a server's handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    Request,
    Deciding,
    Confirm,
    Done,
}

/// The server's side of one handshake: exactly [`REQUEST_LEN`] bytes of
/// request (a peer of another version is answered once the head,
/// [`REQUEST_HEAD_LEN`] bytes, is in), then (once answered) exactly [`CONFIRM_LEN`] of confirmation,
/// never a byte more.
#[derive(Debug)]
pub struct ServerHandshake {
    state: ServerState,
    request: [u8; REQUEST_LEN],
    confirm: [u8; CONFIRM_LEN],
    got: usize,
}

impl Default for ServerHandshake {
    fn default() -> ServerHandshake {
        ServerHandshake::new()
    }
}

impl ServerHandshake {
    /// A handshake waiting for its request.
    pub fn new() -> ServerHandshake {
        ServerHandshake {
            state: ServerState::Request,
            request: [0; REQUEST_LEN],
            confirm: [0; CONFIRM_LEN],
            got: 0,
        }
    }

    /// Where the next bytes go: exactly what is missing of the message
    /// awaited now (empty while the request waits for its answer, and
    /// once done).
    pub fn buffer(&mut self) -> &mut [u8] {
        match self.state {
            ServerState::Request => &mut self.request[self.got..],
            ServerState::Confirm => &mut self.confirm[self.got..],
            ServerState::Deciding | ServerState::Done => &mut [],
        }
    }

    /// `n` bytes were read into [`buffer`](Self::buffer).
    ///
    /// # Panics
    ///
    /// If `n` is more than the buffer held.
    pub fn received(&mut self, n: usize) -> ServerEvent {
        assert!(n <= self.buffer().len(), "more bytes than the buffer held");
        self.got += n;
        match self.state {
            ServerState::Request if self.got == REQUEST_HEAD_LEN => {
                match ConnectRequest::check_head(&self.request) {
                    Ok(()) => ServerEvent::NeedMore,
                    Err(e) => {
                        self.state = ServerState::Deciding;
                        ServerEvent::Request(Err(match e {
                            WireError::Version(_) => Status::VersionMismatch,
                            _ => Status::BadRequest,
                        }))
                    }
                }
            }
            ServerState::Request if self.got == REQUEST_LEN => {
                self.state = ServerState::Deciding;
                ServerEvent::Request(match ConnectRequest::decode(&self.request) {
                    Ok(r) => Ok(r),
                    Err(WireError::Version(_)) => Err(Status::VersionMismatch),
                    Err(_) => Err(Status::BadRequest),
                })
            }
            ServerState::Confirm if self.got == CONFIRM_LEN => {
                self.state = ServerState::Done;
                match Confirm::decode(&self.confirm) {
                    Ok(Confirm) => ServerEvent::Confirmed,
                    Err(e) => ServerEvent::BadConfirm(e),
                }
            }
            _ => ServerEvent::NeedMore,
        }
    }

    /// Whether the request was answered and the confirmation is awaited.
    pub fn answered(&self) -> bool {
        self.state == ServerState::Confirm
    }

    /// The bytes of an accepting answer (the response, then its trailer:
    /// the server's fd terms, then the path prefix or the level byte); the
    /// confirmation is awaited next. The fds go with the first byte.
    pub fn accept(&mut self, answer: &ConnectResponse, fds: &FdTerms, trailer: &[u8]) -> Vec<u8> {
        self.state = ServerState::Confirm;
        self.got = 0;
        let mut bytes = Vec::with_capacity(RESPONSE_LEN + FD_TERMS_LEN + trailer.len());
        bytes.extend_from_slice(&answer.encode());
        bytes.extend_from_slice(&fds.encode());
        bytes.extend_from_slice(trailer);
        bytes
    }

    /// The bytes of a refusal; the handshake is over.
    pub fn reject(&mut self, status: Status) -> [u8; RESPONSE_LEN] {
        self.state = ServerState::Done;
        ConnectResponse::reject(status).encode()
    }
}

/// What the client's side of a handshake found.
#[derive(Debug)]
pub enum ClientEvent {
    /// More bytes are needed: read into [`ClientHandshake::buffer`].
    NeedMore,
    /// The server accepted: its answer, the fds that came with it
    /// (unchecked: reaped if dropped), and the trailer.
    Accepted {
        /// The decoded answer.
        answer: ConnectResponse,
        /// The fds that came with it.
        fds: PeerFds,
        /// The fds the server accepts in requests.
        terms: FdTerms,
        /// The bytes that followed it and its terms (the level byte, or
        /// the path prefix).
        trailer: Vec<u8>,
    },
}

/// The client's side of one handshake: the request is sent, then the
/// answer read ([`RESPONSE_LEN`] bytes and their fds), then its trailer.
#[derive(Debug)]
pub struct ClientHandshake {
    transport: Transport,
    response: [u8; RESPONSE_LEN],
    got: usize,
    fds: PeerFds,
    answer: Option<ConnectResponse>,
    trailer: Vec<u8>,
    done: bool,
}

impl ClientHandshake {
    /// Starts a handshake: the machine, and the request's bytes to send.
    pub fn new(request: &ConnectRequest) -> (ClientHandshake, [u8; REQUEST_LEN]) {
        let machine = ClientHandshake {
            transport: request.transport,
            response: [0; RESPONSE_LEN],
            got: 0,
            fds: PeerFds::default(),
            answer: None,
            trailer: Vec::new(),
            done: false,
        };
        (machine, request.encode())
    }

    /// Where the next bytes go: exactly what is missing of the answer,
    /// then of its trailer.
    pub fn buffer(&mut self) -> &mut [u8] {
        match (&self.answer, self.done) {
            (_, true) => &mut [],
            (None, _) => &mut self.response[self.got..],
            (Some(_), _) => &mut self.trailer[self.got..],
        }
    }

    /// Whether fds may come with the next bytes: only with the answer's.
    pub fn expects_fds(&self) -> bool {
        self.answer.is_none() && !self.done
    }

    /// `n` bytes were read into [`buffer`](Self::buffer), with `fds`.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] with the server's reason (a server of another
    /// version: `VersionMismatch`); [`Error::Protocol`] for an answer that
    /// does not decode or announces messages above ringlink's ceiling,
    /// or fds that come after the answer's bytes. `n == 0` (the server
    /// closed): [`Error::Disconnected`].
    ///
    /// # Panics
    ///
    /// If `n` is more than the buffer held.
    pub fn received(&mut self, n: usize, fds: PeerFds) -> Result<ClientEvent, Error> {
        assert!(n <= self.buffer().len(), "more bytes than the buffer held");
        if n == 0 {
            return Err(Error::Disconnected);
        }
        if !fds.is_empty() && !self.expects_fds() {
            return Err(Error::Protocol(Violation::FdCount {
                expected: self.fds.len() as u16,
                announced: self.answer.map_or(0, |a| a.fd_count),
                received: (self.fds.len() + fds.len()) as u16,
            }));
        }
        self.fds.extend(fds.take());
        self.got += n;
        if self.answer.is_none() {
            if self.got < RESPONSE_LEN {
                return Ok(ClientEvent::NeedMore);
            }
            let answer = match ConnectResponse::decode(&self.response) {
                Ok(a) => a,
                // A server of another protocol version: what it sends
                // after its version field cannot be read, but the reason
                // can.
                Err(WireError::Version(_)) => return Err(Error::Rejected(Status::VersionMismatch)),
                Err(e) => return Err(Error::Protocol(Violation::BadAnswer(e))),
            };
            if answer.status != Status::Ok {
                return Err(Error::Rejected(answer.status));
            }
            if answer.max_message as usize > MAX_MESSAGE {
                return Err(Error::Protocol(Violation::MaxAboveCeiling {
                    announced: u64::from(answer.max_message),
                }));
            }
            self.trailer = vec![0; trailer_len(self.transport, &answer)];
            self.answer = Some(answer);
            self.got = 0;
        }
        if self.got < self.trailer.len() {
            return Ok(ClientEvent::NeedMore);
        }
        self.done = true;
        let mut trailer = std::mem::take(&mut self.trailer);
        let terms = FdTerms::decode(&trailer[..FD_TERMS_LEN])
            .map_err(|e| Error::Protocol(Violation::BadAnswer(e)))?;
        trailer.drain(..FD_TERMS_LEN);
        Ok(ClientEvent::Accepted {
            answer: self.answer.expect("decoded"),
            fds: std::mem::take(&mut self.fds),
            terms,
            trailer,
        })
    }

    /// The confirmation's bytes, sent once the channels are open.
    pub fn confirm() -> [u8; CONFIRM_LEN] {
        Confirm.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PROTOCOL_VERSION;

    fn request(transport: Transport) -> ConnectRequest {
        ConnectRequest {
            version: PROTOCOL_VERSION,
            transport,
            max_message: 4096,
            protocol: "t".into(),
            fds: FdTerms::NONE,
        }
    }

    #[test]
    fn a_whole_exchange_byte_by_byte() {
        let (mut c, hello) = ClientHandshake::new(&request(Transport::Socket));
        let mut s = ServerHandshake::new();
        let mut event = ServerEvent::NeedMore;
        for b in hello {
            assert_eq!(event, ServerEvent::NeedMore);
            s.buffer()[0] = b;
            event = s.received(1);
        }
        let ServerEvent::Request(Ok(req)) = std::mem::replace(&mut event, ServerEvent::NeedMore)
        else {
            panic!("no request")
        };
        assert_eq!(req.transport, Transport::Socket);
        assert!(s.buffer().is_empty(), "nothing read while deciding");
        let mut answer = ConnectResponse::reject(Status::Ok);
        answer.max_message = 4096;
        answer.fd_count = 2;
        let terms = FdTerms {
            per_message: 2,
            in_flight: 8,
            directories: false,
        };
        let bytes = s.accept(&answer, &terms, &[1]);
        assert_eq!(bytes.len(), RESPONSE_LEN + FD_TERMS_LEN + 1);
        let mut got = None;
        for b in bytes {
            c.buffer()[0] = b;
            if let ClientEvent::Accepted {
                answer,
                trailer,
                terms,
                ..
            } = c.received(1, PeerFds::default()).unwrap()
            {
                got = Some((answer, trailer, terms));
            }
        }
        let (a, trailer, t) = got.expect("accepted");
        assert_eq!((a.max_message, trailer, t), (4096, vec![1], terms));
        for b in ClientHandshake::confirm() {
            s.buffer()[0] = b;
            event = s.received(1);
        }
        assert_eq!(event, ServerEvent::Confirmed);
        assert!(s.buffer().is_empty());
    }

    #[test]
    fn refusals_and_lies() {
        let mut s = ServerHandshake::new();
        let mut hello = request(Transport::Shm).encode();
        hello[4] = 1; // version 1
        s.buffer().copy_from_slice(&hello);
        assert_eq!(
            s.received(REQUEST_LEN),
            ServerEvent::Request(Err(Status::VersionMismatch))
        );
        // A version-3 client sends 80 bytes and waits: it is answered.
        let mut s = ServerHandshake::new();
        let mut hello = request(Transport::Shm).encode();
        hello[4] = 3;
        s.buffer()[..REQUEST_HEAD_LEN].copy_from_slice(&hello[..REQUEST_HEAD_LEN]);
        assert_eq!(
            s.received(REQUEST_HEAD_LEN),
            ServerEvent::Request(Err(Status::VersionMismatch))
        );
        assert!(s.buffer().is_empty());
        let (mut c, _) = ClientHandshake::new(&request(Transport::Shm));
        let mut answer = ConnectResponse::reject(Status::Ok).encode();
        answer[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        c.buffer().copy_from_slice(&answer);
        assert!(matches!(
            c.received(RESPONSE_LEN, PeerFds::default()),
            Err(Error::Protocol(Violation::MaxAboveCeiling { .. }))
        ));
        let (mut c, _) = ClientHandshake::new(&request(Transport::Shm));
        let mut old = ConnectResponse::reject(Status::VersionMismatch).encode();
        old[4] = 1;
        c.buffer().copy_from_slice(&old);
        assert!(matches!(
            c.received(RESPONSE_LEN, PeerFds::default()),
            Err(Error::Rejected(Status::VersionMismatch))
        ));
    }
}
