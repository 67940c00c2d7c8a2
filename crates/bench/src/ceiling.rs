//! The physical reference: how many chat lines per second can the kernel move
//! over loopback on this machine, with no chat server logic at all?
//!
//! A trivial in-process broadcaster (one thread, pinned where a server would
//! run) accepts N loopback connections from the generator and writes the same
//! line to every socket, round-robin, as fast as it can, with blocking writes:
//! first one `write` per line (what a naive server does), then sixteen lines
//! per `write` (what batching buys). The generator reads and parses every line
//! exactly as it does in a real run.
//!
//! A third mode paces the batched writer at a fixed load (`compare` uses the
//! searching scenarios' efficiency load): its CPU per line is what moving one
//! delivery over loopback costs at that load with sixteen lines per write and
//! no chat logic, the machine's own limit every stage's CPU per delivery at
//! the same load is divided by.
//!
//! Run it with `cargo run --release -p chat-bench -- ceiling` (add
//! `--json FILE` to keep the result).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::marker::{self, Marker};
use crate::result::Conditions;
use crate::scenario::OURS;
use crate::sys;

/// One mode of the ceiling: a number of lines per `write` call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Mode {
    /// Lines per `write` call by the broadcaster.
    pub lines_per_write: u64,
    /// Lines the generator received and parsed per second.
    pub lines_per_sec: f64,
    /// The same in MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Measured seconds.
    pub seconds: f64,
    /// Broadcaster thread CPU over the measured time, as a fraction of one core.
    pub broadcaster_busy: f64,
    /// Generator thread CPU over the measured time, as a fraction of one core.
    pub generator_busy: f64,
    /// The load the writer was paced at, lines per second (`None`: flat out).
    #[serde(default)]
    pub paced_lines_per_sec: Option<f64>,
    /// Broadcaster CPU per line it wrote, microseconds.
    #[serde(default)]
    pub broadcaster_cpu_us_per_line: f64,
    /// Generator CPU per line it read and parsed, microseconds.
    #[serde(default)]
    pub generator_cpu_us_per_line: f64,
}

/// The ceiling measurement, as `ceiling.json` holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ceiling {
    /// Loopback connections written to.
    pub sockets: u64,
    /// Bytes per line, including the `<guestN> ` prefix a server adds and the `\n`.
    pub line_bytes: u64,
    /// One `write` per line.
    pub single: Mode,
    /// Sixteen lines per `write`.
    pub batched: Mode,
    /// Sixteen lines per `write`, paced at a fixed load (see the module docs).
    #[serde(default)]
    pub paced: Option<Mode>,
    /// Lines/s of every measurement, `[single, batched]`: `compare` measures
    /// before and after the stages and keeps the faster of each mode, since a
    /// busy machine can only make a ceiling look lower than it is.
    #[serde(default)]
    pub measurements: Vec<[f64; 2]>,
    /// Where and how it ran.
    pub conditions: Conditions,
}

/// Lines per write in the batched mode.
pub const BATCH: usize = 16;

/// Measures both modes, each for `duration`, and the paced mode when
/// `paced_load` (lines per second) is given.
pub fn measure(
    sockets: usize,
    message_size: usize,
    duration: Duration,
    broadcaster_cpu: Option<usize>,
    paced_load: Option<f64>,
) -> io::Result<Ceiling> {
    // The line a server would send for one message: prefix plus marker plus padding.
    let mut line = OURS.relay_prefix("guest1").into_bytes();
    marker::write_line(
        &mut line,
        Marker {
            sender: 0,
            seq: 0,
            intended_us: 0,
        },
        message_size,
    );
    let single = one_mode(sockets, &line, 1, duration, broadcaster_cpu, None)?;
    let batched = one_mode(sockets, &line, BATCH, duration, broadcaster_cpu, None)?;
    let paced = paced_load
        .map(|load| one_mode(sockets, &line, BATCH, duration, broadcaster_cpu, Some(load)))
        .transpose()?;
    Ok(Ceiling {
        sockets: sockets as u64,
        line_bytes: line.len() as u64,
        measurements: vec![[single.lines_per_sec, batched.lines_per_sec]],
        single,
        batched,
        paced,
        conditions: Conditions::default(),
    })
}

/// Combines two measurements: the faster of each mode, the cheaper paced
/// one (a busy machine can only make a ceiling look lower, or costlier, than
/// it is), and both figures.
pub fn best_of(a: Ceiling, b: Ceiling) -> Ceiling {
    let faster = |x: Mode, y: Mode| {
        if y.lines_per_sec > x.lines_per_sec {
            y
        } else {
            x
        }
    };
    let cheaper = |x: Mode, y: Mode| {
        if y.broadcaster_cpu_us_per_line > 0.0
            && y.broadcaster_cpu_us_per_line < x.broadcaster_cpu_us_per_line
        {
            y
        } else {
            x
        }
    };
    let paced = match (a.paced, b.paced) {
        (Some(x), Some(y)) => Some(cheaper(x, y)),
        (x, y) => x.or(y),
    };
    let mut measurements = a.measurements;
    measurements.extend(b.measurements);
    Ceiling {
        sockets: a.sockets,
        line_bytes: a.line_bytes,
        single: faster(a.single, b.single),
        batched: faster(a.batched, b.batched),
        paced,
        measurements,
        conditions: a.conditions,
    }
}

