//! Command parsing: one line in, one [`Command`] out.
//!
//! A line that does not start with `/` is a message to the room; `//` escapes a leading slash.
//! Everything else is a command and its arguments separated by single spaces. Parsing only
//! looks at the shape of the line; whether a nick is free or a user exists is the hub's job.

/// What a client asked for with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// A message to the sender's room (`TEXT`, or `//TEXT` meaning `/TEXT`).
    Say(&'a str),
    /// `/nick NAME`: change nick.
    Nick(&'a str),
    /// `/join ROOM`: move to another room.
    Join(&'a str),
    /// `/msg NICK TEXT`: a private message.
    Msg {
        /// The nick to deliver to.
        to: &'a str,
        /// The rest of the line.
        text: &'a str,
    },
    /// `/who`: the members of the sender's room.
    Who,
    /// `/rooms`: the rooms and their sizes.
    Rooms,
    /// `/help`: the list of commands.
    Help,
    /// `/quit [REASON]`: leave, with an optional reason shown to the room.
    Quit(Option<&'a str>),
}

/// A line that starts with `/` but is not a well-formed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError<'a> {
    /// `/CMD` is not a command we know; holds `CMD`.
    Unknown(&'a str),
    /// A known command with the wrong arguments; holds its usage, e.g. `/nick NAME`.
    Usage(&'static str),
}

impl CommandError<'_> {
    /// The error line sent back to the client, without the trailing `\n`.
    pub fn to_line(&self) -> String {
        match self {
            CommandError::Unknown(cmd) => format!("! unknown command: /{cmd}"),
            CommandError::Usage(usage) => format!("! usage: {usage}"),
        }
    }
}

/// Parses one complete line (as produced by the framer).
// ANCHOR: parse
pub fn parse(line: &str) -> Result<Command<'_>, CommandError<'_>> {
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Command::Say(line));
    };
    if rest.starts_with('/') {
        return Ok(Command::Say(rest)); // `//TEXT` is the message `/TEXT`
    }
    let (name, args) = match rest.split_once(' ') {
        Some((name, args)) => (name, args),
        None => (rest, ""),
    };
    match name {
        "nick" => one_word(args)
            .map(Command::Nick)
            .ok_or(CommandError::Usage("/nick NAME")),
        "join" => one_word(args)
            .map(Command::Join)
            .ok_or(CommandError::Usage("/join ROOM")),
        "msg" => match args.split_once(' ') {
            Some((to, text)) if !to.is_empty() && !text.is_empty() => Ok(Command::Msg { to, text }),
            _ => Err(CommandError::Usage("/msg NICK TEXT")),
        },
        "who" => no_args(args, Command::Who, "/who"),
        "rooms" => no_args(args, Command::Rooms, "/rooms"),
        "help" => no_args(args, Command::Help, "/help"),
        "quit" => Ok(Command::Quit(Some(args).filter(|r| !r.is_empty()))),
        _ => Err(CommandError::Unknown(name)),
    }
}
// ANCHOR_END: parse

/// `/nick` and `/join` take exactly one word: `/join two words` is a usage error, not `two`.
fn one_word(args: &str) -> Option<&str> {
    Some(args).filter(|a| !a.is_empty() && !a.contains(' '))
}

fn no_args<'a>(
    args: &str,
    command: Command<'a>,
    usage: &'static str,
) -> Result<Command<'a>, CommandError<'a>> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Usage(usage))
    }
}

/// True for a valid nick or room name: 1 to 24 ASCII letters, digits, `_` or `-`.
///
/// This keeps the markers of server lines (`* `, `! `, `<NICK> `, `[NICK] `) unambiguous.
pub fn is_valid_name(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;
    use CommandError::*;

    #[test]
    fn plain_text_and_escape() {
        assert_eq!(parse("hello world"), Ok(Say("hello world")));
        assert_eq!(parse("//me waves"), Ok(Say("/me waves")));
        assert_eq!(parse("//"), Ok(Say("/")));
    }

    #[test]
    fn commands_with_one_word() {
        assert_eq!(parse("/nick alice"), Ok(Nick("alice")));
        assert_eq!(parse("/join rust"), Ok(Join("rust")));
        assert_eq!(parse("/nick"), Err(Usage("/nick NAME")));
        assert_eq!(parse("/nick "), Err(Usage("/nick NAME")));
        assert_eq!(parse("/nick  alice"), Err(Usage("/nick NAME")));
        assert_eq!(parse("/join two words"), Err(Usage("/join ROOM")));
    }

    #[test]
    fn msg_takes_the_rest_of_the_line() {
        assert_eq!(
            parse("/msg bob hi there  you"),
            Ok(Msg {
                to: "bob",
                text: "hi there  you"
            })
        );
        assert_eq!(parse("/msg bob"), Err(Usage("/msg NICK TEXT")));
        assert_eq!(parse("/msg bob "), Err(Usage("/msg NICK TEXT")));
        assert_eq!(parse("/msg"), Err(Usage("/msg NICK TEXT")));
    }

    #[test]
    fn commands_without_arguments() {
        assert_eq!(parse("/who"), Ok(Who));
        assert_eq!(parse("/rooms"), Ok(Rooms));
        assert_eq!(parse("/help"), Ok(Help));
        assert_eq!(parse("/who me"), Err(Usage("/who")));
    }

    #[test]
    fn quit_with_and_without_reason() {
        assert_eq!(parse("/quit"), Ok(Quit(None)));
        assert_eq!(parse("/quit "), Ok(Quit(None)));
        assert_eq!(parse("/quit gone fishing"), Ok(Quit(Some("gone fishing"))));
    }

    #[test]
    fn unknown_commands() {
        assert_eq!(parse("/frobnicate now"), Err(Unknown("frobnicate")));
        assert_eq!(parse("/"), Err(Unknown("")));
        assert_eq!(parse("/NICK bob"), Err(Unknown("NICK")));
        assert_eq!(
            Unknown("frobnicate").to_line(),
            "! unknown command: /frobnicate"
        );
        assert_eq!(Usage("/who").to_line(), "! usage: /who");
    }

    #[test]
    fn names() {
        assert!(is_valid_name("alice"));
        assert!(is_valid_name("A_b-9"));
        assert!(is_valid_name(&"x".repeat(24)));
        assert!(!is_valid_name(&"x".repeat(25)));
        assert!(!is_valid_name(""));
        for bad in ["a b", "<a>", "[a]", "*a", "!a", "é"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
