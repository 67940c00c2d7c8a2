//! Async I/O: [`Async<T>`] wraps a non-blocking socket registered in the reactor and turns
//! each of its system calls into a future.
//!
//! The whole trick is in [`Async::poll_io`]: try the system call; if the kernel says
//! `WouldBlock`, tell the reactor (which forgets that the socket was ready) and hand it the
//! waker, then return `Pending`. The task is polled again when epoll reports the socket, and
//! tries again. `accept`, `read` and `write_vectored` below are that, with a different system
//! call each. This is smol's `Async<T>` (from `async-io`) in miniature; the chat server uses
//! `Async<TcpListener>` and `Async<TcpStream>`.
//!
//! An `Async` belongs to the thread that made it (it holds that thread's reactor), and each
//! direction has one waiting task at a time (in the chat server, one task waits for both).
//!
//! Run its tests with `cargo test -p chat-futures net::`.

use std::future::poll_fn;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use crate::reactor::{Direction, Reactor};
use crate::sys;

/// A non-blocking I/O object registered in this thread's reactor.
// ANCHOR: async_struct
#[derive(Debug)]
pub struct Async<T: AsFd> {
    /// The socket (or any descriptor), in non-blocking mode.
    io: T,
    /// Its registration in the reactor.
    token: u64,
    /// The reactor it is registered in, to unregister it on drop.
    reactor: Rc<Reactor>,
}
// ANCHOR_END: async_struct

impl<T: AsFd> Async<T> {
    /// Makes `io` non-blocking and registers it in this thread's reactor.
    pub fn new(io: T) -> io::Result<Self> {
        sys::set_nonblocking(io.as_fd())?;
        let reactor = Reactor::get();
        let token = reactor.register(io.as_fd())?;
        Ok(Self { io, token, reactor })
    }

    /// The wrapped object, for calls that do not wait (options, addresses, `shutdown`).
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Runs the non-blocking operation `op` until it does not say `WouldBlock`; in between,
    /// sleeps until the reactor sees the socket ready in `direction`.
    // ANCHOR: poll_io
    pub fn poll_io<R>(
        &self,
        direction: Direction,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            // Pending (waker stored) if the last attempt said WouldBlock and nothing happened
            // since; otherwise go ahead and try.
            ready!(self.reactor.poll_ready(self.token, direction, cx));
            match op(&self.io) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    // Not ready after all: remember that, and loop to register the waker.
                    self.reactor.clear_ready(self.token, direction);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
    // ANCHOR_END: poll_io

    /// `Ready` if the socket may be ready in `direction` (so try the system call, and call
    /// [`Async::clear_ready`] if it says `WouldBlock`); otherwise `Pending`, with the task's
    /// waker stored for the next event. This is [`Async::poll_io`] without the system call,
    /// for a task that waits for several things at once and makes the call itself.
    pub fn poll_ready(&self, direction: Direction, cx: &mut Context<'_>) -> Poll<()> {
        self.reactor.poll_ready(self.token, direction, cx)
    }

    /// Tells the reactor that a system call made outside [`Async::poll_io`] said
    /// `WouldBlock` in `direction`: not ready until the next event. Only `WouldBlock` proves
    /// it. A short read does not (Linux stops a read at a TCP urgent mark, with more bytes
    /// behind it), and an edge-triggered reactor that believed it would never report those
    /// bytes again.
    pub fn clear_ready(&self, direction: Direction) {
        self.reactor.clear_ready(self.token, direction);
    }

    /// `op` as a future that waits for readability whenever `op` says `WouldBlock`.
    pub async fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        poll_fn(|cx| self.poll_io(Direction::Read, cx, &mut op)).await
    }

    /// `op` as a future that waits for writability whenever `op` says `WouldBlock`.
    pub async fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        poll_fn(|cx| self.poll_io(Direction::Write, cx, &mut op)).await
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        // Before `io` itself is dropped (and closed): fields drop after this body.
        self.reactor.deregister(self.token, self.io.as_fd());
    }
}

