//! Junk input: 64 KiB of seeded garbage (NULs, invalid UTF-8, over-long lines, broken
//! commands) must hurt nobody: not the sender's connection, not the server, not the
//! conversation of anybody else.
//!
//! Run through a stage: `cargo test -p chat-threads --test conformance -- garbage`.

use std::io::{self, Write};

use super::{joined, lobby, GARBAGE_SEED};
use crate::{garbage, Client, Options, Rng, Target};

/// How much junk the garbage checks send.
const GARBAGE_BYTES: usize = 64 * 1024;

/// Sends the junk from `g` (on a writer thread, in pieces of random size, then
/// `\n/nick survivor`), reading everything the server answers meanwhile. Every answer
/// must be a notice or an error (`* ` / `! `: `g` is alone in its rooms), the
/// connection must stay open, and `* you are now survivor` must come at the end.
fn send_garbage(g: &mut Client) -> Result<(), String> {
    let junk = garbage(GARBAGE_SEED, GARBAGE_BYTES);
    let mut w = g.writer();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<()> {
            let mut rng = Rng::new(GARBAGE_SEED ^ 1);
            let mut rest = &junk[..];
            while !rest.is_empty() {
                let n = rng.between(1, 4096).min(rest.len());
                w.write_all(&rest[..n])?;
                rest = &rest[n..];
            }
            w.write_all(b"\n/nick survivor\n")
        });
        let mut answers = 0usize;
        let read = loop {
            match g.try_line() {
                Ok(line) if line == "* you are now survivor" => break Ok(()),
                Ok(line) if line.starts_with("* ") || line.starts_with("! ") => answers += 1,
                Ok(line) => {
                    break Err(format!(
                        "{}: while sending junk, got a line that is neither a notice nor an \
                         error: {line:?}",
                        g.who_am_i()
                    ))
                }
                Err(e) => {
                    break Err(format!(
                        "{}: after {answers} answers to the junk, expected more answers and \
                         then \"* you are now survivor\", got {e}",
                        g.who_am_i()
                    ))
                }
            }
        };
        let wrote = joined(writer).map_err(|e| {
            format!(
                "{}: sending the junk failed ({e}): bad input must not close the connection",
                g.who_am_i()
            )
        });
        read.and(wrote)
    })
}

/// 64 KiB of junk (NULs, invalid UTF-8, over-long lines, broken commands; seeded, so a
/// failure replays): the connection stays open and usable, the server stays up and
/// welcomes the next client.
///
/// Breaks, if it fails: *Bad input hurts nobody else*, "no bytes a client sends can crash the
/// server".
pub fn garbage_survived(t: &Target) {
    let server = t.start(Options::default());
    let mut g = server.join("G");
    if let Err(e) = send_garbage(&mut g) {
        panic!("{e}");
    }
    g.send("/quit");
    g.expect("* bye");
    g.expect_eof();
    server.join("next");
    server.finish();
}

/// While one client sends junk, two others in another room chat: they see exactly their
/// own conversation, nothing more, nothing less.
///
/// Breaks, if it fails: *Bad input hurts nobody else*, "... or change what any other client
/// receives beyond what the protocol says that input does".
pub fn garbage_isolated(t: &Target) {
    const MESSAGES: usize = 100;
    let server = t.start(Options::default());
    let mut v = lobby(&server, 2, "quiet");
    let (a, b) = v.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    a.send("/join quiet");
    a.expect("* you joined quiet (1 members)");
    b.expect(&format!("* {} left lobby", a.nick));
    b.send("/join quiet");
    b.expect("* you joined quiet (2 members)");
    a.expect(&format!("* {} joined quiet", b.nick));
    let mut g = server.join("G");
    let garbage_result = std::thread::scope(|s| {
        let junk = s.spawn(|| send_garbage(&mut g));
        for i in 0..MESSAGES {
            a.send(&format!("from a {i}"));
            b.send(&format!("from b {i}"));
        }
        for i in 0..MESSAGES {
            a.expect(&format!("<{}> from b {i}", b.nick));
            b.expect(&format!("<{}> from a {i}", a.nick));
        }
        joined(junk)
    });
    if let Err(e) = garbage_result {
        panic!("{e}");
    }
    // The junk has all been handled (G got its last answer): nothing of it reached quiet.
    let (na, nb) = (a.nick.clone(), b.nick.clone());
    a.expect_who("quiet", &[&na, &nb]);
    b.sync();
    g.send("/quit");
    g.expect("* bye");
    g.expect_eof();
    a.sync(); // G was never in quiet: its leaving is not announced there
    server.finish();
}
