//! The hub against a small reference model, with proptest.
//!
//! Random clients connect, rename, join, talk, send private messages, ask `/who` and `/rooms`,
//! quit and disconnect. A model written from the specification, in the plainest way (a list of
//! members, a linear search for a free `guestN`), predicts every line every client must
//! receive; the hub's actions must deliver exactly those, per recipient in order. Checked along
//! the way: unique nicks regardless of case, one room per member, no empty room, the first free
//! `guestN`, no echo, exactly once. And [`Hub::reach`] must announce, before each line, every
//! client the line then sends to, with a bound on what it costs each.
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use std::collections::{BTreeMap, HashMap};

use chat_core::outbox::CHUNK_COST;
use chat_core::{Action, ClientId, Frame, Hub};
use proptest::prelude::*;

/// One member, as the model knows it.
#[derive(Debug, Clone)]
struct Member {
    nick: String,
    room: String,
}

/// The specification, executed the slow and obvious way.
#[derive(Debug, Default)]
struct Model {
    members: BTreeMap<u64, Member>,
}

impl Model {
    fn nick_taken(&self, nick: &str, except: Option<u64>) -> bool {
        self.members
            .iter()
            .any(|(id, m)| Some(*id) != except && m.nick.eq_ignore_ascii_case(nick))
    }

    fn first_free_guest(&self) -> String {
        (1..)
            .map(|n| format!("guest{n}"))
            .find(|g| !self.nick_taken(g, None))
            .unwrap()
    }

