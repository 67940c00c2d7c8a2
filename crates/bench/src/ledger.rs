//! The accounting: who had to receive what, and what actually arrived.
//!
//! This module is sans-IO, like `chat-core`: the event loop tells it what was
//! sent and what was received, and it answers with counts. It never sees a
//! socket, which is why its tests need none.
//!
//! The generator places clients in rooms by id: room `k` holds clients
//! `k*R .. (k+1)*R` (the last room may be smaller). Only *accounted* clients
//! take part: those that were welcomed and joined their room before the first
//! message was sent, and that read what they receive (clients that never read
//! on purpose, in the `slow` scenario, are members of the room on the server
//! but not of the ledger). Membership does not change while messages flow, so
//! the rule is simple: every message an accounted sender handed to the kernel
//! must reach every other accounted member of its room exactly once, and one
//! sender's messages must arrive in order.
//!
//! At the end, a missing delivery is *lost* unless the receiver or the sender
//! was disconnected by the server during the run: those are *undeliverable*
//! (the protocol only promises delivery to members that stay), and reported
//! apart.
//!
//! Run its tests with `cargo test -p chat-bench ledger`.

use crate::marker::Marker;

/// What the ledger knows about one (receiver, sender) pair.
#[derive(Debug, Clone, Default)]
struct Pair {
    /// Highest sequence number received so far, plus one (0: nothing yet).
    next_after_max: u32,
    /// How many distinct sequence numbers arrived.
    distinct: u32,
    /// One bit per sequence number: set once that message arrived. Grows on
    /// demand, so it costs one bit per delivery, not per possible delivery.
    seen: Vec<u64>,
}

/// What one receipt turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The first copy of a message this receiver had to get, in order.
    InOrder,
    /// The first copy, but an earlier sequence number than one already seen
    /// from the same sender: per-sender order was broken.
    Reordered,
    /// A copy of a message this receiver already had.
    Duplicate,
    /// The receiver got its own message back (some servers echo; ours does not).
    Echo,
    /// Nothing explains this receipt: the sender is not an accounted member of
    /// the receiver's room, or never sent that sequence number.
    Unexpected,
    /// The receiver is not accounted (not ready, a slow reader, a churner).
    Ignored,
}

/// The totals the report prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Messages accounted senders handed to the kernel.
    pub sent: u64,
    /// Deliveries that had to happen: each sent message times the other
    /// accounted members of its room.
    pub expected: u64,
    /// Distinct expected deliveries that arrived.
    pub delivered: u64,
    /// Expected deliveries that never arrived, between members that both stayed connected.
    pub lost: u64,
    /// Expected deliveries that never arrived because the server disconnected
    /// the receiver or the sender during the run.
    pub undeliverable: u64,
    /// Extra copies of messages already received.
    pub duplicated: u64,
    /// First copies that arrived after a later message from the same sender.
    pub reordered: u64,
    /// Receipts of one's own message.
    pub echoed: u64,
    /// Receipts nothing explains (wrong room, unknown sender, unsent sequence number).
    pub unexpected: u64,
}

/// The accounting for one run.
#[derive(Debug)]
pub struct Ledger {
    /// Clients per room.
    room_size: usize,
    /// Whether each client is an accounted member.
    accounted: Vec<bool>,
    /// Whether the server disconnected each client during the run.
    disconnected: Vec<bool>,
    /// Messages each client fully handed to the kernel (its next sequence number).
    sent: Vec<u32>,
    /// Per receiver, per position in its room: what arrived from that sender.
    /// Empty until the receiver's first delivery.
    pairs: Vec<Vec<Pair>>,
    /// Running counts of the receipt kinds that need no end-of-run pass.
    counts: Tally,
}

impl Ledger {
    /// A ledger for `clients` clients in rooms of `room_size`; nobody accounted yet.
    pub fn new(clients: usize, room_size: usize) -> Self {
        Ledger {
            room_size: room_size.max(1),
            accounted: vec![false; clients],
            disconnected: vec![false; clients],
            sent: vec![0; clients],
            pairs: vec![Vec::new(); clients],
            counts: Tally::default(),
        }
    }

