//! Flow control: who waits, and who is cut as a slow consumer.
//!
//! A server can read from one client far faster than another client reads what it is owed.
//! One 64 KiB write of one-byte lines from a member with a 24-letter nick owes every other
//! member of its room about 950 KB: more than any client's bound, while every reader's socket
//! may be empty and willing. Dropping those readers would punish them for what somebody else
//! sent; buffering it all would let one client decide how much memory the server uses. The
//! rules of the book's specification ("Flow control and slow consumers") do neither:
//!
//! 1. What a client is *owed* is what is queued for it and its socket has not taken. The
//!    stage offers a client's queue to its socket as soon as lines are queued for it.
//! 2. A line is handled only when every client it can send to has room for what it can cost
//!    that client ([`fits`]): the server asks [`crate::Hub::reach`] before it handles the
//!    line. Otherwise the *sender* waits — the server keeps what it read and reads no more —
//!    and the clients without room are *behind*.
//! 3. A client behind catches up once it is owed half its bound or less ([`caught_up`]);
//!    those who waited for it then go on, in order.
//! 4. A client that stays behind for [`SLOW_GRACE`] is a slow consumer, and is cut.
//! 5. Notices that cannot wait (arrivals, departures, shutdown) are queued anyway; they can
//!    take a client past its bound, which makes it behind, and past twice its bound
//!    ([`over_hard_limit`]), which cuts it at once.
//!
//! So input waits for output, never the other way round: a client that reads is never cut
//! for what others send, and what one client sends turns into waiting, not memory. A client
//! that does not read holds up the senders whose lines reach it for at most [`SLOW_GRACE`].
//!
//! [`crate::Server`] applies these rules for the event-loop and task stages; the blocking
//! stages apply the same [`SLOW_GRACE`] to a recipient whose kernel send buffer stays full.

use std::time::Duration;

/// How long a client may stay behind (owed too much to take the next line for it) before it is
/// cut as a slow consumer. Long enough for any reader that reads, on a busy machine, to be
/// scheduled and drain half its bound; short enough that a client that does not read holds up
/// its room for a moment only.
pub const SLOW_GRACE: Duration = Duration::from_secs(1);

/// The smallest `--outbox-bytes`: it must hold the longest reply one line can cost a client
/// ([`crate::hub::LONGEST_REPLY`], a `/rooms` of 100 rooms) and the longest room message, or
/// a line could never fit and its sender would wait for ever.
pub const MIN_OUTBOX_BYTES: usize = 8192;

/// Rule 2: a line that can cost a client `need` more bytes fits when what the client is owed
/// stays within its `bound`.
pub fn fits(owed: usize, need: usize, bound: usize) -> bool {
    owed + need <= bound
}

/// Rule 3: a client behind has caught up once it is owed half its bound or less (the low mark,
/// as in asyncio's write-buffer limits: resuming at the first free byte would make a reader
/// that is just keeping up wake its senders for every line).
pub fn caught_up(owed: usize, bound: usize) -> bool {
    owed <= bound / 2
}

/// Rule 5: past twice its bound, a client is cut at once.
pub fn over_hard_limit(owed: usize, bound: usize) -> bool {
    owed > bound.saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::LONGEST_REPLY;

    #[test]
    fn the_smallest_bound_holds_the_longest_reply_and_message() {
        assert!(fits(0, LONGEST_REPLY, MIN_OUTBOX_BYTES));
        let longest_message = "<> \n".len() + 24 + crate::MAX_LINE + crate::outbox::CHUNK_COST;
        assert!(fits(0, longest_message, MIN_OUTBOX_BYTES));
    }

    #[test]
    fn marks() {
        assert!(fits(100, 900, 1000));
        assert!(!fits(101, 900, 1000));
        assert!(caught_up(500, 1000));
        assert!(!caught_up(501, 1000));
        assert!(!over_hard_limit(2000, 1000));
        assert!(over_hard_limit(2001, 1000));
    }
}
