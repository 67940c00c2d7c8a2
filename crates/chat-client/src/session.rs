//! Who we are, as the server says: our nick and room, followed from the server's own lines,
//! and how the connection is ending.
//!
//! The client never guesses: `/nick alice` may be answered `! nick taken: alice`, so only
//! `* you are now alice` changes the nick. Only whole server lines count, sorted by
//! [`classify`](crate::display::classify()): a room message whose *text* is
//! `* you are now root` is a message, and changes nothing.

use chat_core::command::{self, is_valid_name, Command};
use chat_core::hub::LOBBY;
use chat_core::wire::{
    BYE, SERVER_FULL, SHUTTING_DOWN, WELCOME, WELCOME_HINT, YOU_ARE_NOW, YOU_JOINED,
};

use crate::display::{classify, Kind};

/// What one server line meant to us (see [`Session::observe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// `* welcome NICK ...`: the server serves us; we are NICK, in the lobby.
    Welcome,
    /// `* you are now NICK`: the answer to our `/nick`.
    Renamed,
    /// `* you joined ROOM (N members)`: the answer to our `/join`.
    Joined,
    /// `! ...`: an error in reply to something we sent (perhaps our `/nick` or `/join`).
    Error,
    /// Any other line.
    Other,
}

impl Seen {
    /// True for the lines that answer a `/nick` or a `/join` (see [`Session::awaits_answer`]).
    pub fn answers(self) -> bool {
        matches!(self, Seen::Renamed | Seen::Joined | Seen::Error)
    }
}

/// How a session ended: what the last telling line from the server said, and who closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// We said goodbye (`/quit`, or ending our stream) and the server closed: all is well.
    AsAsked,
    /// `! server full`: the server had `--max-clients` clients already.
    ServerFull,
    /// `* server shutting down`.
    Shutdown,
    /// The server closed the connection without saying why.
    Closed,
    /// We said goodbye, but the server did not close the connection in time.
    NoClose,
    /// Reading or writing failed (the error itself is shown where it happened).
    Failed,
}

impl Ending {
    /// What to tell the person, or nothing when there is nothing more to say.
    pub fn message(self) -> Option<&'static str> {
        match self {
            Ending::AsAsked | Ending::Failed => None,
            Ending::ServerFull => {
                Some("the server is full (it has --max-clients clients); try again later")
            }
            Ending::Shutdown => Some("the server shut down"),
            Ending::Closed => Some("the server closed the connection"),
            Ending::NoClose => Some("the server did not close the connection after our goodbye"),
        }
    }

    /// The process's exit status: 0 when the session ended as asked, 1 otherwise.
    pub fn exit_code(self) -> u8 {
        match self {
            Ending::AsAsked => 0,
            _ => 1,
        }
    }
}

/// Our nick and room as the server last told us, and what it said last about closing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Our nick, from the welcome or the last `* you are now`; `None` until welcomed.
    nick: Option<String>,
    /// Our room: the lobby from the welcome, then from each `* you joined`.
    room: Option<String>,
    /// Whether the server has sent anything at all (it may be busy with someone else).
    answered: bool,
    /// The last of `* bye`, `! server full`, `* server shutting down` seen.
    last_word: Option<Ending>,
}

impl Session {
    /// A session that has heard nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Our nick, once welcomed.
    pub fn nick(&self) -> Option<&str> {
        self.nick.as_deref()
    }

    /// Our room, once welcomed.
    pub fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }

    /// Whether any line has arrived from the server.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Takes one line from the server (without its `\n`) and follows it.
    // ANCHOR: observe
    pub fn observe(&mut self, line: &str) -> Seen {
        self.answered = true;
        if line == BYE {
            self.last_word = Some(Ending::AsAsked);
        } else if line == SHUTTING_DOWN {
            self.last_word = Some(Ending::Shutdown);
        } else if line == SERVER_FULL {
            self.last_word = Some(Ending::ServerFull);
        }
        match classify(line) {
            Kind::Error(_) => return Seen::Error,
            Kind::Notice(_) => {}
            _ => return Seen::Other, // messages: whatever their text says, not the server's word
        }
        if let Some(nick) = line
            .strip_prefix(WELCOME)
            .and_then(|rest| rest.strip_suffix(WELCOME_HINT))
            .filter(|nick| is_valid_name(nick))
        {
            self.nick = Some(nick.to_owned());
            self.room = Some(LOBBY.to_owned());
            return Seen::Welcome;
        }
        if let Some(nick) = line.strip_prefix(YOU_ARE_NOW).filter(|n| is_valid_name(n)) {
            self.nick = Some(nick.to_owned());
            return Seen::Renamed;
        }
        if let Some(room) = line.strip_prefix(YOU_JOINED).and_then(joined_room) {
            self.room = Some(room.to_owned());
            return Seen::Joined;
        }
        Seen::Other
    }
    // ANCHOR_END: observe

    /// The prompt: `NICK@ROOM> `, or `> ` before the welcome.
    pub fn prompt(&self) -> String {
        match (&self.nick, &self.room) {
            (Some(nick), Some(room)) => format!("{nick}@{room}> "),
            _ => "> ".to_owned(),
        }
    }

    /// True when `line`, about to be sent, will be answered with a line that may change the
    /// prompt: `/nick NAME` (unless NAME is exactly our nick: the server then says nothing)
    /// and `/join ROOM`. The terminal waits a moment for that answer before prompting again.
    pub fn awaits_answer(&self, line: &str) -> bool {
        match command::parse(line) {
            Ok(Command::Nick(name)) => self.nick.as_deref() != Some(name),
            Ok(Command::Join(_)) => true,
            _ => false,
        }
    }

    /// Why the connection ended, now that the server has closed it; `goodbye_sent` is true
    /// when we had sent `/quit` or ended our stream.
    pub fn ending(&self, goodbye_sent: bool) -> Ending {
        match self.last_word {
            // `* bye` answers our own `/quit`, even one the person typed by hand.
            Some(Ending::AsAsked) => Ending::AsAsked,
            Some(why) => why,
            None if goodbye_sent => Ending::AsAsked,
            None => Ending::Closed,
        }
    }
}