    /// The room index of `client`.
    pub fn room_of(&self, client: usize) -> usize {
        client / self.room_size
    }

    /// The ids of the clients in room `room`.
    pub fn room_members(&self, room: usize) -> std::ops::Range<usize> {
        let start = room * self.room_size;
        start.min(self.accounted.len())..(start + self.room_size).min(self.accounted.len())
    }

    /// How many rooms the clients fill.
    pub fn rooms(&self) -> usize {
        self.accounted.len().div_ceil(self.room_size)
    }

    /// Makes `client` an accounted member (or not). Call before messages flow.
    pub fn set_accounted(&mut self, client: usize, yes: bool) {
        self.accounted[client] = yes;
    }

    /// Whether `client` is an accounted member.
    pub fn is_accounted(&self, client: usize) -> bool {
        self.accounted[client]
    }

    /// Records that the server disconnected `client`.
    pub fn set_disconnected(&mut self, client: usize) {
        self.disconnected[client] = true;
    }

    /// Records that `sender` handed `count` more complete messages to the kernel.
    pub fn add_sent(&mut self, sender: usize, count: u32) {
        self.sent[sender] = self.sent[sender].saturating_add(count);
    }

    /// The next sequence number `sender` will use. Sequence numbers are
    /// assigned when a line is built; [`Ledger::add_sent`] counts it once the
    /// kernel took all of it.
    pub fn sent_by(&self, sender: usize) -> u32 {
        self.sent[sender]
    }

    // ANCHOR: on_marker
    /// Accounts for one marker received by `receiver`.
    pub fn on_marker(&mut self, receiver: usize, marker: Marker) -> Receipt {
        if !self.accounted.get(receiver).copied().unwrap_or(false) {
            return Receipt::Ignored;
        }
        let sender = marker.sender as usize;
        if sender == receiver {
            self.counts.echoed += 1;
            return Receipt::Echo;
        }
        let room = self.room_members(self.room_of(receiver));
        if !room.contains(&sender) || !self.accounted[sender] || marker.seq >= self.sent[sender] {
            self.counts.unexpected += 1;
            return Receipt::Unexpected;
        }
        let slots = &mut self.pairs[receiver];
        if slots.is_empty() {
            slots.resize(room.len(), Pair::default());
        }
        let pair = &mut slots[sender - room.start];
        let (word, bit) = ((marker.seq / 64) as usize, marker.seq % 64);
        if word >= pair.seen.len() {
            pair.seen.resize(word + 1, 0);
        }
        if pair.seen[word] & (1 << bit) != 0 {
            self.counts.duplicated += 1;
            return Receipt::Duplicate;
        }
        pair.seen[word] |= 1 << bit;
        pair.distinct += 1;
        self.counts.delivered += 1;
        if marker.seq < pair.next_after_max {
            self.counts.reordered += 1;
            Receipt::Reordered
        } else {
            pair.next_after_max = marker.seq + 1;
            Receipt::InOrder
        }
    }
    // ANCHOR_END: on_marker

    /// Distinct expected deliveries received so far (cheap, for progress lines).
    pub fn delivered(&self) -> u64 {
        self.counts.delivered
    }

