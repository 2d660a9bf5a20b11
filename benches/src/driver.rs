//! The driving side of the two-process benchmarks: spawns the peer,
//! hands it the rings and sockets, and times the runs.

use std::fs::File;
use std::hint::black_box;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ringlink_common::fdpass::send_fds;
use ringlink_ringbuf::{Consumer, Producer, Ring, WakeMode, DEFAULT_SPIN};

use crate::bare::{Bare, Dir};
use crate::floor::Floor;
use crate::peer::HELLO;
use crate::wake::WakeFloor;
use crate::wire::{self, Op, Reply};
use crate::{ops, other, seqpacket, STALL};

/// How to start the peer.
#[derive(Clone, Copy, Debug)]
pub struct PeerOptions {
    /// Capacity of each of the two rings, in bytes (a power of two).
    pub capacity: usize,
    /// CPU to pin the peer to, if any.
    pub cpu: Option<usize>,
}

/// A running peer process with the driver's ends of everything shared
/// with it. Dropping it closes the control socket and reaps the peer
/// (killing it if it does not exit promptly).
#[derive(Debug)]
pub struct Peer {
    control: UnixStream,
    /// Request ring, driver → peer.
    req: Producer,
    /// Response ring, peer → driver (also the one-way ring).
    resp: Consumer,
    sock: File,
    floor: Floor,
    bare: Bare,
    wake: WakeFloor,
    /// Commands completed, and how many of them ended with both
    /// processes on one CPU.
    runs: u64,
    shared_cpu: u64,
    // Last: dropped after the control socket has closed, so that a healthy
    // peer exits by itself before the guard resorts to killing it.
    child: ChildGuard,
}

impl Peer {
    /// Starts `exe --peer` (the `ring-bench` binary) and sets it up.
    ///
    /// # Errors
    ///
    /// If the process, the rings, the sockets or the set-up fail.
    pub fn spawn(exe: &Path, opts: &PeerOptions) -> io::Result<Peer> {
        let (control, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(exe);
        cmd.arg("--peer");
        if let Some(cpu) = opts.cpu {
            cmd.arg("--cpu").arg(cpu.to_string());
        }
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null());
        let child = ChildGuard(cmd.spawn()?);
        control.set_read_timeout(Some(STALL))?;
        control.set_write_timeout(Some(STALL))?;

        let ring = |name| Ring::create_memfd(name, opts.capacity, WakeMode::EventFd).map_err(other);
        let (request, response) = (ring("ringlink-bench-req")?, ring("ringlink-bench-resp")?);
        let (sock, their_sock) = seqpacket::pair()?;
        let floor = Floor::create()?;
        let bare = Bare::create()?;
        let wake = WakeFloor::create()?;
        let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(crate::peer::SETUP_FDS);
        for r in [&request, &response] {
            let missing = || io::Error::other("memfd ring without its fds");
            fds.push(r.memory_fd().ok_or_else(missing)?);
            fds.push(r.data_ready_fd().ok_or_else(missing)?);
            fds.push(r.space_ready_fd().ok_or_else(missing)?);
        }
        fds.push(their_sock.as_fd());
        fds.push(floor.fd());
        fds.push(bare.fd());
        fds.extend(wake.fds());
        send_fds(&control, HELLO, &fds)?;
        drop(fds);
        drop(their_sock);
        let mut peer = Peer {
            req: request.producer().map_err(other)?,
            resp: response.consumer().map_err(other)?,
            control,
            sock,
            floor,
            bare,
            wake,
            runs: 0,
            shared_cpu: 0,
            child,
        };
        // An empty command: its reply says the peer has mapped and
        // claimed its ends.
        peer.floor_round_trips(0, None)?;
        (peer.runs, peer.shared_cpu) = (0, 0);
        Ok(peer)
    }

