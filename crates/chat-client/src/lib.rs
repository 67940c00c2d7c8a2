//! # chat-client: a terminal client for every stage
//!
//! Every stage of c10k-chat speaks the same line protocol, so one client talks to all of
//! them. Start a stage, then, in as many terminals as you like:
//!
//! ```sh
//! cargo run -p chat-client                      # connects to 127.0.0.1:7878
//! cargo run -p chat-client -- 127.0.0.1:9000    # or to another address
//! ```
//!
//! It is what `nc 127.0.0.1 7878` was, for a person:
//!
//! - a line editor with history (↑ and ↓, Ctrl-R) whose prompt, `NICK@ROOM> `, follows
//!   what the server says (`* welcome NICK ...`, `* you are now NICK`, `* you joined ROOM`);
//! - lines from others printed *above* the prompt, never through what you are typing;
//! - the protocol's markers in colour (notices `* `, errors `! `, room messages `<NICK> `,
//!   private messages `[NICK] `), when the terminal can show colour and `NO_COLOR` is unset;
//! - every control character in what others send shown escaped (`\r`, `\x1b`, `\u{9b}`),
//!   so a message cannot move your cursor, recolour your screen or overwrite a line to
//!   pass itself off as someone else's;
//! - a plain word for what `nc` leaves you to guess: no server there, the server is full, the
//!   server closed the connection, or the server accepted the connection but nobody serves
//!   it yet (*connected, waiting for the server to answer…*).
//!
//! With `--script FILE`, or when standard input is not a terminal, it sends lines and
//! prints what comes back, ending by the rules of [`script`]:
//!
//! ```sh
//! printf '/nick alice\n/who\n/quit\n' | cargo run -q -p chat-client
//! ```
//!
//! ## Why rustyline
//!
//! The line editor is [`rustyline`]: a readline for Rust, maintained for years, small (its
//! default features are off here: no history file, no fuzzy search), and with the one thing
//! a chat client needs, an `ExternalPrinter` that prints a line above the prompt and redraws
//! the line being edited. `reedline` (nushell's editor) can do that too and redraws its
//! prompt live, but brings `crossterm` and more with it and needs a newer Rust than this
//! workspace promises. rustyline's one limit, a prompt fixed while one line is edited, costs
//! little here: only our own `/nick` and `/join` change the prompt, and the client waits a
//! moment for their answer before prompting again (see [`terminal`]).
//!
//! ## Sans-IO, again
//!
//! The protocol is `chat-core`'s, and its fixed words come from `chat_core::wire`. What the
//! client *decides* is in plain code with no terminal and no socket, unit-tested:
//!
//! - [`display`]: which marker a line has, escaping, colours;
//! - [`session`]: our nick and room as the server tells them, and how a session ended;
//! - [`lines`]: the server's bytes into bounded lines;
//! - [`script::Plan`]: when a script run is over, with the time passed in.
//!
//! The I/O around them is thin: [`net`] (connecting, a reading thread), [`script::run`] and
//! [`terminal::run`].
//!
//! ## Exit status
//!
//! 0 when the session ended as asked (`/quit`, Ctrl-D, the end of a script), 1 when it could
//! not connect, the server ended it first, or the connection failed; 2 for a bad command line.

#![forbid(unsafe_code)]

pub mod display;
pub mod lines;
pub mod net;
pub mod script;
pub mod session;
pub mod terminal;

pub use display::{classify, escape, render, Kind};
pub use net::{connect, ANSWER_WAIT, WAITING};
pub use session::{Ending, Session};