// ANCHOR: broadcaster
/// The broadcaster: writes `chunk` to every socket, round-robin, until told
/// to stop; with `pace`, one round every `pace` at most. Returns its own CPU
/// seconds and the rounds it wrote.
fn broadcast(
    mut sockets: Vec<TcpStream>,
    chunk: Vec<u8>,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
    pace: Option<Duration>,
) -> (f64, u64) {
    if let Some(cpu) = cpu {
        // Best effort: an unpinned ceiling is still a ceiling.
        let _ = sys::pin_thread(0, cpu);
    }
    let start = sys::thread_cpu_seconds();
    let mut rounds = 0;
    let mut next = Instant::now();
    'outer: while !stop.load(Ordering::Relaxed) {
        for s in sockets.iter_mut() {
            if s.write_all(&chunk).is_err() {
                break 'outer;
            }
        }
        rounds += 1;
        if let Some(pace) = pace {
            // Sleep to the next round's due time; when behind, go on
            // without trying to catch up in a burst.
            let now = Instant::now();
            next = (next + pace).max(now.checked_sub(pace).unwrap_or(now));
            std::thread::sleep(next.saturating_duration_since(now));
        }
    }
    (sys::thread_cpu_seconds() - start, rounds)
}
// ANCHOR_END: broadcaster

/// One mode: connect, let the broadcaster run, read everything for `duration`.
fn one_mode(
    n: usize,
    line: &[u8],
    per_write: usize,
    duration: Duration,
    cpu: Option<usize>,
    paced: Option<f64>,
) -> io::Result<Mode> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut poll = Poll::new()?;
    let mut readers = Vec::with_capacity(n);
    let mut writers = Vec::with_capacity(n);
    for i in 0..n {
        let client = TcpStream::connect(addr)?;
        let (server_side, _) = listener.accept()?;
        server_side.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        let mut client = mio::net::TcpStream::from_std(client);
        poll.registry()
            .register(&mut client, Token(i), Interest::READABLE)?;
        readers.push(client);
        writers.push(server_side);
    }
    let chunk = line.repeat(per_write);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    // A round writes `per_write` lines to each of the `n` sockets.
    let lines_per_round = (n * per_write) as f64;
    let pace = paced.map(|load| Duration::from_secs_f64(lines_per_round / load.max(1.0)));
    let writer = std::thread::spawn(move || broadcast(writers, chunk, stop2, cpu, pace));

    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<Vec<u8>> = vec![Vec::new(); n];
    let (mut lines, mut bytes) = (0u64, 0u64);
    // A short warm-up, then the measured part.
    let warm_until = Instant::now() + Duration::from_millis(200);
    let mut measuring: Option<(Instant, u64, u64, f64)> = None;
    let end_after = duration;
    loop {
        let now = Instant::now();
        if measuring.is_none() && now >= warm_until {
            measuring = Some((now, lines, bytes, sys::thread_cpu_seconds()));
        }
        if let Some((start, ..)) = measuring {
            if now >= start + end_after {
                break;
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match readers[i].read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        bytes += k as u64;
                        lines += count_lines(&mut partial[i], &buf[..k]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let Some((start, lines0, bytes0, cpu0)) = measuring else {
        return Err(io::Error::other("the ceiling loop ended before measuring"));
    };
    let secs = start.elapsed().as_secs_f64();
    let own = sys::thread_cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    // Closing our ends unblocks a broadcaster stuck in a write.
    drop(readers);
    let (broadcaster_cpu, rounds) = writer
        .join()
        .map_err(|_| io::Error::other("broadcaster thread panicked"))?;
    let lines_read = (lines - lines0).max(1);
    Ok(Mode {
        lines_per_write: per_write as u64,
        lines_per_sec: (lines - lines0) as f64 / secs,
        mb_per_sec: (bytes - bytes0) as f64 / secs / 1e6,
        seconds: secs,
        // The broadcaster's CPU covers its warm-up too; close enough for a
        // "was it saturated" figure.
        broadcaster_busy: broadcaster_cpu / (secs + 0.2),
        generator_busy: own / secs,
        paced_lines_per_sec: paced,
        broadcaster_cpu_us_per_line: broadcaster_cpu * 1e6
            / (rounds as f64 * lines_per_round).max(1.0),
        generator_cpu_us_per_line: own * 1e6 / lines_read as f64,
    })
}

/// Splits `data` into lines (keeping an unfinished one in `partial`) and
/// parses the marker of each, as the real generator does. Returns the number
/// of complete lines.
fn count_lines(partial: &mut Vec<u8>, mut data: &[u8]) -> u64 {
    let mut n = 0;
    while let Some(pos) = data.iter().position(|&b| b == b'\n') {
        let found = if partial.is_empty() {
            marker::find(&data[..pos])
        } else {
            partial.extend_from_slice(&data[..pos]);
            let m = marker::find(partial);
            partial.clear();
            m
        };
        n += u64::from(found.is_some());
        data = &data[pos + 1..];
    }
    partial.extend_from_slice(data);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads_are_counted_once() {
        let mut line = Vec::new();
        marker::write_line(
            &mut line,
            Marker {
                sender: 1,
                seq: 2,
                intended_us: 3,
            },
            40,
        );
        let two = line.repeat(2);
        let mut partial = Vec::new();
        let (a, b) = two.split_at(50);
        assert_eq!(
            count_lines(&mut partial, a) + count_lines(&mut partial, b),
            2
        );
        assert!(partial.is_empty());
    }
}
