//! What a server line looks like on a person's screen: which kind of line it is, its text
//! with every control character made visible, and the colours of its marker.
//!
//! Plain functions on strings, no terminal: the unit tests below are the whole contract.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::Write as _;

use chat_core::command::is_valid_name;
use chat_core::wire::{ERROR, NOTICE, PRIVATE_MESSAGE, ROOM_MESSAGE};

/// One line from the server, by its marker (the protocol's *What the server sends*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `* TEXT`: a notice from the server; holds `TEXT`.
    Notice(&'a str),
    /// `! TEXT`: an error, in reply to what we sent; holds `TEXT`.
    Error(&'a str),
    /// `<NICK> TEXT`: a message to the room.
    Room {
        /// Who sent it (a valid name: it cannot hold a control character).
        nick: &'a str,
        /// What they said: anything valid UTF-8, control characters included.
        text: &'a str,
    },
    /// `[NICK] TEXT`: a private message.
    Private {
        /// Who sent it.
        nick: &'a str,
        /// What they said.
        text: &'a str,
    },
    /// Anything else: no conforming server sends it, but a client must still show it safely.
    Other(&'a str),
}

/// Sorts one line (without its `\n`) by its marker.
///
/// A nick is taken only if it is a valid name, so `<not a nick> hi` is [`Kind::Other`]: the
/// protocol keeps markers unambiguous by forbidding `<`, `>`, `[`, `]` and spaces in names.
// ANCHOR: classify
pub fn classify(line: &str) -> Kind<'_> {
    if let Some(text) = line.strip_prefix(NOTICE) {
        return Kind::Notice(text);
    }
    if let Some(text) = line.strip_prefix(ERROR) {
        return Kind::Error(text);
    }
    if let Some((nick, text)) = from_nick(line, ROOM_MESSAGE) {
        return Kind::Room { nick, text };
    }
    if let Some((nick, text)) = from_nick(line, PRIVATE_MESSAGE) {
        return Kind::Private { nick, text };
    }
    Kind::Other(line)
}

/// Splits `OPEN NICK CLOSE ' ' TEXT` into `(NICK, TEXT)`.
fn from_nick(line: &str, (open, close): (char, char)) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(open)?;
    // A name cannot contain the closing bracket, so the first one ends it.
    let (nick, text) = rest.split_once(close)?;
    let text = text.strip_prefix(' ')?;
    is_valid_name(nick).then_some((nick, text))
}
// ANCHOR_END: classify

/// Text as it may be shown on a terminal: every character that a terminal would *act on*
/// rather than draw is written out as a visible escape.
///
/// - C0 controls (U+0000–U+001F): `\r`, `\n` and `\t` by name, the others as `\xNN` (ESC is
///   `\x1b`). A `\r` would move the cursor back and let the rest of the message overwrite
///   the sender's nick; ESC starts every colour, cursor-movement and window-title sequence.
/// - DEL (U+007F) as `\x7f`.
/// - C1 controls (U+0080–U+009F) as `\u{9b}`: some terminals take U+009B as a one-character
///   ESC `[`, so they are as dangerous as ESC.
/// - The bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069),
///   as `\u{202e}`: a terminal that does bidi could draw a line's end before its start.
///
/// Everything else, accents, other scripts and emoji included, is kept as it is. A backslash
/// is kept too: `\x1b` typed as four characters looks like an escaped ESC and does no harm,
/// and doubling every backslash would make ordinary text (paths, smileys) harder to read.
// ANCHOR: escape
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text); // the usual case: nothing to copy
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// True for a character [`escape`] writes out.
fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1: exactly U+0000–U+001F and U+007F–U+009F
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
// ANCHOR_END: escape

/// Whether to colour what we print: only on a terminal, never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>), and never on a terminal that says
/// it is `dumb` or says nothing (`TERM` unset).
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    let no_color = no_color.is_some_and(|v| !v.is_empty());
    let term_ok = term.is_some_and(|t| !t.is_empty() && t != "dumb");
    is_terminal && !no_color && term_ok
}

