//! The conformance suite against the Python asyncio baseline, `baseline/asyncio_chat.py`: the
//! server the C10K articles teach, held to the same specification as every Rust stage. It is
//! started like any stage binary (its shebang is `#!/usr/bin/env python3`: Python 3.11 or newer
//! must be on `PATH`).
//!
//! ```text
//! cargo test -p chat-testkit --test asyncio_baseline
//! ```
//!
//! The idle-clients bound is Python's, not the Rust stages' 4 KiB: every connection is a
//! socket object, a transport, a protocol, a `StreamReader` and a `StreamWriter` (each with its
//! attributes in a dict), a task, and the frames of the coroutines it waits in (`session`,
//! `lines`, `readuntil`) with the future it waits on. Measured here: about 6.5 KB of resident
//! memory per idle client at 2,000 clients (CPython 3.11). The bound leaves room for the
//! allocator's arenas and still catches a buffer kept per idle client.

chat_testkit::conformance!(
    bin = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../baseline/asyncio_chat.py"
    ),
    mode = concurrent,
    idle_bytes_per_client = 16 * 1024,
);
