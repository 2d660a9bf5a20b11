//! Commands from the driver to the peer, and the peer's replies, over the
//! control socket. Fixed-size, native-endian (both ends are on one
//! machine and built from one source).

use std::io::{self, Read, Write};
use std::time::Duration;

/// What the peer is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Push `count` records of `size` bytes on the response ring.
    RingSend = 1,
    /// Send `count` messages of `size` bytes on the seqpacket socket.
    SocketSend = 2,
    /// Answer `count` requests from the request ring on the response
    /// ring, each with a copy of the request.
    RingEcho = 3,
    /// Answer `count` seqpacket requests with a copy of each.
    SocketEcho = 4,
    /// Answer `count` rounds of the bare spin ping-pong.
    FloorEcho = 5,
    /// Write `count` messages of `size` bytes on the bare stream to the
    /// driver.
    BareSend = 6,
    /// Answer `count` requests on the bare streams with copies.
    BareEcho = 7,
    /// Answer `count` rounds of the eventfd sleep/wake ping-pong.
    WakeEcho = 8,
    /// Write `count` messages of `size` bytes on the bare header stream
    /// to the driver.
    HeadedSend = 9,
    /// Answer `count` requests on the bare header streams with copies.
    HeadedEcho = 10,
}

impl Op {
    fn from_word(w: u32) -> Option<Op> {
        Some(match w {
            1 => Op::RingSend,
            2 => Op::SocketSend,
            3 => Op::RingEcho,
            4 => Op::SocketEcho,
            5 => Op::FloorEcho,
            6 => Op::BareSend,
            7 => Op::BareEcho,
            8 => Op::WakeEcho,
            9 => Op::HeadedSend,
            10 => Op::HeadedEcho,
            _ => return None,
        })
    }
}

/// One command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// What to do.
    pub op: Op,
    /// Message size in bytes.
    pub size: u32,
    /// Number of messages (or rounds).
    pub count: u64,
    /// How long the peer's ring handles spin before sleeping.
    pub spin: Duration,
}

/// Size of an encoded [`Command`].
pub const COMMAND_LEN: usize = 24;

impl Command {
    /// Writes the command to `w`.
    ///
    /// # Errors
    ///
    /// Any error of `w`.
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        let mut b = [0u8; COMMAND_LEN];
        b[0..4].copy_from_slice(&(self.op as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&self.size.to_ne_bytes());
        b[8..16].copy_from_slice(&self.count.to_ne_bytes());
        let spin = u64::try_from(self.spin.as_nanos()).unwrap_or(u64::MAX);
        b[16..24].copy_from_slice(&spin.to_ne_bytes());
        w.write_all(&b)
    }

    /// Reads a command from `r`; `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    ///
    /// Any error of `r`; `InvalidData` for an unknown operation.
    pub fn read_from(mut r: impl Read) -> io::Result<Option<Command>> {
        let mut b = [0u8; COMMAND_LEN];
        match r.read_exact(&mut b) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let word = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let dword = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let op = Op::from_word(word(0))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown command"))?;
        Ok(Some(Command {
            op,
            size: word(4),
            count: dword(8),
            spin: Duration::from_nanos(dword(16)),
        }))
    }
}

/// The peer's answer to a command: done, or failed (the peer also
/// prints why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The command completed; the value is the CPU the peer was running
    /// on when it finished (`u64::MAX` if unknown), so that the driver
    /// can tell whether the two processes ended up sharing a CPU.
    Done(u64),
    /// The command failed.
    Failed,
}

/// Size of an encoded [`Reply`].
pub const REPLY_LEN: usize = 16;

impl Reply {
    /// Writes the reply to `w`.
    ///
    /// # Errors
    ///
    /// Any error of `w`.
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        let mut b = [0u8; REPLY_LEN];
        let (status, value) = match *self {
            Reply::Done(v) => (0u32, v),
            Reply::Failed => (1, 0),
        };
        b[0..4].copy_from_slice(&status.to_ne_bytes());
        b[8..16].copy_from_slice(&value.to_ne_bytes());
        w.write_all(&b)
    }

    /// Reads a reply from `r`.
    ///
    /// # Errors
    ///
    /// Any error of `r`; `UnexpectedEof` if the peer went away.
    pub fn read_from(mut r: impl Read) -> io::Result<Reply> {
        let mut b = [0u8; REPLY_LEN];
        r.read_exact(&mut b)?;
        let status = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes"));
        let value = u64::from_ne_bytes(b[8..16].try_into().expect("8 bytes"));
        Ok(if status == 0 {
            Reply::Done(value)
        } else {
            Reply::Failed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip() {
        let c = Command {
            op: Op::RingEcho,
            size: 65536,
            count: 1 << 40,
            spin: Duration::from_micros(20),
        };
        let mut buf = Vec::new();
        c.write_to(&mut buf).unwrap();
        assert_eq!(Command::read_from(&buf[..]).unwrap(), Some(c));
        assert_eq!(Command::read_from(&[][..]).unwrap(), None);
        for r in [Reply::Done(42), Reply::Failed] {
            let mut buf = Vec::new();
            r.write_to(&mut buf).unwrap();
            assert_eq!(Reply::read_from(&buf[..]).unwrap(), r);
        }
    }
}