    fn room_of(&self, room: &str) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.room == room)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Expected lines, per recipient, for one step.
    fn to_room(
        &self,
        room: &str,
        except: Option<u64>,
        line: &str,
        out: &mut HashMap<u64, Vec<String>>,
    ) {
        for id in self.room_of(room) {
            if Some(id) != except {
                out.entry(id).or_default().push(line.to_owned());
            }
        }
    }

    fn leave(&mut self, id: u64, reason: Option<&str>, out: &mut HashMap<u64, Vec<String>>) {
        if let Some(m) = self.members.remove(&id) {
            let line = match reason {
                Some(r) => format!("* {} left {} ({r})", m.nick, m.room),
                None => format!("* {} left {}", m.nick, m.room),
            };
            self.to_room(&m.room, None, &line, out);
        }
    }

    fn valid(name: &str) -> bool {
        (1..=24).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    fn list(prefix: &str, items: &[String]) -> String {
        let shown: Vec<&str> = items.iter().take(100).map(String::as_str).collect();
        let mut text = format!("{prefix}{}", shown.join(", "));
        if items.len() > 100 {
            text.push_str(&format!(" and {} more", items.len() - 100));
        }
        text
    }

    /// One line from `id`; what every client must receive.
    fn line(&mut self, id: u64, text: &str) -> (HashMap<u64, Vec<String>>, bool) {
        let mut out: HashMap<u64, Vec<String>> = HashMap::new();
        let mut closes = false;
        let Some(me) = self.members.get(&id).cloned() else {
            return (out, false);
        };
        let reply = |out: &mut HashMap<u64, Vec<String>>, line: String| {
            out.entry(id).or_default().push(line);
        };
        if let Some(said) = text
            .strip_prefix("//")
            .map(|t| format!("/{t}"))
            .or_else(|| (!text.starts_with('/')).then(|| text.to_owned()))
        {
            self.to_room(
                &me.room,
                Some(id),
                &format!("<{}> {said}", me.nick),
                &mut out,
            );
            return (out, false);
        }
        let rest = &text[1..];
        let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
        match cmd {
            "nick" if !args.is_empty() && !args.contains(' ') => {
                if !Self::valid(args) {
                    reply(&mut out, format!("! invalid nick: {args}"));
                } else if self.nick_taken(args, Some(id)) {
                    reply(&mut out, format!("! nick taken: {args}"));
                } else {
                    reply(&mut out, format!("* you are now {args}"));
                    if me.nick != args {
                        self.to_room(
                            &me.room,
                            Some(id),
                            &format!("* {} is now {args}", me.nick),
                            &mut out,
                        );
                    }
                    self.members.get_mut(&id).unwrap().nick = args.to_owned();
                }
            }
            "nick" => reply(&mut out, "! usage: /nick NAME".into()),
            "join" if !args.is_empty() && !args.contains(' ') => {
                if !Self::valid(args) {
                    reply(&mut out, format!("! invalid room: {args}"));
                } else if me.room == args {
                    reply(&mut out, format!("! already in {args}"));
                } else {
                    self.to_room(
                        &me.room,
                        Some(id),
                        &format!("* {} left {}", me.nick, me.room),
                        &mut out,
                    );
                    self.to_room(
                        args,
                        None,
                        &format!("* {} joined {args}", me.nick),
                        &mut out,
                    );
                    self.members.get_mut(&id).unwrap().room = args.to_owned();
                    let n = self.room_of(args).len();
                    reply(&mut out, format!("* you joined {args} ({n} members)"));
                }
            }
            "join" => reply(&mut out, "! usage: /join ROOM".into()),
            "msg" => match args.split_once(' ') {
                Some((to, said)) if !to.is_empty() && !said.is_empty() => {
                    match self
                        .members
                        .iter()
                        .find(|(_, m)| m.nick.eq_ignore_ascii_case(to))
                    {
                        Some((&target, _)) => out
                            .entry(target)
                            .or_default()
                            .push(format!("[{}] {said}", me.nick)),
                        None => reply(&mut out, format!("! no such user: {to}")),
                    }
                }
                _ => reply(&mut out, "! usage: /msg NICK TEXT".into()),
            },
            "who" if args.is_empty() => {
                let mut nicks: Vec<String> = self
                    .room_of(&me.room)
                    .iter()
                    .map(|m| self.members[m].nick.clone())
                    .collect();
                nicks.sort_by_key(|n| n.to_ascii_lowercase());
                reply(
                    &mut out,
                    Self::list(&format!("* members of {}: ", me.room), &nicks),
                );
            }
            "rooms" if args.is_empty() => {
                let mut rooms: BTreeMap<&str, usize> = BTreeMap::new();
                for m in self.members.values() {
                    *rooms.entry(&m.room).or_default() += 1;
                }
                let items: Vec<String> = rooms.iter().map(|(r, n)| format!("{r} ({n})")).collect();
                reply(&mut out, Self::list("* rooms: ", &items));
            }
            "help" if args.is_empty() => {
                out.entry(id).or_default().push("* commands:".into()); // the rest: checked below
            }
            "who" | "rooms" | "help" => reply(&mut out, format!("! usage: /{cmd}")),
            "quit" => {
                reply(&mut out, "* bye".into());
                let reason = Some(args).filter(|a| !a.is_empty());
                self.leave(id, reason, &mut out);
                closes = true;
            }
            _ => reply(&mut out, format!("! unknown command: /{cmd}")),
        }
        (out, closes)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Line(usize, String),
    Disconnect(usize),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "alice", "Alice", "ALICE", "bob", "guest1", "guest2", "Guest3", "guest02", "rust",
            "Rust", "lobby", "x",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9_-]{1,26}",
        prop::sample::select(vec!["bad!name", "two words", "", "é"]).prop_map(str::to_owned),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{1,12}",
        (1usize..1000).prop_map(|n| "t".repeat(n)),
        Just("/".to_owned()),
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text().prop_filter("not a command", |t| !t.starts_with('/')),
        1 => text().prop_map(|t| format!("//{t}")),
        2 => name().prop_map(|n| format!("/nick {n}")),
        2 => name().prop_map(|n| format!("/join {n}")),
        2 => (name(), text()).prop_map(|(n, t)| format!("/msg {n} {t}")),
        1 => Just("/who".to_owned()),
        1 => Just("/rooms".to_owned()),
        1 => Just("/help".to_owned()),
        1 => prop::sample::select(vec!["/who x", "/msg", "/frob", "/nick", "/quit", "/quit bye now"]).prop_map(str::to_owned),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Connect),
        8 => (0usize..12, line()).prop_map(|(c, l)| Op::Line(c, l)),
        1 => (0usize..12).prop_map(Op::Disconnect),
    ]
}

