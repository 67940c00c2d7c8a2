//! The protocol, tested without sockets: a little in-memory "network" where each client's
//! received lines are collected, driven through `Hub` exactly as a stage would.
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use chat_core::{Action, ClientId, Frame, Framer, Hub};

/// A hub plus the lines each client has received so far.
struct Net {
    hub: Hub,
    inbox: std::collections::HashMap<ClientId, Vec<String>>,
    closed: Vec<ClientId>,
    out: Vec<Action>,
}

impl Net {
    fn new() -> Self {
        Self {
            hub: Hub::new(),
            inbox: Default::default(),
            closed: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Delivers the actions in order, as a stage does; a held nick is released once the
    /// actions before it are delivered.
    fn deliver(&mut self) {
        for action in std::mem::take(&mut self.out) {
            match action {
                Action::Send(to, line) => {
                    let text = std::str::from_utf8(&line).unwrap();
                    assert!(text.ends_with('\n'));
                    self.inbox
                        .entry(to)
                        .or_default()
                        .push(text.trim_end_matches('\n').to_owned());
                }
                Action::Close(id) => self.closed.push(id),
                Action::Release(nick) => self.hub.release(&nick),
            }
        }
    }

    fn disconnect(&mut self, id: ClientId, reason: Option<&str>) {
        self.hub.disconnect(id, reason, &mut self.out);
        self.deliver();
    }

    fn connect(&mut self) -> ClientId {
        let id = self.hub.connect(&mut self.out);
        self.deliver();
        id
    }

    fn say(&mut self, id: ClientId, text: &str) {
        let mut framer = Framer::new();
        let input = format!("{text}\n");
        let (hub, out) = (&mut self.hub, &mut self.out);
        framer.push(input.as_bytes(), |f| hub.handle(id, f, out));
        self.deliver();
    }

    /// Lines received since the last call.
    fn take(&mut self, id: ClientId) -> Vec<String> {
        std::mem::take(self.inbox.entry(id).or_default())
    }
}

#[test]
fn default_hub_is_a_new_hub() {
    let mut hub = Hub::default();
    let mut out = Vec::new();
    let id = hub.connect(&mut out);
    assert_eq!(hub.nick(id), Some("guest1"));
}

#[test]
fn welcome_and_join_notice() {
    let mut net = Net::new();
    let a = net.connect();
    assert_eq!(net.take(a), ["* welcome guest1 (type /help for commands)"]);
    let b = net.connect();
    assert_eq!(net.take(b), ["* welcome guest2 (type /help for commands)"]);
    assert_eq!(net.take(a), ["* guest2 joined lobby"]);
}

#[test]
fn messages_reach_others_and_are_not_echoed() {
    let mut net = Net::new();
    let (a, b, c) = (net.connect(), net.connect(), net.connect());
    for id in [a, b, c] {
        net.take(id);
    }
    net.say(a, "hello");
    net.say(a, "//slash");
    assert!(net.take(a).is_empty());
    assert_eq!(net.take(b), ["<guest1> hello", "<guest1> /slash"]);
    assert_eq!(net.take(c), ["<guest1> hello", "<guest1> /slash"]);
}

#[test]
fn nick_rules() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.take(a);
    net.take(b);
    net.say(a, "/nick Alice");
    assert_eq!(net.take(a), ["* you are now Alice"]);
    assert_eq!(net.take(b), ["* guest1 is now Alice"]);
    net.say(b, "/nick alice");
    assert_eq!(net.take(b), ["! nick taken: alice"]);
    net.say(b, "/nick bad!nick");
    assert_eq!(net.take(b), ["! invalid nick: bad!nick"]);
    net.say(b, "/nick two words");
    assert_eq!(net.take(b), ["! usage: /nick NAME"]);
    net.say(a, "/nick alice"); // changing the case of one's own nick is allowed, and told
    assert_eq!(net.take(a), ["* you are now alice"]);
    assert_eq!(net.take(b), ["* Alice is now alice"]);
    net.say(a, "/nick alice"); // exactly the same: a reply, no notice
    assert_eq!(net.take(a), ["* you are now alice"]);
    assert!(net.take(b).is_empty());
    net.say(b, "hi");
    assert_eq!(net.take(a), ["<guest2> hi"]);
}

#[test]
fn guest_numbers_are_reused_lowest_first() {
    let mut net = Net::new();
    let ids: Vec<_> = (0..3).map(|_| net.connect()).collect();
    net.disconnect(ids[0], None);
    let d = net.connect();
    assert_eq!(net.hub.nick(d), Some("guest1"));
    let e = net.connect();
    assert_eq!(net.hub.nick(e), Some("guest4"));
    // guest4 renames itself guest5: guest4 is free again, guest5 is taken by hand.
    net.say(e, "/nick guest5");
    let f = net.connect();
    assert_eq!(net.hub.nick(f), Some("guest4"));
    let g = net.connect();
    assert_eq!(net.hub.nick(g), Some("guest6"));
}

#[test]
fn join_moves_between_rooms() {
    let mut net = Net::new();
    let (a, b, c) = (net.connect(), net.connect(), net.connect());
    net.say(c, "/join rust");
    for id in [a, b, c] {
        net.take(id);
    }
    net.say(a, "/join rust");
    assert_eq!(net.take(a), ["* you joined rust (2 members)"]);
    assert_eq!(net.take(b), ["* guest1 left lobby"]);
    assert_eq!(net.take(c), ["* guest1 joined rust"]);
    net.say(a, "/join rust");
    assert_eq!(net.take(a), ["! already in rust"]);
    net.say(a, "/join no/such");
    assert_eq!(net.take(a), ["! invalid room: no/such"]);
    net.say(a, "/join two words");
    assert_eq!(net.take(a), ["! usage: /join ROOM"]);
    net.say(a, "in rust");
    assert_eq!(net.take(c), ["<guest1> in rust"]);
    assert!(net.take(b).is_empty());
}

#[test]
fn who_and_rooms() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.say(b, "/nick Bob");
    let c = net.connect();
    net.say(c, "/join rust");
    net.take(a);
    net.say(a, "/who");
    assert_eq!(net.take(a), ["* members of lobby: Bob, guest1"]);
    net.say(a, "/rooms");
    assert_eq!(net.take(a), ["* rooms: lobby (2), rust (1)"]);
    net.say(a, "/who now");
    assert_eq!(net.take(a), ["! usage: /who"]);
}