// ANCHOR: accept
impl Async<TcpListener> {
    /// Waits for a connection and returns it, registered and non-blocking.
    pub async fn accept(&self) -> io::Result<(Async<TcpStream>, SocketAddr)> {
        let (stream, peer) = self.read_with(|listener| listener.accept()).await?;
        Ok((Async::new(stream)?, peer))
    }
}
// ANCHOR_END: accept

impl Async<TcpStream> {
    /// Connects without blocking the thread: start the handshake, then wait until the socket
    /// is writable (connected) or reports an error.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        match socket.connect(&addr.into()) {
            Err(err) if err.raw_os_error() != Some(libc::EINPROGRESS) => return Err(err),
            _ => {}
        }
        let stream = Async::new(TcpStream::from(socket))?;
        stream
            .write_with(|s| match s.take_error()? {
                Some(err) => Err(err),
                None => match s.peer_addr() {
                    Ok(_) => Ok(()),
                    // Still in progress: the same as "not writable yet".
                    Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(err) => Err(err),
                },
            })
            .await?;
        Ok(stream)
    }

    /// Reads into `buf`; `Ok(0)` means the peer closed its side.
    // ANCHOR: read
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|mut stream| stream.read(buf)).await
    }
    // ANCHOR_END: read

    /// Writes some of `buf`; returns how much.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|mut stream| stream.write(buf)).await
    }

    /// Writes all of `buf`, waiting for room as often as needed.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Writes from several buffers with one `writev`; returns how much it wrote in all.
    pub async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(|mut stream| stream.write_vectored(bufs))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Executor;
    use crate::{block_on, or, Timer};
    use std::time::Duration;

    #[test]
    fn echo_between_two_tasks_on_one_thread() {
        let listener = Async::new(TcpListener::bind("127.0.0.1:0").expect("bind")).expect("async");
        let addr = listener.get_ref().local_addr().expect("addr");
        let executor = Executor::new();
        let server = executor.spawn(async move {
            let (stream, _) = listener.accept().await?;
            let mut buf = [0; 64];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return io::Result::Ok(());
                }
                stream.write_all(&buf[..n]).await?;
            }
        });
        let got = block_on(executor.run(async {
            let client = Async::<TcpStream>::connect(addr).await?;
            let lines = [IoSlice::new(b"hello "), IoSlice::new(b"world\n")];
            assert_eq!(client.write_vectored(&lines).await?, 12);
            let mut got = Vec::new();
            let mut buf = [0; 64];
            while got.len() < 12 {
                let n = client.read(&mut buf).await?;
                assert_ne!(n, 0, "server closed early");
                got.extend_from_slice(&buf[..n]);
            }
            drop(client);
            server.await?;
            io::Result::Ok(got)
        }))
        .expect("echo");
        assert_eq!(got, b"hello world\n");
        assert_eq!(
            Reactor::get().sources(),
            0,
            "every socket unregistered itself"
        );
    }

    #[test]
    fn a_read_with_nothing_to_read_waits_without_spinning() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server_side, _) = listener.accept().expect("accept");
        let stream = Async::new(server_side).expect("async");
        let executor = Executor::new();
        let reactor = Reactor::get();
        let before = reactor.reactions();
        let outcome = block_on(executor.run(or(
            async {
                let mut buf = [0; 16];
                Some(stream.read(&mut buf).await)
            },
            async {
                Timer::after(Duration::from_millis(200)).await;
                None
            },
        )));
        assert!(
            outcome.is_none(),
            "nothing was sent, so the read must still be waiting"
        );
        // A busy loop would have gone round thousands of times in 200 ms; we slept until the
        // timer (a few wake-ups at most: the registration edges, then the deadline).
        assert!(
            reactor.reactions() - before <= 5,
            "{} reactions",
            reactor.reactions() - before
        );
    }

    #[test]
    fn connect_to_a_closed_port_fails() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        }; // closed again: nobody listens there now
        let result = block_on(Async::<TcpStream>::connect(port));
        assert_eq!(
            result.expect_err("refused").kind(),
            io::ErrorKind::ConnectionRefused
        );
    }
}
