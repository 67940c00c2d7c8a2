//! A client's bounded queue of outgoing bytes.
//!
//! A server can read from a fast client faster than a slow client reads what it is owed. The
//! difference has to wait somewhere, and if that somewhere has no bound, one client that never
//! reads eats all the memory. The outbox is that somewhere, with a bound: when a line does not
//! fit, [`Outbox::push`] says so and the stage drops the client as a *slow consumer*.
//!
//! It holds shared [`Bytes`] (the same buffer for every recipient of a room message) and hands
//! them out as [`IoSlice`]s, so a stage can write many queued lines with one `writev`: the
//! coalescing that the readiness chapters measure.

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// The line did not fit: the client is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull;

impl fmt::Display for OutboxFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("outbox full")
    }
}

impl std::error::Error for OutboxFull {}

/// What one queued line costs beyond its text: the [`Bytes`] handle in the queue. Counting it
/// makes the bound a bound on memory, not only on text: 256 KiB of 25-byte notices would
/// otherwise hold 10,000 handles, 330 KB more than the bound says.
pub const CHUNK_COST: usize = std::mem::size_of::<Bytes>();

/// Bytes owed to one client, costing at most `limit` bytes of memory.
#[derive(Debug)]
pub struct Outbox {
    /// Queued lines, oldest first; the first may be partly written already.
    chunks: VecDeque<Bytes>,
    /// Total bytes of text in `chunks`.
    len: usize,
    /// What `chunks` costs: its text plus [`CHUNK_COST`] per line.
    cost: usize,
    /// The most `cost` may reach (`--outbox-bytes`).
    limit: usize,
}

impl Outbox {
    /// An empty outbox that holds at most `limit` bytes. Allocates nothing until used.
    pub fn new(limit: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            len: 0,
            cost: 0,
            limit,
        }
    }

    /// Queues a line, or reports [`OutboxFull`] (and queues nothing) when it would not fit.
    // ANCHOR: push
    pub fn push(&mut self, line: Bytes) -> Result<(), OutboxFull> {
        let cost = line.len() + CHUNK_COST;
        if self.cost + cost > self.limit {
            return Err(OutboxFull);
        }
        self.len += line.len();
        self.cost += cost;
        self.chunks.push_back(line);
        Ok(())
    }
    // ANCHOR_END: push

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory the queued lines cost, which [`Outbox::push`] keeps within the bound.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// The bound this outbox was made with.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Fills `slices` with the oldest queued bytes, for one `writev`; returns how many it filled.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    /// The oldest queued chunk, for stages that write one buffer at a time.
    pub fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c[..])
    }

    /// Removes and returns whole queued lines, oldest first, up to about `max_bytes` (at least
    /// one line): for a stage whose writer task takes its bytes out of a shared lock.
    pub fn take(&mut self, max_bytes: usize) -> Vec<Bytes> {
        let mut taken = Vec::new();
        let mut size = 0;
        while let Some(chunk) = self.chunks.front() {
            if !taken.is_empty() && size + chunk.len() > max_bytes {
                break;
            }
            size += chunk.len();
            if let Some(chunk) = self.chunks.pop_front() {
                self.cost -= chunk.len() + CHUNK_COST;
                taken.push(chunk);
            }
        }
        self.len -= size;
        self.release_if_empty();
        taken
    }

    /// Forgets the first `n` bytes, which the socket has accepted.
    pub fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len, "consumed more than was queued");
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.cost -= front.len() + CHUNK_COST;
                self.chunks.pop_front();
            } else {
                front.advance(n); // partly written: keep the rest of this line
                self.cost -= n;
                n = 0;
            }
        }
        self.release_if_empty();
    }

    /// Drops everything queued (for a client being closed without a goodbye).
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.len = 0;
        self.cost = 0;
    }

    /// An idle client should not keep the memory of its busiest moment.
    fn release_if_empty(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > 16 {
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_until_full_then_refuse_without_queueing() {
        let mut outbox = Outbox::new(2 * CHUNK_COST + 10);
        assert_eq!(outbox.push(Bytes::from_static(b"12345\n")), Ok(()));
        assert_eq!(outbox.push(Bytes::from_static(b"1234\n")), Err(OutboxFull));
        assert_eq!(outbox.len(), 6);
        assert_eq!(outbox.push(Bytes::from_static(b"123\n")), Ok(()));
        assert_eq!(outbox.len(), 10);
        assert_eq!(outbox.cost(), outbox.limit());
    }

    #[test]
    fn the_bound_counts_each_line_handle() {
        let mut outbox = Outbox::new(1000);
        let mut queued = 0;
        while outbox.push(Bytes::from_static(b"x\n")).is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 1000 / (2 + CHUNK_COST));
        outbox.consume(1);
        assert_eq!(outbox.cost(), queued * (2 + CHUNK_COST) - 1);
        outbox.consume(1);
        assert_eq!(outbox.cost(), (queued - 1) * (2 + CHUNK_COST));
    }

    #[test]
    fn partial_writes_keep_the_rest() {
        let mut outbox = Outbox::new(1000);
        outbox.push(Bytes::from_static(b"abc\n")).unwrap();
        outbox.push(Bytes::from_static(b"def\n")).unwrap();
        outbox.consume(2);
        assert_eq!(outbox.front(), Some(&b"c\n"[..]));
        outbox.consume(3);
        assert_eq!(outbox.front(), Some(&b"ef\n"[..]));
        assert_eq!(outbox.len(), 3);
        outbox.consume(3);
        assert!(outbox.is_empty());
        assert_eq!(outbox.front(), None);
    }

    #[test]
    fn io_slices_cover_the_queue_in_order() {
        let mut outbox = Outbox::new(1000);
        for line in [&b"a\n"[..], b"bb\n", b"ccc\n"] {
            outbox.push(Bytes::copy_from_slice(line)).unwrap();
        }
        let mut slices = [IoSlice::new(&[]); 2];
        let n = outbox.io_slices(&mut slices);
        assert_eq!(n, 2);
        assert_eq!(&*slices[0], b"a\n");
        assert_eq!(&*slices[1], b"bb\n");
    }

    #[test]
    fn take_returns_whole_lines_up_to_the_budget() {
        let mut outbox = Outbox::new(1000);
        for line in [&b"aaaa\n"[..], b"bbbb\n", b"cccc\n"] {
            outbox.push(Bytes::copy_from_slice(line)).unwrap();
        }
        let taken = outbox.take(12);
        assert_eq!(taken.len(), 2);
        assert_eq!(outbox.len(), 5);
        let taken = outbox.take(1);
        assert_eq!(taken, vec![Bytes::from_static(b"cccc\n")]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn memory_is_released_when_drained() {
        let mut outbox = Outbox::new(1 << 20);
        for _ in 0..100 {
            outbox.push(Bytes::from_static(b"x\n")).unwrap();
        }
        outbox.consume(200);
        assert_eq!(outbox.chunks.capacity(), 0);
    }
}
