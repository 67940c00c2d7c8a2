//! The hub: clients, nicks and rooms.
//!
//! The hub is the chat server with the networking taken out. It is told three things — a
//! client connected, a client sent a line, a client went away — and answers each with a list
//! of [`Action`]s: send this line to that client, close that client. It never waits and never
//! fails; a stage decides how the bytes actually travel.
//!
//! A line for a room is built once and shared: every recipient gets a clone of the same
//! [`Bytes`] (a reference count bump), never a copy of the text.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::command::{self, Command, CommandError};
use crate::framing::Frame;
use crate::outbox::CHUNK_COST;
use crate::wire::{BYE, WELCOME, WELCOME_HINT, YOU_ARE_NOW, YOU_JOINED};

/// Identifies one connection for its whole life. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the hub asks the stage to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue this line (it ends in `\n`) for this client.
    Send(ClientId, Bytes),
    /// The hub is done with this client (it sent `/quit`, or the server is shutting down):
    /// send what was queued for it before this action, then close the connection.
    Close(ClientId),
    /// A nick (lowercased) was freed by the actions before this one. It stays taken until
    /// [`Hub::release`] is called, which the stage does once those actions are delivered: so
    /// a new `guest2` is never announced before the old one's departure (see
    /// [`Hub::release`]).
    Release(String),
}

/// A fast hasher for [`ClientId`] keys (a multiply, as in `rustc-hash`): the default SipHash
/// protects against attackers choosing keys, but clients do not choose their ids.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A map keyed by [`ClientId`].
pub type IdMap<V> = HashMap<ClientId, V, BuildHasherDefault<IdHasher>>;
/// A set of [`ClientId`]s.
pub type IdSet = HashSet<ClientId, BuildHasherDefault<IdHasher>>;

/// The room every client starts in.
pub const LOBBY: &str = "lobby";

/// At most this many names in a `/who` or `/rooms` reply, then `and N more`.
const LIST_LIMIT: usize = 100;

/// The longest name: nicks and rooms are 1 to 24 characters.
pub const NAME_MAX: usize = 24;

/// Digits of the largest count a reply can show (`u64::MAX` has 20).
const MAX_DIGITS: usize = 20;

/// The framer's longer error line (`! line too long (max 1024 bytes)`); `! invalid utf-8` is
/// shorter.
const TOO_LONG_LINE: &str = "! line too long (max 1024 bytes)";

/// What one queued line of `text` bytes costs in an outbox: its `\n` and its handle too.
const fn cost(text: usize) -> usize {
    text + 1 + CHUNK_COST
}

/// The most one reply can cost its recipient: `/rooms`, with 100 rooms of 24-letter names and
/// 20-digit counts and a 20-digit tail, is the longest (`/who` is at most about 2.7 KB).
/// `--outbox-bytes` may not be smaller than [`crate::MIN_OUTBOX_BYTES`], which holds it.
pub const LONGEST_REPLY: usize = cost(
    "* rooms: ".len()
        + LIST_LIMIT * (NAME_MAX + " ()".len() + MAX_DIGITS)
        + (LIST_LIMIT - 1) * ", ".len()
        + " and  more".len()
        + MAX_DIGITS,
);

/// What `/help` answers, one line each.
const HELP: &[&str] = &[
    "* commands:",
    "*   TEXT            say TEXT to your room (start it with // to send a leading /)",
    "*   /nick NAME      change your nick (1-24 letters, digits, _ or -)",
    "*   /join ROOM      leave your room and enter ROOM (created if new)",
    "*   /msg NICK TEXT  send TEXT to NICK alone",
    "*   /who            list the members of your room",
    "*   /rooms          list the rooms",
    "*   /help           this list",
    "*   /quit [REASON]  leave",
];

/// One connected client, as the hub knows it: 32 bytes, and the nick's own allocation.
#[derive(Debug)]
pub(crate) struct Member {
    /// The nick as the client chose it (case kept). A `Box<str>`, not a `String`: a nick
    /// never grows in place, so the capacity word would be 8 bytes per member for nothing.
    nick: Box<str>,
    /// The room the client is in: the room's own name ([`Room::name`]), shared by all its
    /// members. A `String` per member was a copy of the same few letters, and an allocation
    /// of 32 bytes, in every one of ten thousand members.
    room: Arc<str>,
}

