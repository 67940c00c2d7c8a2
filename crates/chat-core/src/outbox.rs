//! A client's queue of outgoing bytes.
//!
//! A server can read from a fast client faster than a slow client reads what it is owed. The
//! difference has to wait somewhere: here. The outbox only queues and counts; the rules that
//! keep it bounded (who waits, who is cut) are the server's, in [`crate::server`] and
//! [`crate::flow`].
//!
//! It holds shared [`Bytes`] (the same buffer for every recipient of a room message) and hands
//! them out as [`IoSlice`]s, so a stage can write many queued lines with one `writev`: the
//! coalescing that the readiness chapters measure.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// What one queued line costs beyond its text: the [`Bytes`] handle in the queue. Counting it
/// makes the bound a bound on memory, not only on text: 256 KiB of 25-byte notices would
/// otherwise hold 10,000 handles, 330 KB more than the bound says.
pub const CHUNK_COST: usize = std::mem::size_of::<Bytes>();

/// Bytes owed to one client: queued lines, what they cost, and how much was ever taken.
///
/// Every connection has one, idle or not, so it is kept small: 48 bytes, and no allocation
/// while it is empty (an empty `VecDeque` is three words and a length, with nothing behind
/// them). How much text it holds is not stored: it is the cost less [`CHUNK_COST`] per line.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Queued lines, oldest first; the first may be partly written already.
    chunks: VecDeque<Bytes>,
    /// What `chunks` costs: its text plus [`CHUNK_COST`] per line.
    cost: usize,
    /// Bytes the socket has taken from this outbox since it was made.
    taken: u64,
}

impl Outbox {
    /// An empty outbox. Allocates nothing until used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a line.
    // ANCHOR: push
    pub fn push(&mut self, line: Bytes) {
        self.cost += line.len() + CHUNK_COST;
        self.chunks.push_back(line);
    }
    // ANCHOR_END: push

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.cost - self.chunks.len() * CHUNK_COST
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memory the queued lines cost: their text plus [`CHUNK_COST`] each. This is what
    /// `--outbox-bytes` bounds.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Bytes the socket has taken from this outbox, ever (what [`Outbox::consume`] was told).
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// True if this outbox owns any memory (for the memory tests: an idle one must not).
    pub fn holds_memory(&self) -> bool {
        self.chunks.capacity() > 0
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

    /// The queued lines, oldest first (the first may be partly written already). A stage whose
    /// writes complete later — io_uring's — clones these handles (a reference count each, no
    /// copy) to keep the bytes alive until the kernel is done with them.
    pub fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.chunks.iter()
    }

    /// The oldest queued chunk, for stages that write one buffer at a time.
    pub fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c[..])
    }

    /// Forgets the first `n` bytes, which the socket has accepted.
    pub fn consume(&mut self, mut n: usize) {
        debug_assert!(n <= self.len(), "consumed more than was queued");
        n = n.min(self.len());
        self.taken += n as u64;
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

    /// Drops everything queued (for a client cut without a goodbye).
    pub fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.cost = 0;
    }

    /// An idle client should not keep the memory of its busiest moment, nor of its welcome:
    /// a queue is freed whenever it empties. (Keeping a small one, as this did once, meant
    /// that every idle client held the four-line queue its welcome had made: a 128-byte
    /// allocation, 144 bytes of the allocator's, per connection. Allocating it again for the
    /// next line is a few tens of nanoseconds beside the `writev` that empties it.)
    fn release_if_empty(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_counts_each_line_handle() {
        let mut outbox = Outbox::new();
        outbox.push(Bytes::from_static(b"12345\n"));
        outbox.push(Bytes::from_static(b"x\n"));
        assert_eq!(outbox.len(), 8);
        assert_eq!(outbox.cost(), 8 + 2 * CHUNK_COST);
        outbox.consume(1);
        assert_eq!(outbox.cost(), 7 + 2 * CHUNK_COST);
        outbox.consume(5);
        assert_eq!(outbox.cost(), 2 + CHUNK_COST);
        assert_eq!(outbox.taken(), 6);
    }

    #[test]
    fn partial_writes_keep_the_rest() {
        let mut outbox = Outbox::new();
        outbox.push(Bytes::from_static(b"abc\n"));
        outbox.push(Bytes::from_static(b"def\n"));
        outbox.consume(2);
        assert_eq!(outbox.front(), Some(&b"c\n"[..]));
        outbox.consume(3);
        assert_eq!(outbox.front(), Some(&b"ef\n"[..]));
        assert_eq!(outbox.len(), 3);
        outbox.consume(3);
        assert!(outbox.is_empty());
        assert_eq!(outbox.front(), None);
        assert_eq!(outbox.cost(), 0);
    }

    #[test]
    fn io_slices_cover_the_queue_in_order() {
        let mut outbox = Outbox::new();
        for line in [&b"a\n"[..], b"bb\n", b"ccc\n"] {
            outbox.push(Bytes::copy_from_slice(line));
        }
        let mut slices = [IoSlice::new(&[]); 2];
        let n = outbox.io_slices(&mut slices);
        assert_eq!(n, 2);
        assert_eq!(&*slices[0], b"a\n");
        assert_eq!(&*slices[1], b"bb\n");
    }

    #[test]
    fn memory_is_released_when_drained() {
        let mut outbox = Outbox::new();
        for _ in 0..100 {
            outbox.push(Bytes::from_static(b"x\n"));
        }
        outbox.consume(200);
        assert_eq!(outbox.chunks.capacity(), 0);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Push(Vec<u8>),
            Consume(usize),
            Clear,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Op::Push),
                4 => (0usize..200).prop_map(Op::Consume),
                1 => Just(Op::Clear),
            ]
        }

        proptest! {
            /// Against a model that is a plain byte queue: the bytes come out in order, `len`
            /// and `cost` are what the model says, and `taken` counts every consumed byte.
            #[test]
            fn behaves_like_a_byte_queue(ops in prop::collection::vec(op(), 0..60)) {
                let mut outbox = Outbox::new();
                let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
                let mut taken = 0u64;
                for op in ops {
                    match op {
                        Op::Push(line) => {
                            outbox.push(Bytes::from(line.clone()));
                            model.push_back(line);
                        }
                        Op::Consume(n) => {
                            let n = n.min(outbox.len());
                            let mut expected = Vec::new();
                            let mut left = n;
                            while left > 0 {
                                let front = model.front_mut().expect("model has bytes");
                                let k = left.min(front.len());
                                expected.extend(front.drain(..k));
                                if front.is_empty() {
                                    model.pop_front();
                                }
                                left -= k;
                            }
                            let mut got = Vec::new();
                            let mut slices = [IoSlice::new(&[]); 1024];
                            let filled = outbox.io_slices(&mut slices);
                            for s in &slices[..filled] {
                                got.extend_from_slice(s);
                            }
                            prop_assert_eq!(&got[..n], &expected[..]);
                            outbox.consume(n);
                            taken += n as u64;
                        }
                        Op::Clear => {
                            outbox.clear();
                            model.clear();
                        }
                    }
                    let len: usize = model.iter().map(Vec::len).sum();
                    prop_assert_eq!(outbox.len(), len);
                    prop_assert_eq!(outbox.cost(), len + model.len() * CHUNK_COST);
                    prop_assert_eq!(outbox.taken(), taken);
                    prop_assert_eq!(outbox.is_empty(), len == 0);
                }
            }
        }
    }
}
