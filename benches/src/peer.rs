//! The peer process: `ring-bench --peer [--cpu N]`, spawned by
//! [`Peer::spawn`](crate::driver::Peer::spawn) with the control socket as
//! its standard input. It receives the rings and sockets, then runs the
//! driver's commands one after the other until the socket closes.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use ringlink_common::fdpass::recv_fds;
use ringlink_ringbuf::{Ring, WakeFds};

use crate::bare::{Bare, Dir};
use crate::floor::Floor;
use crate::wake::WakeFloor;
use crate::wire::{Command, Op, Reply};
use crate::{ops, other, seqpacket};

/// The bytes that accompany the fds of the set-up message.
pub const HELLO: &[u8] = b"ringlink-bench/3";

/// Number of fds in the set-up message: request ring (memory, data-ready,
/// space-ready), response ring (the same three), seqpacket end, floor
/// page, bare streams, the two eventfds of the sleep/wake floor.
pub const SETUP_FDS: usize = 11;

/// Entry point of `ring-bench --peer`; `args` are the arguments after
/// `--peer` (`--cpu N` pins the peer to CPU `N`).
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring-bench peer (pid {}): {e}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> io::Result<()> {
    // Die with the driver, even if it is killed outright: the peer may be
    // spinning where it would never see the control socket close.
    set_pdeathsig(Signal::SIGKILL)?;
    match args {
        [] => {}
        [flag, cpu] if flag == "--cpu" => {
            let cpu = cpu
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "--cpu needs a number"))?;
            crate::cpu::pin(cpu)?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "usage: ring-bench --peer [--cpu N] (with the control socket as stdin)",
            ))
        }
    }
    let control = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    serve(control)
}

/// Receives the set-up message on `control`, then serves commands until
/// the driver closes it.
///
/// # Errors
///
/// A malformed set-up, a ring that cannot be opened or claimed, or the
/// first failing command (after replying [`Reply::Failed`]).
pub fn serve(control: UnixStream) -> io::Result<()> {
    let mut hello = [0u8; 64];
    let (n, fds) = recv_fds(&control, &mut hello)?;
    if &hello[..n] != HELLO || fds.len() != SETUP_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad set-up message ({n} bytes, {} fds)", fds.len()),
        ));
    }
    let mut fds = fds.into_iter();
    let mut next = move || -> OwnedFd { fds.next().expect("count checked") };
    let mut open_ring = || {
        let memory = next();
        let wake = WakeFds {
            data_ready: next(),
            space_ready: next(),
        };
        Ring::from_fds(memory, Some(wake)).map_err(other)
    };
    let request = open_ring()?;
    let response = open_ring()?;
    let sock: File = seqpacket::prepare(next())?;
    let floor = Floor::from_fd(next())?;
    let bare = Bare::from_fd(next())?;
    let wake = WakeFloor::from_fds(next(), next());
    let mut rx = request.consumer().map_err(other)?;
    let mut tx = response.producer().map_err(other)?;

    while let Some(cmd) = Command::read_from(&control)? {
        let size = cmd.size as usize;
        rx.set_spin(cmd.spin);
        tx.set_spin(cmd.spin);
        let done = match cmd.op {
            Op::RingSend => ops::send(&mut tx, size, cmd.count),
            Op::SocketSend => seqpacket::send(&sock, size, cmd.count),
            Op::RingEcho => ops::echo(&mut rx, &mut tx, cmd.count),
            Op::SocketEcho => seqpacket::echo(&sock, size, cmd.count),
            Op::FloorEcho => floor.answer(cmd.count),
            Op::BareSend => bare.send_n(Dir::ToDriver, size, cmd.count),
            Op::BareEcho => bare.echo(size, cmd.count),
            Op::HeadedSend => bare.send_n_headed(Dir::ToDriver, size, cmd.count),
            Op::HeadedEcho => bare.echo_headed(size, cmd.count),
            Op::WakeEcho => wake.answer(cmd.count),
        };
        match done {
            Ok(()) => {
                let cpu = crate::cpu::current().map_or(u64::MAX, |c| c as u64);
                Reply::Done(cpu).write_to(&control)?
            }
            Err(e) => {
                let _ = Reply::Failed.write_to(&control);
                return Err(io::Error::new(e.kind(), format!("{:?}: {e}", cmd.op)));
            }
        }
    }
    Ok(())
}