    /// The full accounting. Walks every accounted pair, so call it at the end
    /// of a run or a few times a second at most.
    pub fn tally(&self) -> Tally {
        let mut t = self.counts;
        t.sent = 0;
        t.expected = 0;
        t.lost = 0;
        t.undeliverable = 0;
        for room in 0..self.rooms() {
            let members = self.room_members(room);
            for s in members.clone().filter(|&s| self.accounted[s]) {
                t.sent += u64::from(self.sent[s]);
            }
            for r in members.clone().filter(|&r| self.accounted[r]) {
                for s in members.clone().filter(|&s| s != r && self.accounted[s]) {
                    let expected = self.sent[s];
                    let got = self.pairs[r]
                        .get(s - members.start)
                        .map_or(0, |p| p.distinct);
                    t.expected += u64::from(expected);
                    let missing = u64::from(expected.saturating_sub(got));
                    if self.disconnected[r] || self.disconnected[s] {
                        t.undeliverable += missing;
                    } else {
                        t.lost += missing;
                    }
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(sender: u32, seq: u32) -> Marker {
        Marker {
            sender,
            seq,
            intended_us: 0,
        }
    }

    /// Two rooms of three, everybody accounted, each sends `n`.
    fn ledger(n: u32) -> Ledger {
        let mut l = Ledger::new(6, 3);
        for c in 0..6 {
            l.set_accounted(c, true);
            l.add_sent(c, n);
        }
        l
    }

    fn deliver_all(l: &mut Ledger, n: u32) {
        for r in 0..6 {
            let room = l.room_members(l.room_of(r));
            for s in room.filter(|&s| s != r) {
                for q in 0..n {
                    assert_eq!(l.on_marker(r, m(s as u32, q)), Receipt::InOrder);
                }
            }
        }
    }

    #[test]
    fn honest_run_is_clean() {
        let mut l = ledger(5);
        deliver_all(&mut l, 5);
        let t = l.tally();
        assert_eq!(t.sent, 30);
        assert_eq!(t.expected, 6 * 2 * 5);
        assert_eq!(t.delivered, t.expected);
        assert_eq!(
            (t.lost, t.duplicated, t.reordered, t.unexpected),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn missing_duplicate_and_reordered_are_counted() {
        let mut l = ledger(3);
        assert_eq!(l.on_marker(0, m(1, 0)), Receipt::InOrder);
        assert_eq!(l.on_marker(0, m(1, 2)), Receipt::InOrder);
        assert_eq!(l.on_marker(0, m(1, 1)), Receipt::Reordered);
        assert_eq!(l.on_marker(0, m(1, 1)), Receipt::Duplicate);
        let t = l.tally();
        assert_eq!(t.delivered, 3);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.reordered, 1);
        assert_eq!(t.lost, t.expected - 3);
    }

    #[test]
    fn wrong_room_echo_and_unsent_are_not_deliveries() {
        let mut l = ledger(1);
        assert_eq!(l.on_marker(0, m(4, 0)), Receipt::Unexpected, "other room");
        assert_eq!(l.on_marker(0, m(1, 1)), Receipt::Unexpected, "never sent");
        assert_eq!(
            l.on_marker(0, m(99, 0)),
            Receipt::Unexpected,
            "unknown sender"
        );
        assert_eq!(l.on_marker(0, m(0, 0)), Receipt::Echo);
        let t = l.tally();
        assert_eq!((t.delivered, t.unexpected, t.echoed), (0, 3, 1));
    }

    #[test]
    fn disconnected_members_are_undeliverable_not_lost() {
        let mut l = ledger(2);
        l.set_disconnected(2);
        let t = l.tally();
        // Room 0: pairs touching client 2 are 4 of its 6 pairs.
        assert_eq!(t.undeliverable, 4 * 2);
        assert_eq!(t.lost, t.expected - t.undeliverable);
    }

    #[test]
    fn unaccounted_clients_take_no_part() {
        let mut l = Ledger::new(4, 4);
        for c in 0..3 {
            l.set_accounted(c, true);
            l.add_sent(c, 1);
        }
        assert_eq!(l.on_marker(3, m(0, 0)), Receipt::Ignored);
        assert_eq!(l.on_marker(0, m(3, 0)), Receipt::Unexpected);
        assert_eq!(l.tally().expected, 3 * 2);
    }

    #[test]
    fn last_room_may_be_smaller() {
        let l = Ledger::new(7, 3);
        assert_eq!(l.rooms(), 3);
        assert_eq!(l.room_members(2), 6..7);
    }
}