#[test]
fn who_is_capped_at_100_names() {
    let mut net = Net::new();
    let ids: Vec<_> = (0..105).map(|_| net.connect()).collect();
    net.take(ids[0]);
    net.say(ids[0], "/who");
    let reply = net.take(ids[0]);
    assert_eq!(reply.len(), 1);
    assert!(reply[0].ends_with(" and 5 more"), "{}", reply[0]);
    assert_eq!(reply[0].matches(", ").count(), 99);
}

#[test]
fn rooms_are_capped_at_100() {
    let mut net = Net::new();
    let ids: Vec<_> = (0..102).map(|_| net.connect()).collect();
    for (i, id) in ids.iter().enumerate().skip(1) {
        net.say(*id, &format!("/join r{i:03}"));
    }
    net.take(ids[0]);
    net.say(ids[0], "/rooms");
    let reply = net.take(ids[0]);
    assert!(
        reply[0].starts_with("* rooms: lobby (1), r001 (1)"),
        "{}",
        reply[0]
    );
    assert!(reply[0].ends_with(" and 2 more"), "{}", reply[0]);
}

#[test]
fn private_messages() {
    let mut net = Net::new();
    let (a, b, c) = (net.connect(), net.connect(), net.connect());
    net.say(b, "/nick bob");
    net.say(b, "/join elsewhere");
    for id in [a, b, c] {
        net.take(id);
    }
    net.say(a, "/msg BOB psst, over here");
    assert_eq!(net.take(b), ["[guest1] psst, over here"]);
    assert!(net.take(a).is_empty());
    assert!(net.take(c).is_empty());
    net.say(a, "/msg nobody hi");
    assert_eq!(net.take(a), ["! no such user: nobody"]);
    net.say(a, "/msg bob");
    assert_eq!(net.take(a), ["! usage: /msg NICK TEXT"]);
}

#[test]
fn errors_for_unknown_commands_and_bad_frames() {
    let mut net = Net::new();
    let a = net.connect();
    net.take(a);
    net.say(a, "/frobnicate x");
    assert_eq!(net.take(a), ["! unknown command: /frobnicate"]);
    let mut out = Vec::new();
    net.hub.handle(a, Frame::TooLong, &mut out);
    net.hub.handle(a, Frame::InvalidUtf8, &mut out);
    net.out = out;
    net.deliver();
    assert_eq!(
        net.take(a),
        ["! line too long (max 1024 bytes)", "! invalid utf-8"]
    );
}

#[test]
fn help_lines_are_notices() {
    let mut net = Net::new();
    let a = net.connect();
    net.take(a);
    net.say(a, "/help");
    let help = net.take(a);
    assert!(help.len() > 3);
    assert!(help.iter().all(|l| l.starts_with("* ")));
}

#[test]
fn quit_says_bye_closes_and_tells_the_room() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.take(a);
    net.take(b);
    net.say(a, "/quit see you");
    assert_eq!(net.take(a), ["* bye"]);
    assert_eq!(net.closed, [a]);
    assert_eq!(net.take(b), ["* guest1 left lobby (see you)"]);
    // Lines after quit and a second disconnect are ignored.
    net.say(a, "ghost");
    net.disconnect(a, None);
    assert!(net.take(b).is_empty());
    assert_eq!(net.hub.len(), 1);
}

