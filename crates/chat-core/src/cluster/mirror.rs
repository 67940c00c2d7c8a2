//! What a node knows of the rest of the cluster.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::NodeId;

/// A member of another node, as the mirror knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its node.
    pub node: NodeId,
    /// Its nick, as it chose it.
    pub nick: String,
    /// Its room.
    pub room: String,
}

impl Remote {
    /// The presence record's value: `node<TAB>nick<TAB>room`.
    pub fn encode(&self) -> String {
        format!("{}\t{}\t{}", self.node, self.nick, self.room)
    }

    /// Parses [`Remote::encode`].
    pub fn decode(value: &str) -> Option<Self> {
        let mut fields = value.split('\t');
        let node = NodeId::parse(fields.next()?)?;
        let nick = fields.next().filter(|n| crate::command::is_valid_name(n))?;
        let room = fields.next().filter(|r| crate::command::is_valid_name(r))?;
        fields.next().is_none().then(|| Remote {
            node,
            nick: nick.to_owned(),
            room: room.to_owned(),
        })
    }
}

/// What a node knows of the rest of the cluster: every remote member, and when it last heard
/// from every other node.
#[derive(Debug, Default)]
pub struct Mirror {
    /// Remote members by lowercased nick.
    pub(crate) members: HashMap<String, Remote>,
    /// Room → the lowercased nicks of its remote members.
    pub(crate) rooms: HashMap<String, HashSet<String>>,
    /// Every other node heard from, and when.
    pub(crate) nodes: HashMap<NodeId, Instant>,
}

impl Mirror {
    /// How many remote members `room` has.
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, HashSet::len)
    }

    /// The remote member with this nick, in any case.
    pub fn get(&self, nick: &str) -> Option<&Remote> {
        self.members.get(&nick.to_ascii_lowercase())
    }

    /// The nicks of `room`'s remote members.
    pub fn nicks_in<'a>(&'a self, room: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|key| self.members.get(key))
            .map(|m| m.nick.as_str())
    }

    /// Every room with remote members, and how many.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rooms.iter().map(|(room, m)| (room.as_str(), m.len()))
    }

    /// Adds (or moves) a remote member.
    pub(crate) fn insert(&mut self, member: Remote) {
        let key = member.nick.to_ascii_lowercase();
        self.remove(&key);
        self.rooms
            .entry(member.room.clone())
            .or_default()
            .insert(key.clone());
        self.members.insert(key, member);
    }

    /// Removes a remote member; returns it.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Remote> {
        let member = self.members.remove(key)?;
        if let Some(set) = self.rooms.get_mut(&member.room) {
            set.remove(key);
            if set.is_empty() {
                self.rooms.remove(&member.room);
            }
        }
        Some(member)
    }

    /// Every remote member of `node`, removed.
    pub(crate) fn remove_node(&mut self, node: NodeId) -> Vec<Remote> {
        let keys: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.node == node)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone: Vec<Remote> = keys.iter().filter_map(|k| self.remove(k)).collect();
        gone.sort_by(|a, b| a.nick.cmp(&b.nick));
        self.nodes.remove(&node);
        gone
    }

    /// Remote members, all of them.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no remote member is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
