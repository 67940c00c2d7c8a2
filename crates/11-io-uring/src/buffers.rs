//! The provided-buffer ring: read buffers that belong to the ring, not to a client.
//!
//! A read submitted with *buffer select* names no buffer of its own. It names a *group*, and
//! the kernel takes a buffer from that group only when data has arrived, so a connection that
//! is waiting for its client to speak holds no buffer at all. The group is a ring of its own,
//! shared with the kernel like the submission and completion queues: an array of
//! `(address, length, buffer id)` entries and a tail index that we advance when we give a
//! buffer back. The kernel consumes entries at its head; the completion of a read says which
//! buffer id it filled.
//!
//! Two parts, so that the bookkeeping can be tested without a kernel:
//!
//! - [`Ledger`]: which buffer is where (with the kernel, or with us), and where in the ring
//!   the next returned buffer goes. Pure arithmetic; it refuses a buffer returned twice and a
//!   completion naming a buffer the kernel did not have.
//! - [`BufRing`]: the memory itself, mapped once and faulted in at start (an idle server keeps
//!   the same resident size however many clients it holds), plus the ledger.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The buffer group id our reads name (one group: every read draws from the same ring).
pub const GROUP: u16 = 0;

/// A buffer the ledger cannot account for: a bug in the loop (or in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
    /// A completion named a buffer id beyond the ring.
    Unknown(u16),
    /// A completion named a buffer the kernel did not have (it was already ours).
    NotWithKernel(u16),
    /// We tried to give back a buffer the kernel already has: it would be handed out twice.
    AlreadyWithKernel(u16),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(bid) => write!(f, "buffer {bid} does not exist"),
            Self::NotWithKernel(bid) => write!(f, "buffer {bid} was not with the kernel"),
            Self::AlreadyWithKernel(bid) => write!(f, "buffer {bid} is already with the kernel"),
        }
    }
}

impl std::error::Error for LedgerError {}

// ANCHOR: ledger
/// Who holds each provided buffer, and where the next one given back goes in the ring.
#[derive(Debug)]
pub struct Ledger {
    /// `with_kernel[bid]`: the buffer is in the ring, for the kernel to fill.
    with_kernel: Vec<bool>,
    /// How many are.
    in_ring: usize,
    /// Our tail index into the ring (it wraps at 2^16, as the kernel's does). Entry
    /// `tail % len` is where the next buffer given back is written.
    tail: u16,
}

impl Ledger {
    /// `count` buffers (a power of two, at most 32768), all in the ring, in entries
    /// `0..count`, with the tail just past them.
    pub fn new(count: u16) -> Self {
        assert!(
            count.is_power_of_two() && count <= 1 << 15,
            "ring of {count}"
        );
        Self {
            with_kernel: vec![true; usize::from(count)],
            in_ring: usize::from(count),
            tail: count,
        }
    }

    /// A completion says the kernel filled buffer `bid`: it is ours until we give it back.
    pub fn take(&mut self, bid: u16) -> Result<(), LedgerError> {
        let slot = self
            .with_kernel
            .get_mut(usize::from(bid))
            .ok_or(LedgerError::Unknown(bid))?;
        if !*slot {
            return Err(LedgerError::NotWithKernel(bid));
        }
        *slot = false;
        self.in_ring -= 1;
        Ok(())
    }

    /// We are done with buffer `bid`: returns the ring entry to write it into, before the
    /// new tail ([`Ledger::tail`]) is published to the kernel.
    pub fn give_back(&mut self, bid: u16) -> Result<usize, LedgerError> {
        let len = self.with_kernel.len();
        let slot = self
            .with_kernel
            .get_mut(usize::from(bid))
            .ok_or(LedgerError::Unknown(bid))?;
        if *slot {
            return Err(LedgerError::AlreadyWithKernel(bid));
        }
        *slot = true;
        self.in_ring += 1;
        // `len` is a power of two that divides 2^16, so the index stays right when `tail`
        // wraps.
        let entry = usize::from(self.tail) % len;
        self.tail = self.tail.wrapping_add(1);
        Ok(entry)
    }
}
// ANCHOR_END: ledger

impl Ledger {
    /// The tail to publish: one past the last entry written.
    pub fn tail(&self) -> u16 {
        self.tail
    }

    /// Buffers in the ring, for the kernel to fill.
    pub fn in_ring(&self) -> usize {
        self.in_ring
    }

    /// Buffers we hold (taken and not given back yet).
    pub fn held(&self) -> usize {
        self.with_kernel.len() - self.in_ring
    }

    /// How many buffers there are.
    pub fn count(&self) -> usize {
        self.with_kernel.len()
    }
}

/// Anonymous memory of our own that the kernel reads or writes: page-aligned (the buffer
/// ring must be), faulted in at once (`MAP_POPULATE`), unmapped on drop.
#[derive(Debug)]
struct Region {
    /// Start of the mapping.
    ptr: NonNull<u8>,
    /// Its length in bytes.
    len: usize,
}