#[test]
fn disconnect_with_reason() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.take(b);
    net.disconnect(a, Some("slow consumer"));
    assert_eq!(net.take(b), ["* guest1 left lobby (slow consumer)"]);
}

#[test]
fn empty_rooms_disappear() {
    let mut net = Net::new();
    let a = net.connect();
    net.say(a, "/join attic");
    net.say(a, "/join lobby");
    net.take(a);
    net.say(a, "/rooms");
    assert_eq!(net.take(a), ["* rooms: lobby (1)"]);
}

#[test]
fn shutdown_tells_everyone_and_closes_them() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.take(a);
    net.take(b);
    net.hub.shutdown(&mut net.out);
    net.deliver();
    assert_eq!(net.take(a), ["* server shutting down"]);
    assert_eq!(net.take(b), ["* server shutting down"]);
    assert_eq!(net.closed, [a, b]);
    assert!(net.hub.is_empty());
}

#[test]
fn a_broadcast_shares_one_buffer() {
    let mut hub = Hub::new();
    let mut out = Vec::new();
    let a = hub.connect(&mut out);
    for _ in 0..3 {
        hub.connect(&mut out);
    }
    out.clear();
    hub.handle_line(a, "shared", &mut out);
    let ptrs: Vec<*const u8> = out
        .iter()
        .map(|a| match a {
            Action::Send(_, line) => line.as_ptr(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ptrs.len(), 3);
    assert!(ptrs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_freed_nick_is_held_until_released() {
    let mut hub = Hub::new();
    let mut out = Vec::new();
    let a = hub.connect(&mut out);
    let b = hub.connect(&mut out);
    out.clear();
    hub.disconnect(a, None, &mut out);
    // The departure is announced first, then the nick is held, not free.
    assert!(
        matches!(&out[0], Action::Send(to, line) if *to == b && &line[..] == b"* guest1 left lobby\n")
    );
    assert_eq!(out.last(), Some(&Action::Release("guest1".into())));
    let c = hub.connect(&mut Vec::new());
    assert_eq!(hub.nick(c), Some("guest3"), "guest1 is still held");
    let mut replies = Vec::new();
    hub.handle_line(b, "/nick GUEST1", &mut replies);
    assert!(matches!(&replies[0], Action::Send(_, line) if &line[..] == b"! nick taken: GUEST1\n"));
    hub.release("guest1");
    let d = hub.connect(&mut Vec::new());
    assert_eq!(hub.nick(d), Some("guest1"));
    // A rename holds the old nick the same way; a case-only rename holds nothing.
    let mut out = Vec::new();
    hub.handle_line(d, "/nick dee", &mut out);
    assert_eq!(out.last(), Some(&Action::Release("guest1".into())));
    let mut out = Vec::new();
    hub.handle_line(d, "/nick Dee", &mut out);
    assert!(!out.iter().any(|a| matches!(a, Action::Release(_))));
}

#[test]
fn msg_to_yourself_and_in_any_case() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.say(b, "/nick Bob");
    net.take(a);
    net.take(b);
    net.say(a, "/msg guest1 note to self");
    assert_eq!(net.take(a), ["[guest1] note to self"]);
    net.say(a, "/msg bOB hi");
    assert_eq!(net.take(b), ["[guest1] hi"]);
}

#[test]
fn rooms_are_case_sensitive() {
    let mut net = Net::new();
    let (a, b) = (net.connect(), net.connect());
    net.say(a, "/join rust");
    net.say(b, "/join Rust");
    net.take(a);
    net.take(b);
    assert_eq!(net.hub.room(a), Some("rust"));
    assert_eq!(net.hub.room(b), Some("Rust"));
    net.say(a, "/rooms");
    assert_eq!(net.take(a), ["* rooms: Rust (1), rust (1)"]);
    net.say(a, "hello");
    assert!(net.take(b).is_empty());
}

#[test]
fn who_at_exactly_100_has_no_tail_and_at_101_one_more() {
    let mut net = Net::new();
    let ids: Vec<_> = (0..100).map(|_| net.connect()).collect();
    net.take(ids[0]);
    net.say(ids[0], "/who");
    let reply = net.take(ids[0]);
    assert!(!reply[0].contains(" more"), "{}", reply[0]);
    assert_eq!(reply[0].matches(", ").count(), 99);
    net.connect();
    net.take(ids[0]);
    net.say(ids[0], "/who");
    let reply = net.take(ids[0]);
    assert!(reply[0].ends_with(" and 1 more"), "{}", reply[0]);
}

#[test]
fn guest_numbers_count_from_one_even_after_guest0_is_freed() {
    let mut net = Net::new();
    let a = net.connect();
    net.say(a, "/nick guest0");
    net.say(a, "/nick alice");
    let b = net.connect();
    assert_eq!(net.hub.nick(b), Some("guest1"));
}
