//! The socket under a connection: one stream shared by every thread of the connection,
//! read through a buffer (so one recv can deliver several requests) and written with
//! one vectored send per reply.

use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// A connected Unix or TCP socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    /// Let replies queue in the kernel instead of blocking their thread: with 16
    /// requests of 128 KiB in flight, the default send buffer (~200 KiB) holds one
    /// read reply. The kernel clamps the value to net.core.wmem_max.
    pub(crate) fn enlarge_send_buffer(&self) {
        let size: libc::c_int = SEND_BUFFER;
        // SAFETY: setsockopt on a socket we own, reading one c_int we pass by pointer
        // with its exact length.
        let r = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "cannot enlarge SO_SNDBUF");
        }
    }

    /// Shut down one or both directions; a thread blocked in recv then sees end of file.
    pub(crate) fn shutdown(&self, how: Shutdown) {
        // ENOTCONN when the peer is already gone: nothing left to do.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }

    /// One recv; retried on EINTR.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_flags(buf, 0)
    }

    /// One recv that waits for all of `buf` (short only at end of file or on error).
    pub(crate) fn recv_all(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_flags(buf, libc::MSG_WAITALL)
    }

    fn recv_flags(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        loop {
            // SAFETY: recv writes at most buf.len() bytes into memory we borrow
            // mutably for the call, on a socket we own.
            let n = unsafe { libc::recv(self.fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Send every byte of `bufs`, in as few sendmsg calls as the kernel allows. Uses
    /// MSG_NOSIGNAL so a vanished client is an EPIPE error, never a SIGPIPE, whatever
    /// the host program did with that signal.
    pub(crate) fn send_all(&self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            let iovcnt = bufs.len().min(libc::UIO_MAXIOV as usize);
            // SAFETY: msghdr is plain data; all-zero is a valid empty header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is guaranteed ABI-compatible with struct iovec on Unix, and the
            // kernel only reads through msg_iov.
            msg.msg_iov = bufs.as_mut_ptr().cast::<libc::iovec>();
            msg.msg_iovlen = iovcnt as _;
            // SAFETY: fd is an open socket owned by self; msg points at `iovcnt` valid
            // iovecs borrowed for the duration of the call.
            let n = unsafe { libc::sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut bufs, n as usize);
        }
        Ok(())
    }
}

/// Buffered reading side of a connection. Small messages (request headers, small write
/// payloads) come out of the buffer; large payloads are read straight into the
/// caller's memory so they are copied only once.
pub(crate) struct Reader {
    stream: Arc<Stream>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Fetch only what the current message needs, not a whole buffer.
    exact: bool,
}

/// Requested socket send buffer.
const SEND_BUFFER: libc::c_int = 4 << 20;
/// Bytes fetched by one recv when the buffer runs dry.
const READ_BUFFER: usize = 32 << 10;
/// Payload remainders at least this long bypass the buffer.
const DIRECT_READ: usize = 16 << 10;

impl Reader {
    pub(crate) fn new(stream: Arc<Stream>) -> Self {
        Reader {
            stream,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            exact: false,
        }
    }

    /// Say whether large payloads follow the messages: then reading ahead would
    /// only copy payload bytes through the buffer, so only headers are fetched.
    pub(crate) fn expect_large_payloads(&mut self, large: bool) {
        self.exact = large;
    }

    /// Fill `dst` completely. `Ok(false)` means the peer closed the stream cleanly
    /// before the first byte; end of file after that is an error.
    pub(crate) fn read_message(&mut self, dst: &mut [u8]) -> io::Result<bool> {
        let mut filled = self.take_buffered(dst);
        while filled < dst.len() {
            let rest = &mut dst[filled..];
            let n = if rest.len() >= DIRECT_READ {
                self.stream.recv_all(rest)?
            } else {
                let want = if self.exact {
                    rest.len()
                } else {
                    self.buf.len()
                };
                let n = self.stream.recv(&mut self.buf[..want])?;
                self.start = 0;
                self.end = n;
                self.take_buffered(rest)
            };
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
        }
        Ok(true)
    }

    /// The bytes received but not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Fill `dst` completely; any end of file is an error.
    pub(crate) fn read_exact(&mut self, dst: &mut [u8]) -> io::Result<()> {
        if dst.is_empty() || self.read_message(dst)? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Read and drop `len` bytes.
    pub(crate) fn discard(&mut self, mut len: u64) -> io::Result<()> {
        let mut scratch = [0u8; 4096];
        while len > 0 {
            let n = len.min(scratch.len() as u64) as usize;
            self.read_exact(&mut scratch[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    fn take_buffered(&mut self, dst: &mut [u8]) -> usize {
        let n = (self.end - self.start).min(dst.len());
        dst[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn reader_splits_and_joins_messages() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = Reader::new(Arc::new(Stream::Unix(a)));
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let writer = std::thread::spawn(move || {
            b.write_all(b"abc").unwrap();
            b.write_all(b"defgh").unwrap();
            b.write_all(&big).unwrap();
            b.write_all(b"z").unwrap();
        });
        let mut x = [0u8; 4];
        assert!(r.read_message(&mut x).unwrap());
        assert_eq!(&x, b"abcd");
        let mut y = [0u8; 4];
        r.read_exact(&mut y).unwrap();
        assert_eq!(&y, b"efgh");
        let mut z = vec![0u8; 100_000];
        r.read_exact(&mut z).unwrap();
        assert!(z.iter().enumerate().all(|(i, &v)| v == i as u8));
        r.discard(1).unwrap();
        writer.join().unwrap();
        assert!(!r.read_message(&mut x).unwrap());
    }

    #[test]
    fn send_all_writes_every_slice() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let s = Stream::Unix(a);
        let big = vec![7u8; 1 << 20];
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            b.read_to_end(&mut all).unwrap();
            all
        });
        s.send_all(&mut [IoSlice::new(b"hdr"), IoSlice::new(&[]), IoSlice::new(&big)])
            .unwrap();
        s.shutdown(Shutdown::Both);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), 3 + (1 << 20));
        assert_eq!(&all[..3], b"hdr");
    }
}
