//! The pub/sub connection, read by hand.
//!
//! A node takes messages from the broker only while its members they reach have room (flow
//! control: `Server::remote` answers `Ok(false)` otherwise). Then it must stop *reading*, so
//! that the messages wait where Redis bounds them: in this connection's output buffer on the
//! Redis side (`client-output-buffer-limit pubsub`), then in the kernel's socket buffers. The
//! redis crate's async `PubSub` cannot stop: a task of its own reads the socket into an
//! unbounded channel whether anybody takes the messages or not. So this connection is a plain
//! tokio `TcpStream`: the node writes `SUBSCRIBE`/`UNSUBSCRIBE` (packed by `redis::cmd`) and
//! reads what Redis pushes, one message at a time, only when it wants one.
//!
//! What Redis pushes on a subscribed connection is small RESP2: arrays of bulk strings and
//! integers (`*3\r\n$7\r\nmessage\r\n$4\r\nchat\r\n$2\r\nhi\r\n`). [`parse`] reads exactly
//! that, from a byte slice, and is tested on byte literals.

use std::io;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// The largest bulk string accepted. A node's own messages are at most a line of 1024 bytes
/// plus names; anything much larger on our channels was not published by a node.
pub const MAX_BULK: usize = 64 * 1024;

/// Bytes asked for by one read of the socket.
const READ_CHUNK: usize = 16 * 1024;

/// What Redis pushes on a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A message published on a channel this connection is subscribed to.
    Message {
        /// The channel's name.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// The confirmation of a `SUBSCRIBE`: from now on, nothing published on `channel` is
    /// missed.
    Subscribed {
        /// The channel's name.
        channel: Vec<u8>,
    },
    /// The confirmation of an `UNSUBSCRIBE`.
    Unsubscribed,
}

/// Bytes that are not what a subscribed Redis connection sends (or an error Redis sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbled(pub String);

impl std::fmt::Display for Garbled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected reply on the pub/sub connection: {}", self.0)
    }
}

impl From<Garbled> for io::Error {
    fn from(garbled: Garbled) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, garbled.to_string())
    }
}

// ANCHOR: parse
/// Parses one push from the front of `buf`: the push and how many bytes it took, or `None`
/// while it has not all arrived.
pub fn parse(buf: &[u8]) -> Result<Option<(Push, usize)>, Garbled> {
    let Some((count, mut at)) = header(buf, b'*')? else {
        return Ok(None);
    };
    if !(2..=3).contains(&count) {
        return Err(Garbled(format!("an array of {count} items")));
    }
    let mut items: Vec<Item<'_>> = Vec::with_capacity(3);
    for _ in 0..count {
        match item(&buf[at..])? {
            Some((item, used)) => {
                items.push(item);
                at += used;
            }
            None => return Ok(None),
        }
    }
    let push = match items[..] {
        [Item::Bulk(b"message"), Item::Bulk(channel), Item::Bulk(payload)] => Push::Message {
            channel: channel.to_vec(),
            payload: payload.to_vec(),
        },
        [Item::Bulk(b"subscribe"), Item::Bulk(channel), Item::Int(_)] => Push::Subscribed {
            channel: channel.to_vec(),
        },
        [Item::Bulk(b"unsubscribe"), _, Item::Int(_)] => Push::Unsubscribed,
        _ => return Err(Garbled(format!("{items:?}"))),
    };
    Ok(Some((push, at)))
}
// ANCHOR_END: parse

/// One element of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item<'a> {
    /// `$N\r\n...\r\n`.
    Bulk(&'a [u8]),
    /// `:N\r\n`.
    Int(i64),
}