impl Region {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a new private anonymous mapping at an address the kernel chooses; no memory
        // we already use is involved, and the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what `mmap` returned, and the owner of this
        // region (a `BufRing`, inside `Ring`) is dropped only after the kernel let go of it:
        // the buffer ring was unregistered and the io_uring instance closed.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// ANCHOR: buf_ring
/// The provided buffers: `count` buffers of `size` bytes, and the ring that lends them.
#[derive(Debug)]
pub struct BufRing {
    /// The ring entries (`count` of 16 bytes each); entry 0's reserved field is the tail.
    entries: Region,
    /// The buffers, `size` bytes each, buffer `bid` at `bid * size`.
    buffers: Region,
    /// Bytes per buffer.
    size: u32,
    /// Who holds what.
    ledger: Ledger,
}
// ANCHOR_END: buf_ring

impl BufRing {
    /// Maps the ring and the buffers and puts every buffer in the ring (not registered yet).
    pub fn new(count: u16, size: u32) -> io::Result<Self> {
        let ledger = Ledger::new(count);
        let entries = Region::new(usize::from(count) * std::mem::size_of::<BufRingEntry>())?;
        let buffers = Region::new(usize::from(count) * size as usize)?;
        let mut ring = Self {
            entries,
            buffers,
            size,
            ledger,
        };
        for bid in 0..count {
            ring.write_entry(usize::from(bid), bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Tells the kernel about the ring, as buffer group [`GROUP`].
    pub fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        let count = u16::try_from(self.ledger.count()).unwrap_or(u16::MAX);
        // SAFETY: the entries are a live, page-aligned mapping of `count` entries, and they
        // stay mapped until `Ring`'s drop has unregistered the group and closed the ring
        // (the `Ring` owns this `BufRing`, and drops it last).
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.entries.ptr.as_ptr() as u64,
                count,
                GROUP,
                0,
            )
        }
    }

    // ANCHOR: lend
    /// The kernel filled buffer `bid` with `len` bytes (a read's completion said so): lends
    /// them to `f`, then gives the buffer back to the ring. The buffer is ours exactly for
    /// the duration of `f`, so no path can forget to return it.
    pub fn with_filled<R>(
        &mut self,
        bid: u16,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, LedgerError> {
        self.ledger.take(bid)?;
        let len = len.min(self.size as usize);
        let start = usize::from(bid) * self.size as usize;
        // SAFETY: `start + len` lies within `buffers` (bid < count, len <= size). The kernel
        // wrote these bytes before posting the completion we were given, and it will not
        // touch this buffer again until `give_back` below puts it back in the ring: for the
        // duration of `f` nobody else writes it.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.buffers.ptr.as_ptr().add(start), len) };
        let result = f(bytes);
        self.give_back(bid)?;
        Ok(result)
    }

    /// Puts buffer `bid` back at the ring's tail, for the kernel to fill again.
    fn give_back(&mut self, bid: u16) -> Result<(), LedgerError> {
        let entry = self.ledger.give_back(bid)?;
        self.write_entry(entry, bid);
        self.publish();
        Ok(())
    }

    /// Writes entry `entry` of the ring: buffer `bid`'s address and length.
    fn write_entry(&mut self, entry: usize, bid: u16) {
        let base = self.entries.ptr.as_ptr().cast::<BufRingEntry>();
        let addr = self.buffers.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `entry < count`, so the pointer is inside the entries mapping. The kernel
        // reads only the entries between its head and the published tail, and this one is
        // outside that range until `publish` moves the tail past it (the ledger hands out
        // the slot just past the tail, and only for a buffer the kernel does not have). The
        // setters write the address, length and id fields, never entry 0's reserved field,
        // which is the tail and is written only by `publish`.
        let slot = unsafe { &mut *base.add(entry) };
        slot.set_addr(addr);
        slot.set_len(self.size);
        slot.set_bid(bid);
    }

    /// Makes every entry written so far visible to the kernel: a release store of the tail,
    /// so that the entries' contents are seen before the new tail is.
    fn publish(&self) {
        let base = self.entries.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `base` is the first entry of a live ring, as `tail` requires; the tail is a
        // naturally aligned u16 that the kernel only reads, so treating it as an `AtomicU16`
        // for this store is sound.
        let tail = unsafe { &*BufRingEntry::tail(base).cast::<AtomicU16>() };
        tail.store(self.ledger.tail(), Ordering::Release);
    }
    // ANCHOR_END: lend

    /// Who holds what.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// The kernel's side of a buffer ring, as the ledger must see it: buffers are taken from
    /// the head in the order they were put at the tail.
    struct FakeKernel {
        ring: Vec<Option<u16>>,
        head: u16,
    }

    impl FakeKernel {
        fn new(count: u16) -> Self {
            Self {
                ring: (0..count).map(Some).collect(),
                head: 0,
            }
        }

        /// A read found data: the buffer at the head, if the ring is not empty.
        fn select(&mut self, ledger: &Ledger) -> Option<u16> {
            if self.head == ledger.tail() {
                return None; // -ENOBUFS
            }
            let len = self.ring.len();
            let bid = self.ring[usize::from(self.head) % len]
                .take()
                .expect("an entry between head and tail");
            self.head = self.head.wrapping_add(1);
            Some(bid)
        }

        fn write(&mut self, entry: usize, bid: u16) {
            assert!(self.ring[entry].is_none(), "entry {entry} overwritten");
            self.ring[entry] = Some(bid);
        }
    }

    /// A small deterministic generator (xorshift), enough to mix the paths.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn a_buffer_cannot_be_given_back_twice_or_taken_twice() {
        let mut ledger = Ledger::new(4);
        assert_eq!(ledger.give_back(1), Err(LedgerError::AlreadyWithKernel(1)));
        ledger.take(1).unwrap();
        assert_eq!(ledger.take(1), Err(LedgerError::NotWithKernel(1)));
        assert_eq!(ledger.held(), 1);
        assert_eq!(ledger.give_back(1), Ok(0)); // the first entry after the initial four
        assert_eq!(ledger.give_back(1), Err(LedgerError::AlreadyWithKernel(1)));
        assert_eq!(ledger.take(9), Err(LedgerError::Unknown(9)));
        assert_eq!(ledger.in_ring(), 4);
    }