    /// How many runs so far ended with the driver and the peer on the
    /// same CPU, and how many runs there were. Spinning measurements of
    /// such runs are worthless (each side spins away the other's time
    /// slice): the scheduler puts a process woken through a Unix socket
    /// next to its waker (a "sync" wake-up), which is why the benches pin
    /// the two processes apart when they can.
    pub fn cpu_sharing(&self) -> (u64, u64) {
        (self.shared_cpu, self.runs)
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn start(&self, op: Op, size: usize, count: u64, spin: Duration) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
        wire::Command {
            op,
            size,
            count,
            spin,
        }
        .write_to(&self.control)
    }

    fn finish(&mut self, ours: io::Result<(Duration, u64)>) -> io::Result<Duration> {
        // Our error first: a failing driver loop usually leaves the peer
        // waiting, and its reply would only time out.
        let (took, acc) = ours?;
        black_box(acc);
        // Where we ran at the end of the run, before the wait for the
        // reply can move us.
        let mine = crate::cpu::current();
        match Reply::read_from(&self.control)? {
            Reply::Done(theirs) => {
                self.runs += 1;
                if mine.is_some_and(|c| c as u64 == theirs) {
                    self.shared_cpu += 1;
                }
                Ok(took)
            }
            Reply::Failed => Err(io::Error::other("the peer failed (its message is above)")),
        }
    }

    /// One-way ring throughput: the peer pushes `count + 1` records of
    /// `size` bytes; returns the time the driver took to receive the last
    /// `count` of them (from the first one's arrival). Both sides use the
    /// default spin; the driver, a reader that drains a stream, publishes
    /// its releases every eighth of the ring
    /// ([`Consumer::set_release_batch`], as ringlink's server does on its
    /// request rings).
    ///
    /// # Errors
    ///
    /// A ring or peer failure, a wrong record, or a stall.
    pub fn ring_one_way(&mut self, size: usize, count: u64) -> io::Result<Duration> {
        self.ring_one_way_batched(size, count, self.resp.capacity() / 8)
    }

    /// [`ring_one_way`](Self::ring_one_way) with the driver publishing
    /// its releases every `batch` bytes (0: at every release).
    ///
    /// # Errors
    ///
    /// As `ring_one_way`.
    pub fn ring_one_way_batched(
        &mut self,
        size: usize,
        count: u64,
        batch: usize,
    ) -> io::Result<Duration> {
        self.resp.set_release_batch(batch);
        self.resp.set_spin(DEFAULT_SPIN);
        self.start(Op::RingSend, size, count + 1, DEFAULT_SPIN)?;
        let ours = ops::receive(&mut self.resp, size, count);
        self.finish(ours)
    }

    /// One-way `SOCK_SEQPACKET` throughput, as [`ring_one_way`](Self::ring_one_way).
    ///
    /// # Errors
    ///
    /// A socket or peer failure, a wrong message, or a stall.
    pub fn socket_one_way(&mut self, size: usize, count: u64) -> io::Result<Duration> {
        self.start(Op::SocketSend, size, count + 1, Duration::ZERO)?;
        let ours = seqpacket::receive(&self.sock, size, count);
        self.finish(ours)
    }

