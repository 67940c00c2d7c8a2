//! The protocol's own exchanges, as one test client sees them: its welcome, a rename, `/who`
//! and `/rooms` with their exact format, and a round trip that proves everything before it
//! was handled.

use std::collections::BTreeSet;

use super::{parse_rooms, parse_welcome, parse_who, Client};

impl Client {
    /// Reads the welcome line, checks its form and remembers the nick it gives.
    #[track_caller]
    pub fn expect_welcome(&mut self) -> String {
        match self.try_welcome() {
            Ok(nick) => nick,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Client::expect_welcome`] returning the failure.
    pub fn try_welcome(&mut self) -> Result<String, String> {
        let line = self.try_line().map_err(|e| {
            format!(
                "{}: expected `* welcome guestN (type /help for commands)`, got {e}",
                self.who_am_i()
            )
        })?;
        let nick = parse_welcome(&line).map_err(|e| format!("{}: {e}", self.who_am_i()))?;
        self.nick = nick.clone();
        Ok(nick)
    }

    /// Sends `/nick NEW`, expects `* you are now NEW`, remembers the nick.
    #[track_caller]
    pub fn rename(&mut self, new: &str) {
        self.send(&format!("/nick {new}"));
        self.expect(&format!("* you are now {new}"));
        self.nick = new.to_string();
    }

    /// Sends `/who` and returns the room and the members it lists.
    pub fn try_who(&mut self) -> Result<(String, Vec<String>), String> {
        self.try_send("/who")?;
        let line = self
            .try_line()
            .map_err(|e| format!("{}: expected the reply to /who, got {e}", self.who_am_i()))?;
        parse_who(&line).map_err(|e| format!("{}: {e}", self.who_am_i()))
    }

    /// Proves that nothing else is queued for this client: sends `/who` and asserts that its
    /// reply is the very next line. (A line that arrived unexpectedly fails the check.)
    #[track_caller]
    pub fn sync(&mut self) {
        if let Err(e) = self.try_who() {
            panic!("{e} (nothing else was expected before it)");
        }
    }

    /// `sync` for threads: returns the failure instead of panicking.
    pub fn try_sync(&mut self) -> Result<(), String> {
        self.try_who()
            .map(|_| ())
            .map_err(|e| format!("{e} (nothing else was expected before it)"))
    }

    /// Sends `/who` and asserts that the next line lists exactly `members` of `room` (the
    /// parser checks that they are sorted as the specification says).
    #[track_caller]
    pub fn expect_who(&mut self, room: &str, members: &[&str]) {
        let (got_room, got) = match self.try_who() {
            Ok(reply) => reply,
            Err(e) => panic!("{e}"),
        };
        let want: BTreeSet<&str> = members.iter().copied().collect();
        let have: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        if got_room != room || want != have || got.len() != members.len() {
            panic!(
                "{}: /who: expected room {room:?} with members {want:?}, got room {got_room:?} \
                 with {got:?}",
                self.who_am_i()
            );
        }
    }

    /// Sends `/rooms` and asserts the exact set of `(room, members)` it lists (the parser
    /// checks their order).
    #[track_caller]
    pub fn expect_rooms(&mut self, rooms: &[(&str, usize)]) {
        self.send("/rooms");
        let line = self.line();
        let got = match parse_rooms(&line) {
            Ok(got) => got,
            Err(e) => panic!("{}: {e}", self.who_am_i()),
        };
        let want: BTreeSet<(String, usize)> =
            rooms.iter().map(|&(r, n)| (r.to_string(), n)).collect();
        let have: BTreeSet<(String, usize)> = got.iter().cloned().collect();
        if want != have || got.len() != rooms.len() {
            panic!(
                "{}: /rooms: expected {want:?}, got {line:?}",
                self.who_am_i()
            );
        }
    }
}
