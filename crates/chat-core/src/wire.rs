//! The fixed words of the protocol's lines, for the code that writes them (the hub) and the
//! code that reads them (`chat-client`, which follows its nick and room from the server's own
//! lines). Nothing here is behaviour: see [`crate::hub`] for when each line is sent.

/// Starts every notice from the server.
pub const NOTICE: &str = "* ";
/// Starts every error, in reply to what the client sent.
pub const ERROR: &str = "! ";
/// Opens and closes the nick of a room message: `<NICK> TEXT`.
pub const ROOM_MESSAGE: (char, char) = ('<', '>');
/// Opens and closes the nick of a private message: `[NICK] TEXT`.
pub const PRIVATE_MESSAGE: (char, char) = ('[', ']');

/// The first line a client gets: `* welcome NICK (type /help for commands)`.
pub const WELCOME: &str = "* welcome ";
/// What follows the nick in the welcome.
pub const WELCOME_HINT: &str = " (type /help for commands)";
/// The reply to a rename: `* you are now NICK`.
pub const YOU_ARE_NOW: &str = "* you are now ";
/// The reply to a join: `* you joined ROOM (N members)`.
pub const YOU_JOINED: &str = "* you joined ";
/// The reply to `/quit`.
pub const BYE: &str = "* bye";
/// What a connection beyond `--max-clients` is told, without its `\n`.
pub const SERVER_FULL: &str = "! server full";
/// What every client is told when the server stops, without its `\n`.
pub const SHUTTING_DOWN: &str = "* server shutting down";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_with_newlines_agree() {
        assert_eq!(
            crate::SERVER_FULL_LINE,
            format!("{SERVER_FULL}\n").as_bytes()
        );
        assert_eq!(
            crate::SHUTDOWN_LINE,
            format!("{SHUTTING_DOWN}\n").as_bytes()
        );
        assert!(WELCOME.starts_with(NOTICE) && YOU_ARE_NOW.starts_with(NOTICE));
        assert!(SERVER_FULL.starts_with(ERROR));
    }
}