    /// `count` ring round trips of `size`-byte requests and responses,
    /// every ring handle on both sides spinning for `spin` before it
    /// sleeps. Returns the total time; with `samples`, appends each round
    /// trip's nanoseconds.
    ///
    /// # Errors
    ///
    /// As [`ring_one_way`](Self::ring_one_way).
    pub fn ring_round_trips(
        &mut self,
        size: usize,
        count: u64,
        spin: Duration,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<Duration> {
        self.req.set_spin(spin);
        self.resp.set_spin(spin);
        // Each read finds the ring empty next: releases are published at
        // once either way.
        self.resp.set_release_batch(0);
        self.start(Op::RingEcho, size, count, spin)?;
        let ours = ops::round_trips(&mut self.req, &mut self.resp, size, count, samples);
        self.finish(ours)
    }

    /// `count` `SOCK_SEQPACKET` round trips (blocking reads on both
    /// sides), as [`ring_round_trips`](Self::ring_round_trips).
    ///
    /// # Errors
    ///
    /// As [`socket_one_way`](Self::socket_one_way).
    pub fn socket_round_trips(
        &mut self,
        size: usize,
        count: u64,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<Duration> {
        self.start(Op::SocketEcho, size, count, Duration::ZERO)?;
        let ours = seqpacket::round_trips(&self.sock, size, count, samples);
        self.finish(ours)
    }

    /// `count` rounds of the bare spin ping-pong ([`Floor`]).
    ///
    /// # Errors
    ///
    /// A stall or a peer failure.
    pub fn floor_round_trips(
        &mut self,
        count: u64,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<Duration> {
        self.start(Op::FloorEcho, 0, count, Duration::ZERO)?;
        let ours = self.floor.drive(count, samples).map(|t| (t, 0));
        self.finish(ours)
    }

    /// `count` rounds of the eventfd sleep/wake ping-pong ([`WakeFloor`]).
    ///
    /// # Errors
    ///
    /// A stall, an eventfd error or a peer failure.
    pub fn wake_round_trips(
        &mut self,
        count: u64,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<Duration> {
        self.start(Op::WakeEcho, 0, count, Duration::ZERO)?;
        let ours = self.wake.drive(count, samples).map(|t| (t, 0));
        self.finish(ours)
    }

    /// One-way throughput of the bare shared-memory stream ([`Bare`]),
    /// as [`ring_one_way`](Self::ring_one_way).
    ///
    /// # Errors
    ///
    /// A stall, a wrong message or a peer failure.
    pub fn bare_one_way(&mut self, size: usize, count: u64) -> io::Result<Duration> {
        self.start(Op::BareSend, size, count + 1, Duration::ZERO)?;
        let ours = self.bare.receive(Dir::ToDriver, size, count);
        self.finish(ours)
    }

    /// Round trips over the two bare streams, as
    /// [`ring_round_trips`](Self::ring_round_trips) (always spinning).
    ///
    /// # Errors
    ///
    /// As [`bare_one_way`](Self::bare_one_way).
    pub fn bare_round_trips(
        &mut self,
        size: usize,
        count: u64,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<Duration> {
        self.start(Op::BareEcho, size, count, Duration::ZERO)?;
        let ours = self.bare.round_trips(size, count, samples);
        self.finish(ours)
    }

    /// One-way throughput of the bare header-polling stream ([`Bare`]'s
    /// header streams), as [`ring_one_way`](Self::ring_one_way).
    ///
    /// # Errors
    ///
    /// A stall, a wrong message or a peer failure.
    pub fn headed_one_way(&mut self, size: usize, count: u64) -> io::Result<Duration> {
        self.bare.reset_headed();
        self.start(Op::HeadedSend, size, count + 1, Duration::ZERO)?;
        let ours = self.bare.receive_headed(Dir::ToDriver, size, count);
        self.finish(ours)
    }

    /// Round trips over the two bare header streams, as
    /// [`ring_round_trips`](Self::ring_round_trips) (always spinning).
    ///
    /// # Errors
    ///
    /// As [`headed_one_way`](Self::headed_one_way).
    pub fn headed_round_trips(
        &mut self,
        size: usize,
        count: u64,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<Duration> {
        self.bare.reset_headed();
        self.start(Op::HeadedEcho, size, count, Duration::ZERO)?;
        let ours = self.bare.round_trips_headed(size, count, samples);
        self.finish(ours)
    }

    /// Closes the control socket and waits for the peer to exit.
    ///
    /// # Errors
    ///
    /// If the peer exits unsuccessfully or has to be killed.
    pub fn close(mut self) -> io::Result<()> {
        self.control.shutdown(Shutdown::Both)?;
        match self.child.reap(Duration::from_secs(5))? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(io::Error::other(format!("peer exited with {status}"))),
            None => Err(io::Error::other("peer did not exit; killed")),
        }
    }
}

/// Owns a child process (the peer, or `ipc-bench`'s servers and
/// clients): kills and reaps it when dropped, unless it has already
/// exited (so no zombie or orphan survives a failing bench).
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Waits up to `timeout` for the child to exit; `None` if it did not.
    ///
    /// # Errors
    ///
    /// If `waitpid` fails.
    pub fn reap(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.reap(Duration::from_secs(1)) {
            return;
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
