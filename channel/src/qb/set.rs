//! A libqb connection's channels, as a libqb server makes them
//! ([`offer_shm`]): three rings in a fresh directory, named in the
//! connection response.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use ringlink_common::qb::{
    ConnResponse, QbTransport, MAX_NAME, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
};
use ringlink_common::{Channel, Peer};
use ringlink_ringbuf::qb::QbRing;

use crate::named::RingAuth;
use crate::qb::dir::ConnDir;
use crate::qb::shm::{Header, QbShmReceiver, QbShmSender};
use crate::set::ServerSide;
use crate::{Receiver, Sender};

/// What a server made for a libqb client: the channels, and the answer
/// naming them.
#[derive(Debug)]
pub struct QbOffer {
    answer: Vec<u8>,
    max_msg_size: u32,
    request: Receiver,
    response: Sender,
    event: Sender,
    dir: ConnDir,
}

/// Who the connection is for.
#[derive(Clone, Copy, Debug)]
pub struct QbClient {
    /// The client's pid (in the directory's name, as libqb's).
    pub pid: i32,
    /// Owner and mode of the directory and files.
    pub auth: RingAuth,
}

/// Makes a connection's three rings for a libqb client, in a fresh
/// directory under `base` (normally `/dev/shm`) named as libqb's server
/// names it, for messages of `max_msg_size` bytes (headers included):
/// requests from the client (each announced by a byte on `stream`),
/// responses (held for their turn: a libqb client takes them in the order
/// of its requests), events (each announced by a byte on `stream`).
/// `level` is the flow-control word at once; `cookie` the response's
/// opaque value (libqb sends a heap pointer; the connection id here).
///
/// # Errors
///
/// `InvalidInput` if the names would be longer than libqb's; what the
/// system calls said (out of memory, fds, or room in `base`).
#[allow(clippy::too_many_arguments)]
pub fn offer_shm(
    base: &Path,
    service: &str,
    client: QbClient,
    n: u64,
    cookie: u64,
    max_msg_size: u32,
    stream: &Arc<UnixStream>,
    level: u32,
) -> io::Result<QbOffer> {
    let mut dir = ConnDir::make(base, client.pid, n, client.auth)?;
    let mut names = Vec::with_capacity(3);
    let mut rings = Vec::with_capacity(3);
    for which in ["request", "response", "event"] {
        let name = format!("qb-{which}-{service}");
        let path = dir.file_path(&name);
        if path.len() + "-header".len() > MAX_NAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "libqb ring names too long for the service name",
            ));
        }
        let (h, d) = (format!("{name}-header"), format!("{name}-data"));
        let header = dir.create(&h, client.auth)?;
        let data = dir.create(&d, client.auth)?;
        rings.push(QbRing::create(
            &header,
            &data,
            &dir.file_path(&h),
            &dir.file_path(&d),
            max_msg_size,
        )?);
        names.push(path);
    }
    let mut rings = rings.into_iter();
    let (Some(rq), Some(rs), Some(ev)) = (rings.next(), rings.next(), rings.next()) else {
        unreachable!("three rings");
    };
    rq.set_fc(level as i32);
    let mut names = names.into_iter();
    let answer = ConnResponse {
        error: 0,
        transport: QbTransport::Shm,
        max_msg_size,
        cookie,
        request: names.next().unwrap_or_default(),
        response: names.next().unwrap_or_default(),
        event: names.next().unwrap_or_default(),
    }
    .encode();
    let max = max_msg_size as usize;
    Ok(QbOffer {
        answer,
        max_msg_size,
        request: Receiver::QbShm(QbShmReceiver::new(
            rq,
            Header::Request,
            Channel::Request,
            Peer::Client,
            max.saturating_sub(REQUEST_HEADER_LEN),
        )),
        response: Sender::QbShm(QbShmSender::new(
            rs,
            Header::Response,
            None,
            true,
            Channel::Response,
            Peer::Client,
        )),
        event: Sender::QbShm(QbShmSender::new(
            ev,
            Header::Response,
            Some(stream.clone()),
            false,
            Channel::Event,
            Peer::Client,
        )),
        dir,
    })
}

