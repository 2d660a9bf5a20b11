//! A libqb connection's channels, as a libqb server makes them
//! ([`offer_shm`]): three rings in a fresh directory, named in the
//! connection response.

use std::io;
use std::os::unix::ffi::OsStrExt;
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
use crate::qb::socket::{self as dgram, QbSockReceiver, QbSockSender};
use crate::set::ServerSide;
use crate::{Receiver, Sender};
use ringlink_common::qb::{control, dgram_name};
use ringlink_ringbuf::guard::GuardedMap;
use std::os::fd::{AsFd, OwnedFd};

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
    /// The socket transport's control file and sockets.
    sockets: Option<(Arc<GuardedMap>, [Arc<OwnedFd>; 2])>,
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
        sockets: None,
    })
}

/// Makes a connection's channels for a libqb client over libqb's socket
/// transport: a control file (its `sent` counters and flow-control word)
/// in a fresh directory under `base`, a request/response socket and an
/// event socket bound to names derived from the directory (see
/// [`offer_shm`] for the rest). The client binds its own after the
/// answer; the server's sockets connect to them at the first message.
///
/// # Errors
///
/// As [`offer_shm`].
pub fn offer_socket(
    base: &Path,
    service: &str,
    client: QbClient,
    n: u64,
    cookie: u64,
    max_msg_size: u32,
    level: u32,
) -> io::Result<QbOffer> {
    let mut dir = ConnDir::make(base, client.pid, n, client.auth)?;
    let ctl_name = format!("qb-control-{service}");
    let ctl_path = dir.file_path(&ctl_name);
    let prefix = dir.file_path("qb");
    let mut sock_base = prefix;
    sock_base.extend_from_slice(format!("-{service}").as_bytes());
    if ctl_path.len() > MAX_NAME || sock_base.len() > MAX_NAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "libqb names too long for the service name",
        ));
    }
    let file = dir.create(&ctl_name, client.auth)?;
    // Its memory allocated now, as the rings' (`qb::allocate`).
    ringlink_ringbuf::qb::allocate(&file, control::LEN as u64)?;
    let ctl = Arc::new(GuardedMap::map(file.as_fd(), control::LEN)?);
    ctl.u32(control::FLOW_CONTROL)
        .store(level, std::sync::atomic::Ordering::Release);
    let name = |suffix: &str| {
        let mut n = sock_base.clone();
        n.extend_from_slice(suffix.as_bytes());
        n
    };
    let max = max_msg_size as usize;
    let rr = Arc::new(dgram::bound(&name("-request"), max)?);
    let ev = Arc::new(dgram::bound(&name("-event-tx"), max)?);
    let client_rr = dgram_name(&name("-response"));
    let client_ev = dgram_name(&name("-event"));
    let answer = ConnResponse {
        error: 0,
        transport: QbTransport::Socket,
        max_msg_size,
        cookie,
        request: ctl_path,
        response: sock_base,
        event: Vec::new(),
    }
    .encode();
    Ok(QbOffer {
        answer,
        max_msg_size,
        request: Receiver::QbSocket(QbSockReceiver::new(
            rr.clone(),
            Header::Request,
            Channel::Request,
            Peer::Client,
            max.saturating_sub(REQUEST_HEADER_LEN),
            ctl.clone(),
            control::REQUEST_SENT,
            Some(client_rr),
        )),
        response: Sender::QbSocket(QbSockSender::new(
            rr.clone(),
            Some(client_rr),
            Header::Response,
            ctl.clone(),
            control::RESPONSE_SENT,
            true,
        )),
        event: Sender::QbSocket(QbSockSender::new(
            ev.clone(),
            Some(client_ev),
            Header::Response,
            ctl.clone(),
            control::EVENT_SENT,
            false,
        )),
        dir,
        sockets: Some((ctl, [rr, ev])),
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
        let side = match self.sockets {
            None => ServerSide::qb_shm(self.request, self.dir),
            Some((ctl, fds)) => ServerSide::qb_socket(self.request, self.dir, ctl, fds),
        };
        (side, self.response, self.event)
    }
}