/// A line `KIND NUMBER \r\n` at the front of `buf`: the number and the bytes it took. A
/// `-ERR ...` line is Redis refusing something: garbled, with its text.
fn header(buf: &[u8], kind: u8) -> Result<Option<(i64, usize)>, Garbled> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 32 {
            return Err(Garbled("a header line without its end".into()));
        }
        return Ok(None);
    };
    let line = &buf[..end];
    match line.split_first() {
        Some((&k, number)) if k == kind => std::str::from_utf8(number)
            .ok()
            .and_then(|n| n.parse::<i64>().ok())
            .map(|n| Some((n, end + 2)))
            .ok_or_else(|| Garbled(String::from_utf8_lossy(line).into_owned())),
        _ => Err(Garbled(String::from_utf8_lossy(line).into_owned())),
    }
}

/// One bulk string or integer at the front of `buf`.
fn item(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, Garbled> {
    match buf.first() {
        None => Ok(None),
        Some(b':') => Ok(header(buf, b':')?.map(|(n, used)| (Item::Int(n), used))),
        Some(_) => {
            let Some((len, at)) = header(buf, b'$')? else {
                return Ok(None);
            };
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= MAX_BULK)
                .ok_or_else(|| Garbled(format!("a bulk string of {len} bytes")))?;
            if buf.len() < at + len + 2 {
                return Ok(None);
            }
            if &buf[at + len..at + len + 2] != b"\r\n" {
                return Err(Garbled("a bulk string without its end".into()));
            }
            Ok(Some((Item::Bulk(&buf[at..at + len]), at + len + 2)))
        }
    }
}

// ANCHOR: subscriber
/// The pub/sub connection: a socket, and what was read from it and not parsed yet (at most
/// one read and one message: the socket is read only when nothing complete is left).
#[derive(Debug)]
pub struct Subscriber {
    /// The connection to Redis.
    stream: TcpStream,
    /// Bytes read and not parsed yet, from `start` on.
    buf: Vec<u8>,
    /// Where the unparsed bytes begin in `buf`.
    start: usize,
}

impl Subscriber {
    /// Connects to Redis at `host:port`.
    pub async fn connect(host: &str, port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            start: 0,
        })
    }

    /// Sends one packed command (`SUBSCRIBE name`, `UNSUBSCRIBE name`).
    pub async fn send(&mut self, command: &[u8]) -> io::Result<()> {
        self.stream.write_all(command).await
    }

    /// The next complete push, if one was read already.
    pub fn parsed(&mut self) -> Result<Option<Push>, Garbled> {
        let Some((push, used)) = parse(&self.buf[self.start..])? else {
            return Ok(None);
        };
        self.start += used;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(push))
    }

    /// Waits until the socket has bytes (cancel-safe: nothing is read here).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Reads what the socket has, without waiting. The end of the stream is an error: Redis
    /// went away.
    pub fn read_more(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let read = self.stream.try_read(&mut self.buf[len..]);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(err) => Err(err),
        }
    }
}
// ANCHOR_END: subscriber

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_parsed_whole_and_only_whole() {
        // A payload may hold `\r\n`: only its length counts.
        let wire = b"*3\r\n$7\r\nmessage\r\n$15\r\nchat:room:lobby\r\n$11\r\nsay\tx\r\ny\tz!\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let (push, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            push,
            Push::Message {
                channel: b"chat:room:lobby".to_vec(),
                payload: b"say\tx\r\ny\tz!".to_vec()
            }
        );
    }

    #[test]
    fn confirmations_and_two_pushes_in_one_read() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$13\r\nchat:presence\r\n:1\r\n\
                     *3\r\n$11\r\nunsubscribe\r\n$6\r\nroom:x\r\n:0\r\n";
        let (first, used) = parse(wire).unwrap().unwrap();
        assert_eq!(
            first,
            Push::Subscribed {
                channel: b"chat:presence".to_vec()
            }
        );
        let (second, rest) = parse(&wire[used..]).unwrap().unwrap();
        assert_eq!(second, Push::Unsubscribed);
        assert_eq!(used + rest, wire.len());
    }

    #[test]
    fn what_is_not_a_push_is_refused() {
        for bad in [
            &b"-ERR unknown command\r\n"[..],
            b"+OK\r\n",
            b"*3\r\n$4\r\nnope\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"*9\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$999999999\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\naXY",
            b"*x\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