impl QbOffer {
    /// The connection response's bytes (sent in one `send`: libqb 2.0's
    /// client reads it with one non-blocking read).
    pub fn answer(&self) -> &[u8] {
        &self.answer
    }

    /// The largest payload of a response or an event (the negotiated
    /// size less the response header).
    pub fn max_message(&self) -> usize {
        (self.max_msg_size as usize).saturating_sub(RESPONSE_HEADER_LEN)
    }

    /// The answer went: the connection starts (a libqb client confirms
    /// nothing). The channels, split between the loop and the
    /// connection's senders.
    pub fn accept(self) -> (ServerSide, Sender, Sender) {
        (
            ServerSide::qb_shm(self.request, self.dir),
            self.response,
            self.event,
        )
    }
}

/// Opens the rings a libqb server's accepting `answer` names, as its
/// client: each name must be a file prefix in a `qb-…` directory directly
/// under `base` (normally `/dev/shm`), owned by the server's user or
/// ours; the `-header` and `-data` files are opened in it without
/// following links, never resized, and must be as large as the
/// negotiated size makes them (libqb's client opens the data file by the
/// path the server wrote in shared memory, and resizes both; ringlink
/// does neither). Requests are announced by a byte on `stream`.
///
/// # Errors
///
/// [`Error::Protocol`] for a name or a file the protocol does not allow;
/// [`Error::Io`].
pub fn open_shm(
    answer: &ConnResponse,
    base: &Path,
    server: ringlink_common::Credentials,
    stream: &Arc<UnixStream>,
) -> Result<crate::set::ClientSide, ringlink_common::Error> {
    use ringlink_common::{Error, RingRefusal, Violation};
    use ringlink_ringbuf::qb::QbOpenError;
    let refused = |channel, refusal| {
        Error::Protocol(Violation::RingRefused {
            channel,
            named: true,
            refusal,
        })
    };
    let mut rings = Vec::with_capacity(3);
    for (channel, name) in
        Channel::ALL
            .into_iter()
            .zip([&answer.request, &answer.response, &answer.event])
    {
        let (dir, file) = crate::qb::dir::OpenedDir::open(base, name, server.uid)
            .map_err(|_| Error::Protocol(Violation::RingPath))?;
        let part = |suffix: &str| {
            let mut n = file.clone();
            n.push(suffix);
            dir.open_file(&n, server.uid)
                .map_err(|_| refused(channel, RingRefusal::Incompatible("libqb ring file")))
        };
        let (header, data) = (part("-header")?, part("-data")?);
        let ring = QbRing::open(&header, &data, answer.max_msg_size).map_err(|e| match e {
            QbOpenError::Size => refused(channel, RingRefusal::Size),
            QbOpenError::Io(e) => Error::Io(e),
            _ => refused(channel, RingRefusal::Incompatible("libqb ring")),
        })?;
        rings.push(ring);
    }
    let mut rings = rings.into_iter();
    let (Some(rq), Some(rs), Some(ev)) = (rings.next(), rings.next(), rings.next()) else {
        unreachable!("three rings");
    };
    let max = (answer.max_msg_size as usize).saturating_sub(RESPONSE_HEADER_LEN);
    Ok(crate::set::ClientSide::qb_shm(
        Sender::QbShm(QbShmSender::new(
            rq,
            Header::Request,
            Some(stream.clone()),
            false,
            Channel::Request,
            Peer::Server,
        )),
        Receiver::QbShm(QbShmReceiver::new(
            rs,
            Header::Response,
            Channel::Response,
            Peer::Server,
            max,
        )),
        Receiver::QbShm(QbShmReceiver::new(
            ev,
            Header::Response,
            Channel::Event,
            Peer::Server,
            max,
        )),
    ))
}