/// One room: its name, shared with its members, and who is in it. A room exists while it has
/// members.
#[derive(Debug)]
pub(crate) struct Room {
    /// The name every member's [`Member::room`] points to.
    name: Arc<str>,
    /// Who is in it.
    members: IdSet,
}

impl Room {
    /// An empty room called `name`.
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            members: IdSet::default(),
        }
    }
}

/// A room can be walked like its set of members.
impl<'a> IntoIterator for &'a Room {
    type Item = &'a ClientId;
    type IntoIter = std::collections::hash_set::Iter<'a, ClientId>;

    fn into_iter(self) -> Self::IntoIter {
        self.members.iter()
    }
}

/// All clients, nicks and rooms of one server.
#[derive(Debug)]
pub struct Hub {
    /// The id the next client will get.
    next_id: u64,
    /// Every connected client.
    pub(crate) members: IdMap<Member>,
    /// Lowercased nick → client, so that nicks are unique case-insensitively.
    pub(crate) nicks: HashMap<String, ClientId>,
    /// Lowercased nicks freed but not yet released (see [`Action::Release`]): still taken.
    held: HashSet<String>,
    /// Room name → the room (its shared name and its members). A room exists while it has
    /// members.
    pub(crate) rooms: HashMap<String, Room>,
    /// No `guestN` with N below this is free; where the search for a guest nick starts.
    guest_floor: u64,
    /// In a cluster: the rest of the cluster, as this node knows it, and what to tell the
    /// broker (see [`crate::cluster`]). `None` for a server on its own.
    pub(crate) cluster: Option<Box<crate::cluster::Node>>,
}