/// What the hub's actions deliver: lines per recipient, closes, in order. Held nicks are
/// released once the actions before them are delivered, as a stage does.
fn deliver(hub: &mut Hub, actions: Vec<Action>) -> (HashMap<u64, Vec<String>>, Vec<u64>) {
    let mut got: HashMap<u64, Vec<String>> = HashMap::new();
    let mut closed = Vec::new();
    for action in actions {
        match action {
            Action::Send(to, line) => {
                let text = std::str::from_utf8(&line).unwrap();
                assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
                got.entry(to.0)
                    .or_default()
                    .push(text.trim_end_matches('\n').to_owned());
            }
            Action::Close(id) => closed.push(id.0),
            Action::Release(nick) => hub.release(&nick),
        }
    }
    (got, closed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_hub_does_what_the_model_says(ops in prop::collection::vec(op(), 1..60)) {
        let mut hub = Hub::new();
        let mut model = Model::default();
        let mut ids: Vec<ClientId> = Vec::new();
        for op in ops {
            let mut actions = Vec::new();
            let (expected, expect_close) = match op {
                Op::Connect => {
                    let nick = model.first_free_guest();
                    let id = hub.connect(&mut actions);
                    let mut out = HashMap::new();
                    model.to_room("lobby", None, &format!("* {nick} joined lobby"), &mut out);
                    out.insert(id.0, vec![format!("* welcome {nick} (type /help for commands)")]);
                    model.members.insert(id.0, Member { nick, room: "lobby".into() });
                    ids.push(id);
                    (out, None)
                }
                Op::Line(c, ref text) => {
                    let Some(&id) = ids.get(c % ids.len().max(1)) else { continue };
                    // Before it runs: whom it may reach, and at most what that costs each.
                    let frame = Frame::Line(text);
                    let mut reach: HashMap<u64, usize> = HashMap::new();
                    hub.reach(id, &frame, |to, need| *reach.entry(to.0).or_default() += need);
                    hub.handle(id, frame, &mut actions);
                    let mut cost: HashMap<u64, usize> = HashMap::new();
                    for a in &actions {
                        if let Action::Send(to, line) = a {
                            *cost.entry(to.0).or_default() += line.len() + CHUNK_COST;
                        }
                    }
                    for (to, spent) in &cost {
                        let bound = reach.get(to).copied().unwrap_or(0);
                        prop_assert!(
                            *spent <= bound,
                            "{text:?} cost client #{to} {spent} bytes, reach said at most {bound}"
                        );
                    }
                    let (out, closes) = model.line(id.0, text);
                    (out, closes.then_some(id.0))
                }
                Op::Disconnect(c) => {
                    let Some(&id) = ids.get(c % ids.len().max(1)) else { continue };
                    hub.disconnect(id, None, &mut actions);
                    let mut out = HashMap::new();
                    model.leave(id.0, None, &mut out);
                    (out, None)
                }
            };
            let is_help = matches!(&op, Op::Line(_, t) if t == "/help");
            let (got, closed) = deliver(&mut hub, actions);
            for (id, lines) in &expected {
                let got_lines = got.get(id).cloned().unwrap_or_default();
                if is_help && lines == &["* commands:".to_owned()] {
                    prop_assert_eq!(got_lines.len(), 9);
                    prop_assert_eq!(&got_lines[0], "* commands:");
                    prop_assert!(got_lines.iter().all(|l| l.starts_with("* ")));
                } else {
                    prop_assert_eq!(&got_lines, lines, "client #{} after {:?}", id, op);
                }
            }
            for id in got.keys() {
                prop_assert!(expected.contains_key(id), "client #{} got {:?} after {:?}", id, got[id], op);
            }
            prop_assert_eq!(closed, expect_close.into_iter().collect::<Vec<_>>());
            // The state itself.
            prop_assert_eq!(hub.len(), model.members.len());
            for (id, m) in &model.members {
                prop_assert_eq!(hub.nick(ClientId(*id)), Some(m.nick.as_str()));
                prop_assert_eq!(hub.room(ClientId(*id)), Some(m.room.as_str()));
            }
        }
    }
}
