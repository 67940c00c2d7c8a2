//! Flow control checked against a model, with proptest.
//!
//! Random clients connect, some reading everything (drainers) and some nothing; random senders
//! write bursts of messages, commands and half-closes, delivered to the server in reads of
//! random size (one byte at a time up to 64 KiB at once), with time passing in between. After
//! every event the server emits, and at the end, the rules of the specification must hold:
//!
//! - a client is never owed more than its bound B (2·B with notices that cannot wait); a
//!   drainer never more than B;
//! - a drainer is never cut;
//! - every drainer receives each sender's messages exactly once, in order, without a gap;
//! - once the clients that do not read are cut, every message a still-connected sender wrote
//!   reaches every drainer that was there before it.
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chat_core::{ClientId, SLOW_GRACE};
use common::Stage;
use proptest::prelude::*;

const B: usize = 8192;

#[derive(Debug, Clone)]
enum Step {
    /// A client connects; it reads everything, or nothing.
    Connect { drains: bool },
    /// Client (index into those connected) writes `count` messages (of `pad` extra bytes), then
    /// maybe a command.
    Send {
        who: usize,
        count: usize,
        pad: usize,
        command: Option<&'static str>,
    },
    /// The server's reads are at most this big from now on.
    ReadSize(usize),
    /// Time passes.
    Advance(u64),
    /// Client ends its stream (a half-close).
    End(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (prop::bool::weighted(0.75)).prop_map(|drains| Step::Connect { drains }),
        6 => (
            0usize..8,
            1usize..400,
            0usize..200,
            prop::option::weighted(0.3, prop::sample::select(vec!["/help", "/who", "/rooms", "/nick", "/msg guest1 hi"])),
        )
            .prop_map(|(who, count, pad, command)| Step::Send { who, count, pad, command }),
        2 => prop::sample::select(vec![1usize, 2, 3, 7, 64, 1000, 4096, 65536]).prop_map(Step::ReadSize),
        2 => (0u64..1500).prop_map(Step::Advance),
        1 => (0usize..8).prop_map(Step::End),
    ]
}

/// What the model remembers of one client.
#[derive(Debug)]
struct Model {
    id: ClientId,
    drains: bool,
    /// Messages it wrote (their sequence numbers run 0..sent).
    sent: usize,
    /// It ended its stream.
    ended: bool,
    /// How many messages each sender had written when this client connected.
    sent_before_me: HashMap<ClientId, usize>,
}

/// The messages `text` lines carry: `m<sender id>:<seq> <padding>`, after `<nick> `.
fn messages(lines: &[String]) -> Vec<(u64, usize)> {
    lines
        .iter()
        .filter(|l| l.starts_with('<'))
        .filter_map(|l| {
            let text = l.split_once("> ")?.1;
            let (sender, rest) = text.strip_prefix('m')?.split_once(':')?;
            let seq = rest.split(' ').next()?;
            Some((sender.parse().ok()?, seq.parse().ok()?))
        })
        .collect()
}

fn check(stage: &Stage, clients: &[Model]) -> Result<(), TestCaseError> {
    for c in clients {
        let owed = stage.owed(c.id);
        prop_assert!(owed <= 2 * B, "{} is owed {owed} > 2B", c.id);
        if c.drains {
            prop_assert!(owed <= B, "drainer {} is owed {owed} > B", c.id);
            prop_assert!(!stage.sockets[&c.id].cut, "drainer {} was cut", c.id);
        }
    }
    for d in clients.iter().filter(|c| c.drains) {
        // From each sender: a run of consecutive messages, starting no later than the first
        // one written after `d` connected (earlier ones may still have been waiting then).
        let mut next: HashMap<u64, usize> = HashMap::new();
        for (sender, seq) in messages(&stage.lines(d.id)) {
            match next.get_mut(&sender) {
                Some(expected) => {
                    prop_assert_eq!(
                        seq,
                        *expected,
                        "drainer {} got message {} of {} out of turn",
                        d.id,
                        seq,
                        sender
                    );
                    *expected += 1;
                }
                None => {
                    let start = d
                        .sent_before_me
                        .get(&ClientId(sender))
                        .copied()
                        .unwrap_or(0);
                    prop_assert!(
                        seq <= start,
                        "drainer {} missed messages {}..{} of {}",
                        d.id,
                        start,
                        seq,
                        sender
                    );
                    next.insert(sender, seq + 1);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn readers_lose_nothing_and_only_non_readers_are_cut(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut stage = Stage::new(B);
        let mut clients: Vec<Model> = Vec::new();
        for step in steps {
            match step {
                Step::Connect { drains } => {
                    if clients.len() >= 8 {
                        continue;
                    }
                    let sent_before_me = clients.iter().map(|c| (c.id, c.sent)).collect();
                    let id = stage.connect(drains);
                    clients.push(Model { id, drains, sent: 0, ended: false, sent_before_me });
                }
                Step::Send { who, count, pad, command } => {
                    let n = clients.len().max(1);
                    let Some(c) = clients.get_mut(who % n) else { continue };
                    if c.ended || stage.sockets[&c.id].closed {
                        continue;
                    }
                    let mut bytes = Vec::new();
                    for seq in c.sent..c.sent + count {
                        bytes.extend_from_slice(format!("m{}:{seq} {}\n", c.id.0, "p".repeat(pad)).as_bytes());
                    }
                    c.sent += count;
                    if let Some(command) = command {
                        bytes.extend_from_slice(command.as_bytes());
                        bytes.push(b'\n');
                    }
                    stage.write(c.id, &bytes);
                    stage.settle();
                }
                Step::ReadSize(n) => stage.read_size = n,
                Step::Advance(ms) => stage.advance(Duration::from_millis(ms)),
                Step::End(who) => {
                    let n = clients.len().max(1);
                    let Some(c) = clients.get_mut(who % n) else { continue };
                    if !c.ended {
                        c.ended = true;
                        stage.end(c.id);
                        stage.settle();
                    }
                }
            }
            check(&stage, &clients)?;
        }
        // Let every client that does not read be cut, then everything must have arrived.
        for _ in 0..4 {
            stage.advance(SLOW_GRACE * 2);
        }
        check(&stage, &clients)?;
        for c in clients.iter().filter(|c| !c.drains) {
            // Still there only if it holds nobody up: owed within its bound.
            let gone = stage.sockets[&c.id].closed;
            prop_assert!(gone || stage.owed(c.id) <= B, "{} does not read, is owed too much and still there", c.id);
        }
        for d in clients.iter().filter(|c| c.drains && !c.ended) {
            let got = messages(&stage.lines(d.id));
            for s in &clients {
                if s.id == d.id || s.ended || stage.sockets[&s.id].closed {
                    continue;
                }
                let start = d.sent_before_me.get(&s.id).copied().unwrap_or(0);
                if s.sent == start {
                    continue; // nothing written since `d` came
                }
                let last = got.iter().filter(|(id, _)| *id == s.id.0).map(|&(_, seq)| seq).max();
                prop_assert_eq!(
                    last,
                    Some(s.sent - 1),
                    "drainer {} did not get the last of the {} messages {} wrote",
                    d.id, s.sent, s.id
                );
            }
        }
    }
}
