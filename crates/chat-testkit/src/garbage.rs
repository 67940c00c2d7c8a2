//! Reproducible junk for the "bad input never hurts anybody else" check.
//!
//! A tiny seeded PRNG (xorshift64*, no dependency) drives a generator of bytes that a
//! careless or hostile client might send: random bytes, NULs, invalid UTF-8, `\r`, lines
//! far over the 1024-byte limit, and fragments of real commands with random arguments.
//! The same seed always gives the same bytes, so a failure can be replayed.
//!
//! The generator never produces `/quit` and its random names use only the characters
//! `xyz019_-`, so it cannot name the rooms or nicks the check itself uses (`quiet`,
//! `guestN`, `survivor`); the unit tests below prove that for the seeds the checks use.
//!
//! Its own tests: `cargo test -p chat-testkit garbage`.

/// xorshift64* (Vigna): small, fast and good enough to pick bytes.
#[derive(Debug, Clone)]
pub struct Rng {
    /// The generator's whole state; never zero.
    state: u64,
}

impl Rng {
    /// A generator for `seed` (a zero seed is replaced, xorshift would stay at zero).
    pub fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`; the tiny modulo bias does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        // u64 -> usize: on 64-bit Linux both are 64 bits wide.
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Command fragments mixed into the junk: real commands, broken ones, escapes.
const FRAGMENTS: &[&[u8]] = &[
    b"/nick ",
    b"/nick",
    b"/join ",
    b"/join",
    b"/msg ",
    b"/msg",
    b"/who",
    b"/rooms",
    b"/help",
    b"//",
    b"/",
    b"/frobnicate ",
    b"/NICK ",
    b"/ ",
];

/// Byte sequences that are not valid UTF-8 (or cut a valid one short).
const BAD_UTF8: &[&[u8]] = &[
    b"\xff\xfe",
    b"\xc0\x80",         // overlong NUL
    b"\xed\xa0\x80",     // a UTF-16 surrogate
    b"\xe2\x82",         // the euro sign, cut short
    b"\xf4\x90\x80\x80", // above U+10FFFF
    b"\x80",             // a lone continuation byte
];

/// How a command fragment's line ends (a lone `\r` does not end it).
const LINE_ENDS: &[&[u8]] = &[b"\n", b"\r\n", b" x\n", b"\r"];

/// Runs of `\r` and empty lines.
const CARRIAGE_RETURNS: &[&[u8]] = &[b"\r\n", b"\r", b"\r\r\n", b"\n\n"];

/// Characters of random names: none of the names the checks rely on can be spelled.
const NAME_CHARS: &[u8] = b"xyz019_-";

/// Printable text without `/`, so it never starts a command.
fn text_byte(rng: &mut Rng) -> u8 {
    loop {
        let b = 0x20 + rng.below(95) as u8; // ' '..='~'
        if b != b'/' {
            return b;
        }
    }
}

/// About `len` bytes (a little more: the last piece is finished) of reproducible junk.
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 4096);
    while out.len() < len {
        match rng.below(10) {
            // Any bytes at all, including '\n', '\r', NUL and 0x80..=0xff.
            0 | 1 => {
                for _ in 0..rng.between(1, 40) {
                    out.push(rng.next_u64() as u8);
                }
            }
            2 => out.push(b'\n'),
            3 => out.extend(std::iter::repeat_n(0u8, rng.between(1, 8))),
            4 => out.extend_from_slice(rng.pick::<&[u8]>(BAD_UTF8)),
            // A line over the limit: 1025..=3000 bytes, sometimes left unfinished.
            5 => {
                for _ in 0..rng.between(1025, 3000) {
                    out.push(text_byte(&mut rng));
                }
                if rng.below(2) == 0 {
                    out.push(b'\n');
                }
            }
            // A command fragment, maybe with a random name, then the end of the line.
            6 | 7 => {
                out.extend_from_slice(rng.pick::<&[u8]>(FRAGMENTS));
                for _ in 0..rng.between(0, 30) {
                    out.push(*rng.pick(NAME_CHARS));
                }
                out.extend_from_slice(rng.pick::<&[u8]>(LINE_ENDS));
            }
            8 => out.extend_from_slice(rng.pick::<&[u8]>(CARRIAGE_RETURNS)),
            // An ordinary message line.
            _ => {
                for _ in 0..rng.between(1, 60) {
                    out.push(text_byte(&mut rng));
                }
                out.push(b'\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds the checks use (see `checks::garbage`).
    const SEEDS: &[u64] = &[crate::checks::GARBAGE_SEED];

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(garbage(7, 10_000), garbage(7, 10_000));
        assert_ne!(garbage(7, 10_000), garbage(8, 10_000));
    }

    #[test]
    fn junk_has_every_kind_of_bad_input() {
        for &seed in SEEDS {
            let g = garbage(seed, 64 * 1024);
            assert!(g.len() >= 64 * 1024);
            assert!(g.contains(&0), "a NUL");
            assert!(std::str::from_utf8(&g).is_err(), "invalid UTF-8");
            assert!(contains(&g, b"\r\n"), "a CRLF");
            let longest = g.split(|&b| b == b'\n').map(<[u8]>::len).max();
            assert!(longest > Some(1024), "an over-long line");
            assert!(contains(&g, b"/nick "), "a command");
        }
    }

    #[test]
    fn junk_never_names_what_the_checks_use() {
        for &seed in SEEDS {
            let g = garbage(seed, 64 * 1024);
            for word in [&b"/quit"[..], b"quiet", b"guest", b"survivor"] {
                assert!(!contains(&g, word), "seed {seed} contains {word:?}");
            }
        }
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::new(0);
        for n in 1..50 {
            assert!(rng.below(n) < n);
            let x = rng.between(n, n + 3);
            assert!((n..=n + 3).contains(&x));
        }
    }
}
