//! Text lines over the socket a test shares with its helper process: the
//! helper reports facts (`ready ...`, `connected ...`, `result ...`), the
//! test sends commands (`stats`, `shutdown`). One line per message, every
//! read with a deadline on the test side.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Line-oriented reading and writing on a Unix stream socket.
#[derive(Debug)]
pub struct Lines {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Bytes of a line whose end has not arrived yet (kept across a
    /// timed-out read).
    partial: Vec<u8>,
}

impl Lines {
    /// Reads and writes lines on (clones of) `sock`.
    ///
    /// # Errors
    ///
    /// If the socket cannot be cloned.
    pub fn new(sock: &UnixStream) -> io::Result<Lines> {
        Ok(Lines {
            reader: BufReader::new(sock.try_clone()?),
            writer: sock.try_clone()?,
            partial: Vec::new(),
        })
    }

    /// Writes `line` and a newline.
    ///
    /// # Errors
    ///
    /// The write's error.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        let mut b = Vec::with_capacity(line.len() + 1);
        b.extend_from_slice(line.as_bytes());
        b.push(b'\n');
        self.writer.write_all(&b)
    }

    /// The next line, without its newline; `Ok(None)` at end of stream.
    /// `timeout` `None` waits forever.
    ///
    /// # Errors
    ///
    /// `TimedOut` if no whole line came within `timeout`; the read's
    /// error otherwise.
    pub fn recv(&mut self, timeout: Option<Duration>) -> io::Result<Option<String>> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout.map(|t| t.max(Duration::from_millis(1))))?;
        match self.reader.read_until(b'\n', &mut self.partial) {
            Ok(0) if self.partial.is_empty() => Ok(None),
            Ok(_) => {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Ok(Some(String::from_utf8_lossy(&line).into_owned()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no line within {timeout:?}"),
            )),
            Err(e) => Err(e),
        }
    }
}