/// What [`Hub::try_handle`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Handled: its actions are out.
    Done,
    /// Not handled yet: it needs a nick claimed on the broker first. Nothing changed; offer
    /// it again once [`Hub::claimed`] was told the answer.
    Claim,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self {
            next_id: 0,
            members: IdMap::default(),
            nicks: HashMap::new(),
            held: HashSet::new(),
            rooms: HashMap::new(),
            guest_floor: 1,
            cluster: None,
        }
    }

    /// An empty hub that is one node of a cluster (see [`crate::cluster`]).
    pub fn clustered(node: crate::cluster::NodeId) -> Self {
        Self {
            cluster: Some(Box::new(crate::cluster::Node::new(node))),
            ..Self::new()
        }
    }

    /// How many clients are connected.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The nick of a connected client.
    pub fn nick(&self, id: ClientId) -> Option<&str> {
        self.members.get(&id).map(|m| &*m.nick)
    }

    /// The room of a connected client.
    pub fn room(&self, id: ClientId) -> Option<&str> {
        self.members.get(&id).map(|m| &*m.room)
    }

    /// A new client: it gets the first free `guestN` nick and enters the lobby.
    // ANCHOR: connect
    pub fn connect(&mut self, out: &mut Vec<Action>) -> ClientId {
        let id = self.new_id();
        let nick = self.free_guest_nick();
        self.welcome(id, nick, out);
        id
    }
    // ANCHOR_END: connect

    /// The id of the next client. Ids are never reused.
    pub(crate) fn new_id(&mut self) -> ClientId {
        let id = ClientId(self.next_id);
        self.next_id += 1;
        id
    }

    /// `id` is a member now, called `nick`, in the lobby: welcomed, and the lobby told.
    pub(crate) fn welcome(&mut self, id: ClientId, nick: String, out: &mut Vec<Action>) {
        self.nicks.insert(nick.to_ascii_lowercase(), id);
        out.push(Action::Send(
            id,
            line(format_args!("{WELCOME}{nick}{WELCOME_HINT}")),
        ));
        let joined = line(format_args!("* {nick} joined {LOBBY}"));
        self.broadcast(LOBBY, Some(id), &joined, out);
        let lobby = self.room_mut(LOBBY);
        lobby.members.insert(id);
        let room = Arc::clone(&lobby.name);
        self.members.insert(
            id,
            Member {
                nick: nick.into_boxed_str(),
                room,
            },
        );
    }

    /// The room called `name`, made (empty) if there is none.
    fn room_mut(&mut self, name: &str) -> &mut Room {
        // `entry` would need an owned key, an allocation, even when the room exists.
        if !self.rooms.contains_key(name) {
            self.rooms.insert(name.to_owned(), Room::new(name));
        }
        self.rooms
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// One line to every local member of `room`.
    pub(crate) fn notice(&self, room: &str, text: fmt::Arguments<'_>, out: &mut Vec<Action>) {
        let msg = line(text);
        self.broadcast(room, None, &msg, out);
    }

    /// Every local member's nick and room.
    pub(crate) fn members_iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.values().map(|m| (&*m.nick, &*m.room))
    }

    /// One frame from the framer: a line to act on, or a framing error to report.
    pub fn handle(&mut self, id: ClientId, frame: Frame<'_>, out: &mut Vec<Action>) {
        let _ = self.try_handle(id, frame, out);
    }

    /// [`Hub::handle`], saying whether the frame had to wait for a claim (only in a cluster: a
    /// new nick is claimed on the broker before it is used).
    pub fn try_handle(&mut self, id: ClientId, frame: Frame<'_>, out: &mut Vec<Action>) -> Handled {
        match frame {
            Frame::Line(text) => return self.handle_line(id, text, out),
            Frame::TooLong => self.reply(id, format_args!("{TOO_LONG_LINE}"), out),
            Frame::InvalidUtf8 => self.reply(id, format_args!("! invalid utf-8"), out),
        }
        Handled::Done
    }

    /// Calls `visit(client, bytes)` for every client that handling `frame` from `id` could send
    /// a line to, with the most that could cost it (text and [`CHUNK_COST`] per line, as an
    /// [`crate::Outbox`] counts it). Changes nothing: the server asks this *before* handling a
    /// frame, and handles it only when everybody visited has that much room (flow control,
    /// see [`crate::flow`]). A client may be visited more than once; its costs add up.
    ///
    /// The bounds are per command, from the lengths in the line: a room message costs each
    /// member exactly its own length plus the nick and marker, `/who` and `/rooms` at most
    /// [`LONGEST_REPLY`]. A test checks them against what [`Hub::handle`] really sends.
    // ANCHOR: reach
    pub fn reach(&self, id: ClientId, frame: &Frame<'_>, mut visit: impl FnMut(ClientId, usize)) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let text = match frame {
            Frame::Line(text) => *text,
            Frame::TooLong | Frame::InvalidUtf8 => return visit(id, cost(TOO_LONG_LINE.len())),
        };
        let nick = member.nick.len();
        match command::parse(text) {
            Ok(Command::Say(said)) => self.visit_room(
                &member.room,
                Some(id),
                cost(nick + 3 + said.len()),
                &mut visit,
            ),
            Ok(Command::Nick(name)) => {
                visit(id, cost(16 + name.len()));
                self.visit_room(
                    &member.room,
                    Some(id),
                    cost(10 + nick + name.len()),
                    &mut visit,
                );
            }
            Ok(Command::Join(room)) => {
                visit(id, cost(24 + room.len() + MAX_DIGITS));
                self.visit_room(
                    &member.room,
                    Some(id),
                    cost(8 + nick + member.room.len()),
                    &mut visit,
                );
                self.visit_room(room, Some(id), cost(10 + nick + room.len()), &mut visit);
            }
            Ok(Command::Msg { to, text }) => match self.nicks.get(&to.to_ascii_lowercase()) {
                Some(&target) => visit(target, cost(nick + 3 + text.len())),
                None => visit(id, cost(16 + to.len())),
            },
            Ok(Command::Who | Command::Rooms) => visit(id, LONGEST_REPLY),
            Ok(Command::Help) => visit(id, HELP.iter().map(|l| cost(l.len())).sum()),
            Ok(Command::Quit(reason)) => {
                visit(id, cost(5));
                let reason = reason.map_or(0, |r| r.len() + 3);
                let left = cost(8 + nick + member.room.len() + reason);
                self.visit_room(&member.room, Some(id), left, &mut visit);
            }
            Err(CommandError::Unknown(cmd)) => visit(id, cost(20 + cmd.len())),
            Err(CommandError::Usage(usage)) => visit(id, cost(9 + usage.len())),
        }
    }
    // ANCHOR_END: reach

    /// [`Hub::reach`] for every member of `room` but `except`.
    fn visit_room(
        &self,
        room: &str,
        except: Option<ClientId>,
        bytes: usize,
        visit: &mut impl FnMut(ClientId, usize),
    ) {
        for &member in self.rooms.get(room).into_iter().flatten() {
            if Some(member) != except {
                visit(member, bytes);
            }
        }
    }

    /// One complete line from a client. Lines from unknown (already gone) clients are ignored.
    // ANCHOR: handle_line
    pub fn handle_line(&mut self, id: ClientId, text: &str, out: &mut Vec<Action>) -> Handled {
        let Some(member) = self.members.get(&id) else {
            return Handled::Done;
        };
        match command::parse(text) {
            Ok(Command::Say(said)) => {
                let msg = line(format_args!("<{}> {said}", member.nick));
                self.broadcast(&member.room, Some(id), &msg, out);
                if let Some(cluster) = &mut self.cluster {
                    cluster.say(&member.room, &member.nick, said);
                }
            }
            Ok(Command::Nick(name)) => return self.rename(id, name, out),
            Ok(Command::Join(room)) => self.join(id, room, out),
            Ok(Command::Msg { to, text }) => self.private(id, to, text, out),
            Ok(Command::Who) => self.who(id, out),
            Ok(Command::Rooms) => self.list_rooms(id, out),
            Ok(Command::Help) => {
                for help in HELP {
                    self.reply(id, format_args!("{help}"), out);
                }
            }
            Ok(Command::Quit(reason)) => {
                self.reply(id, format_args!("{BYE}"), out);
                self.disconnect(id, reason, out);
                out.push(Action::Close(id));
            }
            Err(err @ (CommandError::Unknown(_) | CommandError::Usage(_))) => {
                self.reply(id, format_args!("{}", err.to_line()), out);
            }
        }
        Handled::Done
    }
    // ANCHOR_END: handle_line

    /// A client is gone (it closed, failed, quit, or the stage dropped it). Its room hears
    /// `* NICK left ROOM`, with `(REASON)` when one is given. Unknown ids are ignored, so a
    /// stage may call this more than once.
    pub fn disconnect(&mut self, id: ClientId, reason: Option<&str>, out: &mut Vec<Action>) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        self.leave_room(id, &member.room);
        let left = match reason {
            Some(reason) => line(format_args!(
                "* {} left {} ({reason})",
                member.nick, member.room
            )),
            None => line(format_args!("* {} left {}", member.nick, member.room)),
        };
        self.broadcast(&member.room, None, &left, out);
        if let Some(cluster) = &mut self.cluster {
            let last_here = !self.rooms.contains_key(&*member.room);
            cluster.leave(&member.nick, &member.room, reason, last_here);
        }
        self.hold_nick(&member.nick, out); // after the notice: see `Action::Release`
    }

    /// The server is stopping: every client is told so and closed; the hub is empty after.
    pub fn shutdown(&mut self, out: &mut Vec<Action>) {
        let bye = Bytes::from_static(crate::SHUTDOWN_LINE);
        let mut ids: Vec<ClientId> = self.members.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            out.push(Action::Send(id, bye.clone()));
            out.push(Action::Close(id));
            if let (Some(cluster), Some(member)) = (&mut self.cluster, self.members.get(&id)) {
                // The other nodes see this node's members leave; nothing is told locally.
                cluster.leave(&member.nick, &member.room, None, false);
                cluster.release(&member.nick);
            }
        }
        self.members.clear();
        self.nicks.clear();
        self.held.clear();
        self.rooms.clear();
        self.guest_floor = 1;
    }

    fn rename(&mut self, id: ClientId, name: &str, out: &mut Vec<Action>) -> Handled {
        if !command::is_valid_name(name) {
            self.reply(id, format_args!("! invalid nick: {name}"), out);
            return Handled::Done;
        }
        let key = name.to_ascii_lowercase();
        let Some(member) = self.members.get(&id) else {
            return Handled::Done;
        };
        let case_only = member.nick.eq_ignore_ascii_case(name);
        let taken_here =
            self.nicks.get(&key).is_some_and(|&owner| owner != id) || self.held.contains(&key);
        let taken = taken_here
            || match &mut self.cluster {
                // In a cluster the broker decides, once: a claim first, then the rename.
                Some(cluster) if !case_only => match cluster.grant(id, &key) {
                    crate::cluster::Grant::Granted => false,
                    crate::cluster::Grant::Refused => true,
                    crate::cluster::Grant::Ask => {
                        if cluster.mirror.get(name).is_some() {
                            true // held elsewhere, as far as we know: no need to ask
                        } else {
                            cluster.claim(id, name);
                            return Handled::Claim;
                        }
                    }
                },
                _ => false,
            };
        if taken {
            self.reply(id, format_args!("! nick taken: {name}"), out);
            return Handled::Done;
        }
        let Some(member) = self.members.get_mut(&id) else {
            return Handled::Done;
        };
        let old = std::mem::replace(&mut member.nick, name.into());
        let room = Arc::clone(&member.room);
        if !case_only {
            self.nicks.remove(&old.to_ascii_lowercase());
        }
        self.nicks.insert(key, id);
        self.reply(id, format_args!("{YOU_ARE_NOW}{name}"), out);
        if *old != *name {
            let notice = line(format_args!("* {old} is now {name}"));
            self.broadcast(&room, Some(id), &notice, out);
            if let Some(cluster) = &mut self.cluster {
                cluster.rename(&old, name, &room);
            }
        }
        if !case_only {
            self.hold_nick(&old, out); // after the notice: see `Action::Release`
        }
        Handled::Done
    }

    fn join(&mut self, id: ClientId, room: &str, out: &mut Vec<Action>) {
        if !command::is_valid_name(room) {
            return self.reply(id, format_args!("! invalid room: {room}"), out);
        }
        match self.members.get(&id) {
            None => return,
            Some(member) if &*member.room == room => {
                return self.reply(id, format_args!("! already in {room}"), out);
            }
            Some(_) => {}
        }
        let first_here = !self.rooms.contains_key(room);
        // The room is made now, empty, for its name to share; the joiner enters it below.
        let name = Arc::clone(&self.room_mut(room).name);
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut member.room, name);
        let nick = member.nick.clone();
        self.leave_room(id, &old);
        let left = line(format_args!("* {nick} left {old}"));
        self.broadcast(&old, None, &left, out);
        let joined = line(format_args!("* {nick} joined {room}"));
        self.broadcast(room, None, &joined, out);
        let members = &mut self.room_mut(room).members;
        members.insert(id);
        let mut count = members.len();
        if let Some(cluster) = &mut self.cluster {
            let last_there = !self.rooms.contains_key(&*old);
            cluster.moved(&nick, &old, room, last_there, first_here);
            count += cluster.mirror.count(room);
        }
        self.reply(
            id,
            format_args!("{YOU_JOINED}{room} ({count} members)"),
            out,
        );
    }

    fn private(&mut self, id: ClientId, to: &str, text: &str, out: &mut Vec<Action>) {
        let target = self.nicks.get(&to.to_ascii_lowercase()).copied();
        let Some(sender) = self.members.get(&id) else {
            return;
        };
        if let Some(target) = target {
            out.push(Action::Send(
                target,
                line(format_args!("[{}] {text}", sender.nick)),
            ));
            return;
        }
        if let Some(cluster) = &mut self.cluster {
            if let Some(remote) = cluster.mirror.get(to).cloned() {
                cluster.direct(remote.node, &sender.nick, &remote.nick, text);
                return;
            }
        }
        self.reply(id, format_args!("! no such user: {to}"), out);
    }

    fn who(&mut self, id: ClientId, out: &mut Vec<Action>) {
        let Some(room) = self.room(id) else { return };
        let mut nicks: Vec<&str> = self.rooms[room]
            .members
            .iter()
            .filter_map(|m| self.nick(*m))
            .collect();
        if let Some(cluster) = &self.cluster {
            nicks.extend(cluster.mirror.nicks_in(room));
        }
        nicks.sort_unstable_by_key(|n| n.to_ascii_lowercase());
        let text = capped_list(&format!("* members of {room}: "), &nicks);
        self.reply(id, format_args!("{text}"), out);
    }

    fn list_rooms(&mut self, id: ClientId, out: &mut Vec<Action>) {
        let mut counts: HashMap<&str, usize> = self
            .rooms
            .iter()
            .map(|(n, r)| (n.as_str(), r.members.len()))
            .collect();
        if let Some(cluster) = &self.cluster {
            for (room, n) in cluster.mirror.rooms() {
                *counts.entry(room).or_default() += n;
            }
        }
        let mut rooms: Vec<(&str, usize)> = counts.into_iter().collect();
        rooms.sort_unstable();
        let rooms: Vec<String> = rooms
            .iter()
            .map(|(name, count)| format!("{name} ({count})"))
            .collect();
        let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
        let text = capped_list("* rooms: ", &rooms);
        self.reply(id, format_args!("{text}"), out);
    }

    /// Sends one line to one client.
    fn reply(&self, id: ClientId, text: fmt::Arguments<'_>, out: &mut Vec<Action>) {
        out.push(Action::Send(id, line(text)));
    }

    /// Sends one shared line to every member of `room` except `except`.
    // ANCHOR: broadcast
    fn broadcast(&self, room: &str, except: Option<ClientId>, msg: &Bytes, out: &mut Vec<Action>) {
        let Some(members) = self.rooms.get(room).map(|r| &r.members) else {
            return;
        };
        out.reserve(members.len());
        for &member in members {
            if Some(member) != except {
                out.push(Action::Send(member, msg.clone())); // a refcount, not a copy
            }
        }
    }
    // ANCHOR_END: broadcast

    fn leave_room(&mut self, id: ClientId, room: &str) {
        if let Some(members) = self.rooms.get_mut(room).map(|r| &mut r.members) {
            members.remove(&id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// A nick nobody holds any more stays taken until [`Hub::release`]: the actions that say it
    /// left must be delivered before anybody else can be announced under it.
    fn hold_nick(&mut self, nick: &str, out: &mut Vec<Action>) {
        let key = nick.to_ascii_lowercase();
        self.nicks.remove(&key);
        if let Some(cluster) = &mut self.cluster {
            cluster.release(nick); // after what was published about it: see `crate::cluster`
        }
        self.held.insert(key.clone());
        out.push(Action::Release(key));
    }

    /// Frees a nick held since an [`Action::Release`]. A stage calls it once every action
    /// before that one has been delivered: queued in the recipients' outboxes (or in any
    /// per-recipient queue filled in the hub's order, as the blocking session's is), or written
    /// to their sockets. Without the hold, a blocking stage whose thread announces a departure
    /// after unlocking could let a new client take the nick and be announced first: a room
    /// would see `* guest2 joined lobby` before `* guest2 left lobby`.
    pub fn release(&mut self, key: &str) {
        if !self.held.remove(key) {
            return;
        }
        if let Some(n) = key
            .strip_prefix("guest")
            .and_then(|n| n.parse::<u64>().ok())
        {
            // `guest0` is a nick like any other: guest numbers count from 1.
            if n >= 1 && key == format!("guest{n}") {
                self.guest_floor = self.guest_floor.min(n);
            }
        }
    }

    fn free_guest_nick(&mut self) -> String {
        loop {
            let nick = format!("guest{}", self.guest_floor);
            self.guest_floor += 1;
            if !self.nicks.contains_key(&nick) && !self.held.contains(&nick) {
                return nick;
            }
        }
    }
}

/// `PREFIX a, b, c` with at most [`LIST_LIMIT`] items, then ` and N more`.
fn capped_list(prefix: &str, items: &[&str]) -> String {
    let mut text = String::from(prefix);
    for (i, item) in items.iter().take(LIST_LIMIT).enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(item);
    }
    if items.len() > LIST_LIMIT {
        let _ = write!(text, " and {} more", items.len() - LIST_LIMIT);
    }
    text
}

/// Formats one protocol line, with its `\n`, into a shareable buffer.
pub(crate) fn line(args: fmt::Arguments<'_>) -> Bytes {
    let mut text = String::with_capacity(64);
    let _ = text.write_fmt(args);
    text.push('\n');
    Bytes::from(text)
}
