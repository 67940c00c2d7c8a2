//! The physical reference: how many chat lines per second can the kernel move
//! over loopback on this machine, with no chat server logic at all?
//!
//! A trivial in-process broadcaster (one thread, pinned where a server would
//! run) accepts N loopback connections from the generator and writes the same
//! line to every socket, round-robin, as fast as it can, with blocking writes:
//! first one `write` per line (what a naive server does), then sixteen lines
//! per `write` (what batching buys). The generator reads and parses every line
//! exactly as it does in a real run. Every stage's throughput is then shown as
//! a fraction of these two figures, measured in the same run.
//!
//! Run it with `chat-bench ceiling` (add `--json FILE` to keep the result).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};

use crate::marker::{self, Marker};
use crate::result::Conditions;
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

/// Measures both modes, each for `duration`.
pub fn measure(
    sockets: usize,
    message_size: usize,
    duration: Duration,
    broadcaster_cpu: Option<usize>,
) -> io::Result<Ceiling> {
    // The line a server would send for one message: prefix plus marker plus padding.
    let mut line = b"<guest1> ".to_vec();
    marker::write_line(
        &mut line,
        Marker {
            sender: 0,
            seq: 0,
            intended_us: 0,
        },
        message_size,
    );
    let single = one_mode(sockets, &line, 1, duration, broadcaster_cpu)?;
    let batched = one_mode(sockets, &line, BATCH, duration, broadcaster_cpu)?;
    Ok(Ceiling {
        sockets: sockets as u64,
        line_bytes: line.len() as u64,
        measurements: vec![[single.lines_per_sec, batched.lines_per_sec]],
        single,
        batched,
        conditions: Conditions::default(),
    })
}

/// Combines two measurements: the faster of each mode, and both figures.
pub fn best_of(a: Ceiling, b: Ceiling) -> Ceiling {
    let faster = |x: Mode, y: Mode| {
        if y.lines_per_sec > x.lines_per_sec {
            y
        } else {
            x
        }
    };
    let mut measurements = a.measurements;
    measurements.extend(b.measurements);
    Ceiling {
        sockets: a.sockets,
        line_bytes: a.line_bytes,
        single: faster(a.single, b.single),
        batched: faster(a.batched, b.batched),
        measurements,
        conditions: a.conditions,
    }
}

// ANCHOR: broadcaster
/// The broadcaster: writes `chunk` to every socket, round-robin, until told
/// to stop. Returns its own CPU seconds while it was writing.
fn broadcast(
    mut sockets: Vec<TcpStream>,
    chunk: Vec<u8>,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
) -> f64 {
    if let Some(cpu) = cpu {
        // Best effort: an unpinned ceiling is still a ceiling.
        let _ = sys::pin_thread(0, cpu);
    }
    let start = sys::thread_cpu_seconds();
    'outer: while !stop.load(Ordering::Relaxed) {
        for s in sockets.iter_mut() {
            if s.write_all(&chunk).is_err() {
                break 'outer;
            }
        }
    }
    sys::thread_cpu_seconds() - start
}
// ANCHOR_END: broadcaster

/// One mode: connect, let the broadcaster run, read everything for `duration`.
fn one_mode(
    n: usize,
    line: &[u8],
    per_write: usize,
    duration: Duration,
    cpu: Option<usize>,
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
    let writer = std::thread::spawn(move || broadcast(writers, chunk, stop2, cpu));

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
    let (start, lines0, bytes0, cpu0) = measuring.expect("the loop only ends while measuring");
    let secs = start.elapsed().as_secs_f64();
    let own = sys::thread_cpu_seconds() - cpu0;
    stop.store(true, Ordering::Relaxed);
    // Closing our ends unblocks a broadcaster stuck in a write.
    drop(readers);
    let broadcaster_cpu = writer
        .join()
        .map_err(|_| io::Error::other("broadcaster thread panicked"))?;
    Ok(Mode {
        lines_per_write: per_write as u64,
        lines_per_sec: (lines - lines0) as f64 / secs,
        mb_per_sec: (bytes - bytes0) as f64 / secs / 1e6,
        seconds: secs,
        // The broadcaster's CPU covers its warm-up too; close enough for a
        // "was it saturated" figure.
        broadcaster_busy: broadcaster_cpu / (secs + 0.2),
        generator_busy: own / secs,
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