/// True when `line`, about to be sent, is a `/quit`: the server answers `* bye` and closes.
pub fn is_quit(line: &str) -> bool {
    matches!(command::parse(line), Ok(Command::Quit(_)))
}

/// `ROOM (N members)` → `ROOM`. Only the room is read: the count's wording is the hub's.
fn joined_room(rest: &str) -> Option<&str> {
    let (room, count) = rest.split_once(' ')?;
    (is_valid_name(room) && count.starts_with('(') && count.ends_with(')')).then_some(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcomed(nick: &str) -> Session {
        let mut s = Session::new();
        assert_eq!(
            s.observe(&format!("{WELCOME}{nick}{WELCOME_HINT}")),
            Seen::Welcome
        );
        s
    }

    #[test]
    fn before_the_welcome_there_is_no_nick() {
        let s = Session::new();
        assert_eq!((s.nick(), s.room(), s.answered()), (None, None, false));
        assert_eq!(s.prompt(), "> ");
    }

    #[test]
    fn the_welcome_gives_the_nick_and_the_lobby() {
        let s = welcomed("guest1");
        assert_eq!((s.nick(), s.room()), (Some("guest1"), Some("lobby")));
        assert_eq!(s.prompt(), "guest1@lobby> ");
    }

    #[test]
    fn rename_and_join_follow_the_servers_answers() {
        let mut s = welcomed("guest1");
        assert_eq!(s.observe("* you are now alice"), Seen::Renamed);
        assert_eq!(s.prompt(), "alice@lobby> ");
        assert_eq!(s.observe("* you joined rust (2 members)"), Seen::Joined);
        assert_eq!(s.prompt(), "alice@rust> ");
        assert_eq!(s.observe("* you are now ALICE"), Seen::Renamed);
        assert_eq!(s.observe("* you joined r-2 (1 members)"), Seen::Joined);
        assert_eq!(s.prompt(), "ALICE@r-2> ");
    }

    #[test]
    fn errors_and_other_peoples_notices_change_nothing() {
        let mut s = welcomed("alice");
        let before = s.clone();
        assert_eq!(s.observe("! nick taken: bob"), Seen::Error);
        assert_eq!(s.observe("* bob is now carol"), Seen::Other);
        assert_eq!(s.observe("* carol joined lobby"), Seen::Other);
        assert_eq!(
            s.observe("* carol left lobby (* you are now evil)"),
            Seen::Other
        );
        assert_eq!(s, before);
    }

    #[test]
    fn a_message_that_contains_a_marker_changes_nothing() {
        let mut s = welcomed("alice");
        let before = s.clone();
        for line in [
            "<mallory> * you are now mallory",
            "[mallory] * you are now mallory",
            "<mallory> * you joined evil (1 members)",
            "<mallory> * welcome root (type /help for commands)",
            "<mallory> hi * you are now mallory",
            "* members of lobby: alice, mallory",
        ] {
            assert_eq!(s.observe(line), Seen::Other, "{line:?}");
        }
        assert_eq!(s, before);
    }

    #[test]
    fn malformed_answers_change_nothing() {
        let mut s = welcomed("alice");
        let before = s.clone();
        for line in [
            "* you are now ",
            "* you are now two words",
            "* you joined rust",
            "* you joined rust(1 members)",
            "* you joined bad*room (1 members)",
            "* welcome a b (type /help for commands)",
        ] {
            assert_eq!(s.observe(line), Seen::Other, "{line:?}");
        }
        assert_eq!(s, before);
    }

    #[test]
    fn which_lines_await_an_answer() {
        let s = welcomed("alice");
        assert!(s.awaits_answer("/nick bob"));
        assert!(s.awaits_answer("/nick ALICE")); // a change of case is answered
        assert!(!s.awaits_answer("/nick alice")); // the very same nick is not
        assert!(s.awaits_answer("/join rust"));
        assert!(!s.awaits_answer("/join two words")); // a usage error changes nothing
        assert!(!s.awaits_answer("hello"));
        assert!(!s.awaits_answer("//nick bob"));
        assert!(!s.awaits_answer("/msg bob /nick x"));
        assert!(is_quit("/quit") && is_quit("/quit gone fishing"));
        assert!(!is_quit("//quit") && !is_quit("/quitting") && !is_quit("quit"));
    }

    #[test]
    fn how_the_connection_ended() {
        let s = welcomed("alice");
        assert_eq!(s.ending(false), Ending::Closed);
        assert_eq!(s.ending(true), Ending::AsAsked);

        let mut full = Session::new();
        full.observe("! server full");
        assert_eq!(full.ending(false), Ending::ServerFull);
        assert_eq!(full.ending(true), Ending::ServerFull);

        let mut down = welcomed("alice");
        down.observe("* server shutting down");
        assert_eq!(down.ending(false), Ending::Shutdown);

        let mut bye = welcomed("alice");
        bye.observe("* bye");
        assert_eq!(bye.ending(false), Ending::AsAsked);
        assert_eq!(Ending::AsAsked.exit_code(), 0);
        assert!(Ending::AsAsked.message().is_none());
        for c in [
            Ending::ServerFull,
            Ending::Shutdown,
            Ending::Closed,
            Ending::NoClose,
        ] {
            assert_eq!(c.exit_code(), 1);
            assert!(c.message().is_some());
        }
    }
}
