//! The messages nodes send each other through the broker, and their encoding.

use std::fmt;

use bytes::Bytes;

use super::NodeId;

/// One message between nodes, as published on a [`Channel`].
///
/// On the wire it is one line of fields separated by tabs, the kind first and the sender's node
/// second; a field that may hold any text (a message, a reason) comes last, so it may contain
/// tabs. Nicks and rooms never contain tabs or spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The node is alive (every [`HEARTBEAT`]).
    Alive { node: NodeId },
    /// `nick`, a member of `node`, is in `room`: it arrived, or its node tells the cluster
    /// again after the broker came back.
    Enter {
        node: NodeId,
        nick: String,
        room: String,
    },
    /// `nick` moved from room `from` to room `to`.
    Move {
        node: NodeId,
        nick: String,
        from: String,
        to: String,
    },
    /// `old` is now called `new`; it is in `room`.
    Rename {
        node: NodeId,
        old: String,
        new: String,
        room: String,
    },
    /// `nick` left `room`: it quit, its connection ended or was cut (then with a reason).
    Leave {
        node: NodeId,
        nick: String,
        room: String,
        reason: Option<String>,
    },
    /// `nick` said `text` to `room`.
    Say {
        node: NodeId,
        room: String,
        nick: String,
        text: String,
    },
    /// `from` sent `text` to `to`, a member of the receiving node.
    Direct {
        node: NodeId,
        from: String,
        to: String,
        text: String,
    },
}

/// A broker message that does not parse (a bug, or another program on the same broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage;

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed cluster message")
    }
}

impl std::error::Error for BadMessage {}

impl Message {
    /// The node that sent it.
    pub fn node(&self) -> NodeId {
        match self {
            Message::Alive { node }
            | Message::Enter { node, .. }
            | Message::Move { node, .. }
            | Message::Rename { node, .. }
            | Message::Leave { node, .. }
            | Message::Say { node, .. }
            | Message::Direct { node, .. } => *node,
        }
    }

    /// The bytes to publish.
    pub fn encode(&self) -> Bytes {
        let line = match self {
            Message::Alive { node } => format!("alive\t{node}"),
            Message::Enter { node, nick, room } => format!("enter\t{node}\t{nick}\t{room}"),
            Message::Move {
                node,
                nick,
                from,
                to,
            } => format!("move\t{node}\t{nick}\t{from}\t{to}"),
            Message::Rename {
                node,
                old,
                new,
                room,
            } => {
                format!("rename\t{node}\t{old}\t{new}\t{room}")
            }
            Message::Leave {
                node,
                nick,
                room,
                reason: None,
            } => {
                format!("leave\t{node}\t{nick}\t{room}")
            }
            Message::Leave {
                node,
                nick,
                room,
                reason: Some(reason),
            } => {
                format!("leave\t{node}\t{nick}\t{room}\t{reason}")
            }
            Message::Say {
                node,
                room,
                nick,
                text,
            } => format!("say\t{node}\t{room}\t{nick}\t{text}"),
            Message::Direct {
                node,
                from,
                to,
                text,
            } => {
                format!("direct\t{node}\t{from}\t{to}\t{text}")
            }
        };
        Bytes::from(line)
    }

    /// Parses what [`Message::encode`] wrote. Names are checked: a message can never put a
    /// marker character into a line the hub sends.
    pub fn decode(bytes: &[u8]) -> Result<Self, BadMessage> {
        let text = std::str::from_utf8(bytes).map_err(|_| BadMessage)?;
        if text.contains('\n') {
            return Err(BadMessage);
        }
        let (kind, rest) = text.split_once('\t').ok_or(BadMessage)?;
        let (node, rest) = match rest.split_once('\t') {
            Some((node, rest)) => (node, rest),
            None => (rest, ""),
        };
        let node = NodeId::parse(node).ok_or(BadMessage)?;
        let name = |s: &str| {
            crate::command::is_valid_name(s)
                .then(|| s.to_owned())
                .ok_or(BadMessage)
        };
        let fields = |n: usize| -> Vec<&str> { rest.splitn(n, '\t').collect() };
        Ok(match kind {
            "alive" if rest.is_empty() => Message::Alive { node },
            "enter" => match fields(2)[..] {
                [nick, room] => Message::Enter {
                    node,
                    nick: name(nick)?,
                    room: name(room)?,
                },
                _ => return Err(BadMessage),
            },
            "move" => match fields(3)[..] {
                [nick, from, to] => Message::Move {
                    node,
                    nick: name(nick)?,
                    from: name(from)?,
                    to: name(to)?,
                },
                _ => return Err(BadMessage),
            },
            "rename" => match fields(3)[..] {
                [old, new, room] => Message::Rename {
                    node,
                    old: name(old)?,
                    new: name(new)?,
                    room: name(room)?,
                },
                _ => return Err(BadMessage),
            },
            "leave" => match fields(3)[..] {
                [nick, room] => Message::Leave {
                    node,
                    nick: name(nick)?,
                    room: name(room)?,
                    reason: None,
                },
                [nick, room, reason] => Message::Leave {
                    node,
                    nick: name(nick)?,
                    room: name(room)?,
                    reason: Some(reason.to_owned()),
                },
                _ => return Err(BadMessage),
            },
            "say" => match fields(3)[..] {
                [room, nick, text] => Message::Say {
                    node,
                    room: name(room)?,
                    nick: name(nick)?,
                    text: text.to_owned(),
                },
                _ => return Err(BadMessage),
            },
            "direct" => match fields(3)[..] {
                [from, to, text] => Message::Direct {
                    node,
                    from: name(from)?,
                    to: name(to)?,
                    text: text.to_owned(),
                },
                _ => return Err(BadMessage),
            },
            _ => return Err(BadMessage),
        })
    }
}