/// [`use_colour`] for this process's standard output.
pub fn use_colour_on_stdout() -> bool {
    use std::io::IsTerminal as _;
    use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

/// The SGR (colour) sequences we use, and the only escape sequences we ever print.
mod sgr {
    pub const RESET: &str = "\x1b[0m";
    pub const BOLD: &str = "\x1b[1m";
    pub const DIM: &str = "\x1b[2m";
    pub const RED: &str = "\x1b[31m";
    pub const GREEN: &str = "\x1b[32m";
    pub const YELLOW: &str = "\x1b[33m";
    pub const MAGENTA: &str = "\x1b[35m";
    pub const CYAN: &str = "\x1b[36m";
}

/// One server line (without its `\n`) as it is printed: escaped, and with its marker in
/// colour when `colour` is true. Without colour it is the line itself, escaped, so scripts
/// see exactly what `nc` would show, minus the terminal's interpretation.
// ANCHOR: render
pub fn render(line: &str, colour: bool) -> String {
    if !colour {
        return escape(line).into_owned();
    }
    use sgr::*;
    // The text is escaped before our own sequences go around it, so ours are the only ones.
    match classify(line) {
        Kind::Notice(text) => format!("{CYAN}{NOTICE}{}{RESET}", escape(text)),
        Kind::Error(text) => format!("{BOLD}{RED}{ERROR}{}{RESET}", escape(text)),
        Kind::Room { nick, text } => {
            let (open, close) = ROOM_MESSAGE;
            format!("{BOLD}{YELLOW}{open}{nick}{close}{RESET} {}", escape(text))
        }
        Kind::Private { nick, text } => {
            let (open, close) = PRIVATE_MESSAGE;
            format!(
                "{BOLD}{MAGENTA}{open}{nick}{close}{RESET} {MAGENTA}{}{RESET}",
                escape(text)
            )
        }
        Kind::Other(text) => escape(text).into_owned(),
    }
}
// ANCHOR_END: render

/// A note from chat-client itself (not from the server): `chat-client: TEXT`, dimmed when in
/// colour. No server line starts with `chat-client:`, so a note cannot be mistaken for one.
pub fn note(text: &str, colour: bool) -> String {
    if colour {
        format!(
            "{}{}chat-client: {text}{}",
            sgr::DIM,
            sgr::GREEN,
            sgr::RESET
        )
    } else {
        format!("chat-client: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_is_classified() {
        assert_eq!(
            classify("* alice joined rust"),
            Kind::Notice("alice joined rust")
        );
        assert_eq!(
            classify("! nick taken: alice"),
            Kind::Error("nick taken: alice")
        );
        assert_eq!(
            classify("<alice> hello <there>"),
            Kind::Room {
                nick: "alice",
                text: "hello <there>"
            }
        );
        assert_eq!(
            classify("[bob_2] psst [x]"),
            Kind::Private {
                nick: "bob_2",
                text: "psst [x]"
            }
        );
        // Text may itself start like a marker: it stays text.
        assert_eq!(
            classify("<alice> * you are now root"),
            Kind::Room {
                nick: "alice",
                text: "* you are now root"
            }
        );
    }

    #[test]
    fn lines_that_only_look_like_markers_are_other() {
        for line in [
            "*no space",
            "!no space",
            "<alice>no space",
            "<not a nick> hi",
            "<> empty nick",
            "<alice hi",
            "[alice hi",
            "[a*b] hi",
            "hello",
            "",
            "<aaaaaaaaaaaaaaaaaaaaaaaaa> one letter too long",
        ] {
            assert_eq!(classify(line), Kind::Other(line), "{line:?}");
        }
    }

    #[test]
    fn carriage_return_and_newline_and_tab_are_named() {
        assert_eq!(escape("hi\r<alice> fake"), "hi\\r<alice> fake");
        assert_eq!(escape("a\nb\tc"), "a\\nb\\tc");
    }

    #[test]
    fn escape_sequences_lose_their_escape() {
        // colour
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        // cursor movement: two lines up, then clear the line
        assert_eq!(escape("\x1b[2A\x1b[2K"), "\\x1b[2A\\x1b[2K");
        // window title (OSC ... BEL)
        assert_eq!(escape("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert!(!escape("\x1b[2A\x1b]0;t\x07").contains('\x1b'));
    }

    #[test]
    fn other_c0_controls_del_and_c1_controls_are_escaped() {
        assert_eq!(escape("\0\x01\x08\x1f"), "\\x00\\x01\\x08\\x1f");
        assert_eq!(escape("del\x7f"), "del\\x7f");
        // U+009B is CSI on terminals that take 8-bit controls; U+0085 is NEL (next line).
        assert_eq!(
            escape("\u{9b}2A\u{85}\u{80}\u{9f}"),
            "\\u{9b}2A\\u{85}\\u{80}\\u{9f}"
        );
        assert_eq!(escape("\u{202e}txet"), "\\u{202e}txet");
        assert_eq!(escape("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn valid_text_is_kept_as_it_is_without_a_copy() {
        for text in [
            "héllo wörld",
            "日本語のテキスト",
            "emoji 🦀👍🏽",
            "ÿ and U+00A0:\u{a0}",
            "a \\x1b typed by hand",
            "",
        ] {
            assert!(
                matches!(escape(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn plain_rendering_is_the_escaped_line() {
        assert_eq!(
            render("<eve> hi\r<alice> fake", false),
            "<eve> hi\\r<alice> fake"
        );
        assert_eq!(render("* welcome guest1", false), "* welcome guest1");
    }

    #[test]
    fn colour_rendering_escapes_the_text_and_colours_only_the_marker() {
        let shown = render("<eve> \x1b[2Jgone", true);
        assert_eq!(shown, "\x1b[1m\x1b[33m<eve>\x1b[0m \\x1b[2Jgone");
        // Every ESC in the output starts one of our own SGR sequences.
        for line in [
            "* a\x1b[31m",
            "! b\r",
            "<c> \x1b]0;t\x07",
            "[d] \u{9b}",
            "e\x1b",
        ] {
            let shown = render(line, true);
            for (i, _) in shown.match_indices('\x1b') {
                let seq = &shown[i..];
                let end = seq.find('m').expect("an SGR sequence ends with m");
                assert!(seq[2..end].bytes().all(|b| b.is_ascii_digit()), "{shown:?}");
            }
            assert!(
                !shown.contains('\r') && !shown.contains('\u{9b}'),
                "{shown:?}"
            );
        }
    }

    #[test]
    fn colour_only_on_a_capable_terminal_without_no_color() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert!(use_colour(true, None, os("xterm-256color")));
        assert!(use_colour(true, os(""), os("xterm"))); // NO_COLOR= (empty) does not count
        assert!(!use_colour(true, os("1"), os("xterm")));
        assert!(!use_colour(false, None, os("xterm")));
        assert!(!use_colour(true, None, os("dumb")));
        assert!(!use_colour(true, None, None));
    }

    #[test]
    fn notes_are_marked_as_ours() {
        assert_eq!(note("hi", false), "chat-client: hi");
        assert!(note("hi", true).contains("chat-client: hi"));
    }
}