    /// 10,000 clients connect, read a few times and go away — some with a read that filled
    /// a buffer, some cut with a read in flight, some starved by an empty ring — while the
    /// tail wraps around 2^16 several times. Every buffer is back in the ring at the end,
    /// none was handed out twice, and the ring never held more than it has.
    #[test]
    fn ten_thousand_connects_and_closes_leak_no_buffer() {
        const COUNT: u16 = 64;
        let mut ledger = Ledger::new(COUNT);
        let mut kernel = FakeKernel::new(COUNT);
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        // Buffers filled by the kernel whose completions we have not handled yet.
        let mut completed: VecDeque<u16> = VecDeque::new();
        let (mut starved, mut given) = (0u64, 0u64);
        for _client in 0..10_000 {
            for _read in 0..rng.below(40) {
                match kernel.select(&ledger) {
                    Some(bid) => completed.push_back(bid),
                    None => starved += 1, // -ENOBUFS: the loop re-arms after returning some
                }
                // The loop's turn ends now and then (about every 48 reads, so that a turn
                // sometimes sees more reads than there are buffers): it handles every
                // completion of the turn and gives each buffer back.
                if rng.below(48) == 0 {
                    for bid in completed.drain(..) {
                        ledger.take(bid).unwrap();
                        let entry = ledger.give_back(bid).unwrap();
                        kernel.write(entry, bid);
                        given += 1;
                    }
                }
            }
            // The client leaves (or is cut): a cancelled read took no buffer, so nothing to
            // do here; the completions already posted are handled like any other.
        }
        for bid in completed.drain(..) {
            ledger.take(bid).unwrap();
            let entry = ledger.give_back(bid).unwrap();
            kernel.write(entry, bid);
            given += 1;
        }
        assert_eq!(ledger.in_ring(), usize::from(COUNT));
        assert_eq!(ledger.held(), 0);
        // The paths were all taken: the ring ran empty, and the tail wrapped.
        assert!(starved > 0, "the ring never ran empty");
        assert!(given > 2 << 16, "only {given} buffers given back");
        assert_eq!(ledger.tail(), (u64::from(COUNT) + given) as u16);
        // Every buffer id is in the ring exactly once.
        let mut seen = [false; COUNT as usize];
        for _ in 0..COUNT {
            let bid = kernel.select(&ledger).expect("a full ring");
            assert!(!seen[usize::from(bid)], "buffer {bid} twice in the ring");
            seen[usize::from(bid)] = true;
        }
        assert_eq!(kernel.select(&ledger), None);
    }

    #[test]
    fn buffers_are_lent_for_the_duration_of_the_closure() {
        let mut ring = BufRing::new(8, 4096).expect("mmap");
        assert_eq!(ring.ledger().in_ring(), 8);
        let held = ring.with_filled(3, 5, |bytes| {
            assert_eq!(bytes.len(), 5);
            bytes.len()
        });
        assert_eq!(held, Ok(5));
        assert_eq!(ring.ledger().in_ring(), 8);
        assert_eq!(ring.ledger().tail(), 9);
        // A length the kernel cannot have written is clamped to the buffer.
        assert_eq!(ring.with_filled(0, 100_000, <[u8]>::len), Ok(4096));
    }
}
