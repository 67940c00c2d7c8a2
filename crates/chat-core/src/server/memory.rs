//! What one connection costs the server, in bytes: the sizes the book's "Where the bytes go"
//! states, asserted. A field added to [`Conn`] (or a `String` where a shared name would do)
//! fails here, ten thousand times cheaper than in a measurement. That an idle
//! connection holds no buffer is `tests/server.rs`'s (through [`super::Server::holds_buffers`]).

use std::mem::size_of;

use super::{Conn, Phase};
use crate::hub::{Member, Room};
use crate::{Framer, Outbox};

/// The parts of a connection's state, and the state itself. The sizes are those of x86-64
/// (and every other 64-bit target): 8-byte pointers and lengths.
#[test]
fn a_connection_is_this_many_bytes() {
    assert_eq!(
        size_of::<Framer>(),
        8,
        "a framer holding nothing is a null pointer"
    );
    assert_eq!(
        size_of::<Outbox>(),
        48,
        "an empty queue, its cost, what was taken"
    );
    assert_eq!(size_of::<Phase>(), 1);
    assert_eq!(size_of::<Box<[u8]>>(), 16, "the waiting input");
    assert_eq!(
        size_of::<Conn>(),
        8 + 48 + 16 + 16 + 32 + 8,
        "framer, outbox, waiting input, behind-since, fences, phase and flags"
    );
    assert_eq!(
        size_of::<Member>(),
        32,
        "a boxed nick and the shared room name"
    );
    assert_eq!(
        size_of::<Room>(),
        16 + 32,
        "its name and its set of members"
    );
}