/// Opens the rings a libqb server's accepting `answer` names, as its
/// client: the three names must be file prefixes in one `qb-…` directory
/// directly under `base` (normally `/dev/shm`), owned by the server's
/// user or ours; the `-header` and `-data` files are opened in it without
/// following links, never resized, and must be as large as the
/// negotiated size makes them (libqb's client opens the data file by the
/// path the server wrote in shared memory, and resizes both; ringlink
/// does neither); each ring must be fresh, its `ref_count` 1
/// (`QbRing::open`: not a ring of another connection of this user's,
/// which libqb servers chown to their client). Requests are announced
/// by a byte on `stream`.
///
/// # Errors
///
/// [`Error::Protocol`](ringlink_common::Error::Protocol) for a name or a file the protocol does not allow;
/// [`Error::Io`](ringlink_common::Error::Io).
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
    // One directory for the three, as libqb's server makes them.
    let dir_of = |name: &[u8]| {
        Path::new(std::ffi::OsStr::from_bytes(name))
            .parent()
            .map(Path::to_path_buf)
    };
    let dir = dir_of(&answer.request);
    if dir.is_none() || dir_of(&answer.response) != dir || dir_of(&answer.event) != dir {
        return Err(Error::Protocol(Violation::RingPath));
    }
    // Opened once, by the request's name: every file is opened relative
    // to this fd, whatever happens to the paths meanwhile.
    let (dir, _) = crate::qb::dir::OpenedDir::open(base, &answer.request, server.uid)
        .map_err(|_| Error::Protocol(Violation::RingPath))?;
    let mut rings: Vec<QbRing> = Vec::with_capacity(3);
    // The rings taken so far are given back if a later one is refused.
    let give_back = |rings: &[QbRing]| rings.iter().for_each(QbRing::leave);
    for (channel, name) in
        Channel::ALL
            .into_iter()
            .zip([&answer.request, &answer.response, &answer.event])
    {
        let opened = (|| {
            let file = Path::new(std::ffi::OsStr::from_bytes(name))
                .file_name()
                .ok_or(Error::Protocol(Violation::RingPath))?
                .to_owned();
            let part = |suffix: &str| {
                let mut n = file.clone();
                n.push(suffix);
                dir.open_file(&n, server.uid)
                    .map_err(|_| refused(channel, RingRefusal::Incompatible("libqb ring file")))
            };
            let (header, data) = (part("-header")?, part("-data")?);
            QbRing::open(&header, &data, answer.max_msg_size).map_err(|e| match e {
                QbOpenError::Size => refused(channel, RingRefusal::Size),
                QbOpenError::InUse(_) => refused(
                    channel,
                    RingRefusal::Incompatible("libqb ring already held (ref_count not 1)"),
                ),
                QbOpenError::Io(e) => Error::Io(e),
                _ => refused(channel, RingRefusal::Incompatible("libqb ring")),
            })
        })();
        match opened {
            Ok(ring) => rings.push(ring),
            Err(e) => {
                give_back(&rings);
                return Err(e);
            }
        }
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

/// Opens the channels a libqb server's accepting `answer` names over its
/// socket transport, as its client: the control file (by name, checked
/// as [`open_shm`] checks ring files, and never resized), then the
/// request/response and event sockets, bound and connected to names in
/// the same directory.
///
/// # Errors
///
/// As [`open_shm`].
pub fn open_socket(
    answer: &ConnResponse,
    base: &Path,
    server: ringlink_common::Credentials,
) -> Result<crate::set::ClientSide, ringlink_common::Error> {
    use ringlink_common::{Error, RingRefusal, Violation};
    let (dir, file) = crate::qb::dir::OpenedDir::open(base, &answer.request, server.uid)
        .map_err(|_| Error::Protocol(Violation::RingPath))?;
    let refused = |refusal| {
        Error::Protocol(Violation::RingRefused {
            channel: Channel::Request,
            named: true,
            refusal,
        })
    };
    let ctl_file = dir
        .open_file(&file, server.uid)
        .map_err(|_| refused(RingRefusal::Incompatible("libqb control file")))?;
    if ctl_file.metadata()?.len() != control::LEN as u64 {
        return Err(refused(RingRefusal::Size));
    }
    let ctl = Arc::new(GuardedMap::map(ctl_file.as_fd(), control::LEN)?);
    // The sockets' names must be of the same directory as the file.
    let dir_path = Path::new(std::ffi::OsStr::from_bytes(&answer.request))
        .parent()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let base_name = &answer.response;
    if dir_path.is_empty()
        || !base_name.starts_with(&dir_path)
        || base_name.get(dir_path.len()) != Some(&b'/')
        || base_name[dir_path.len() + 1..].contains(&b'/')
    {
        return Err(Error::Protocol(Violation::RingPath));
    }
    let name = |suffix: &str| {
        let mut n = base_name.clone();
        n.extend_from_slice(suffix.as_bytes());
        n
    };
    let max = answer.max_msg_size as usize;
    let pair = |ours: &str, theirs: &str| -> Result<Arc<OwnedFd>, Error> {
        let fd = dgram::bound(&name(ours), max)?;
        if !dgram::connect(fd.as_fd(), &dgram_name(&name(theirs)))? {
            return Err(refused(RingRefusal::Incompatible("libqb socket")));
        }
        Ok(Arc::new(fd))
    };
    let rr = pair("-response", "-request")?;
    let ev = pair("-event", "-event-tx")?;
    let payload = max.saturating_sub(RESPONSE_HEADER_LEN);
    Ok(crate::set::ClientSide::qb_socket(
        Sender::QbSocket(QbSockSender::new(
            rr.clone(),
            None,
            Header::Request,
            ctl.clone(),
            control::REQUEST_SENT,
            false,
        )),
        Receiver::QbSocket(QbSockReceiver::new(
            rr,
            Header::Response,
            Channel::Response,
            Peer::Server,
            payload,
            ctl.clone(),
            control::RESPONSE_SENT,
            None,
        )),
        Receiver::QbSocket(QbSockReceiver::new(
            ev,
            Header::Response,
            Channel::Event,
            Peer::Server,
            payload,
            ctl.clone(),
            control::EVENT_SENT,
            None,
        )),
        ctl,
    ))
}
