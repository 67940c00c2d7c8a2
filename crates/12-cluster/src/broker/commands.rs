//! What each of the core's actions is in Redis, and what its reply means: the commands of a
//! batch (most of them branches of the one Lua script, `broker.lua`), the lease, and the
//! answers that wait for their marker before the core hears them.

use std::time::Instant;

use chat_core::cluster::{Channel, ClusterAction, PresenceRecord, LEASE};
use chat_core::{ClientId, Server};
use redis::Value;

use super::{Broker, Link, Reply};

/// What a command of a batch was, to know what to do with its reply.
pub(super) enum Sent {
    /// A publish: lost if it fails.
    Publish,
    /// A `/nick` claim.
    Claim { client: ClientId, nick: String },
    /// An arrival's claim of a `guestN`.
    Guest { client: ClientId },
    /// A claim of a member's nick again, after an outage.
    Reclaim { nick: String },
    /// The presence records.
    Load,
    /// Anything else (records, releases, the lease).
    Other,
}

/// An answer from Redis for the core, handed over when its marker comes.
pub(super) enum Answer {
    /// The answer to a claim.
    Claimed {
        client: ClientId,
        nick: String,
        granted: bool,
    },
    /// The presence records.
    Presence(Vec<(String, String)>),
}

impl Answer {
    pub(super) fn give(self, server: &mut Server, now: Instant) {
        match self {
            Answer::Claimed {
                client,
                nick,
                granted,
            } => server.claimed(client, &nick, granted, now),
            Answer::Presence(records) => server.load_presence(&records, now),
        }
    }
}

impl Broker {
    // ANCHOR: command
    /// Adds the command for `action` to `pipe`; says what it was.
    pub(super) fn command(&self, pipe: &mut redis::Pipeline, action: ClusterAction) -> Sent {
        let node = self.node.to_string();
        let mark = Channel::Node(self.node).name();
        let sha = self.script.get_hash();
        let mut script = |args: &[&str]| {
            pipe.cmd("EVALSHA").arg(sha).arg(0).arg(args);
        };
        let record = |r: &PresenceRecord| match r {
            PresenceRecord::Set { key, value } => ("set", key.clone(), value.clone()),
            PresenceRecord::Delete { key, node } => ("del", key.clone(), node.to_string()),
        };
        match action {
            ClusterAction::Publish {
                channel,
                message,
                record: None,
            } => {
                pipe.cmd("PUBLISH")
                    .arg(channel.name())
                    .arg(message.as_ref());
                Sent::Publish
            }
            ClusterAction::Publish {
                channel,
                message,
                record: Some(r),
            } => {
                let (kind, key, value) = record(&r);
                let message = String::from_utf8_lossy(&message).into_owned();
                script(&["publish", &channel.name(), &message, kind, &key, &value]);
                Sent::Publish
            }
            ClusterAction::Record(r) => {
                let (kind, key, value) = record(&r);
                script(&["record", kind, &key, &value]);
                Sent::Other
            }
            ClusterAction::Claim { client, nick } => {
                script(&["claim", &nick.to_ascii_lowercase(), &node, &mark]);
                Sent::Claim { client, nick }
            }
            ClusterAction::ClaimGuest { client } => {
                script(&["guest", &node, &mark]);
                Sent::Guest { client }
            }
            ClusterAction::Release { key, node } => {
                script(&["release", &key, &node.to_string()]);
                Sent::Other
            }
            ClusterAction::Reclaim { nick } => {
                script(&["reclaim", &nick.to_ascii_lowercase(), &node]);
                Sent::Reclaim { nick }
            }
            ClusterAction::LoadPresence => {
                script(&["load", &mark]);
                Sent::Load
            }
            ClusterAction::Subscribe(_)
            | ClusterAction::Unsubscribe(_)
            | ClusterAction::ResumeBroker => {
                pipe.cmd("PING");
                Sent::Other
            }
        }
    }
    // ANCHOR_END: command

    /// `SET chat:lease:NODE 1 PX LEASE`: this node is alive for another [`LEASE`].
    pub(super) fn lease_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("chat:lease:{}", self.node))
            .arg(1)
            .arg("PX")
            .arg(LEASE.as_millis() as u64);
        cmd
    }

    /// The reply to a batch: answers wait for their markers; a failed publish is lost; a
    /// failed connection ends the link.
    pub(super) fn answered(
        &mut self,
        link: &mut Link,
        sent: Vec<Sent>,
        reply: Reply,
    ) -> Result<(), String> {
        let results = match reply {
            Ok(results) => results,
            Err(err) => {
                link.unanswered = sent; // for `fail` to sort out
                return Err(err.to_string());
            }
        };
        // An error of anything but a publish, or a reply of the wrong kind, is a broker that
        // does not do what the node needs (the script is gone, Redis is out of memory): the
        // link is given up.
        let refused = sent.iter().zip(&results).find_map(|(sent, result)| {
            let expected = matches!(
                (sent, result),
                (Sent::Publish, _)
                    | (Sent::Claim { .. } | Sent::Reclaim { .. }, Ok(Value::Int(_)))
                    | (Sent::Guest { .. }, Ok(Value::BulkString(_)))
                    | (Sent::Load, Ok(Value::Array(_)))
                    | (Sent::Other, Ok(_))
            );
            (!expected).then(|| format!("unexpected reply {result:?}"))
        });
        if refused.is_some() || results.len() != sent.len() {
            link.unanswered = sent;
            return Err(refused.unwrap_or_else(|| "replies missing".into()));
        }
        for (sent, result) in sent.into_iter().zip(results) {
            match (sent, result) {
                (Sent::Claim { client, nick }, Ok(Value::Int(granted))) => {
                    link.answers.push_back(Answer::Claimed {
                        client,
                        nick,
                        granted: granted == 1,
                    });
                }
                (Sent::Guest { client }, Ok(Value::BulkString(nick))) => {
                    link.answers.push_back(Answer::Claimed {
                        client,
                        nick: String::from_utf8_lossy(&nick).into_owned(),
                        granted: true,
                    });
                }
                (Sent::Load, Ok(Value::Array(items))) => {
                    link.answers.push_back(Answer::Presence(pairs(items)));
                }
                (Sent::Reclaim { nick }, Ok(Value::Int(0))) => log::warn!(
                    "node {}: {nick} was taken by another node while the broker was away",
                    self.node
                ),
                (Sent::Publish, Err(err)) => {
                    log::warn!("node {}: publish failed: {err}", self.node);
                    self.lost.add(1);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `HGETALL`'s flat array as (field, value) pairs.
fn pairs(items: Vec<Value>) -> Vec<(String, String)> {
    let text = |v: Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        out.push((text(k), text(v)));
    }
    out
}
