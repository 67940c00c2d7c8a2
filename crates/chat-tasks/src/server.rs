//! For a stage that adds a task of its own beside the clients' (stage 12's broker): a shared
//! server around a server it built, and calls into that server that settle like any other.

use std::time::Instant;

use chat_core::Server;

use crate::{HangUp, Shared, Write};

impl<S> Shared<S> {
    /// [`Shared::new`] around `server`, which the stage built itself (stage 12:
    /// `Server::clustered`, a node of a cluster).
    pub fn with_server(server: Server, write: Write<S>, hang_up: HangUp<S>) -> Self {
        let mut shared = Self::new(chat_core::Limits::default(), write, hang_up);
        let state = match shared.state.get_mut() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.server = server;
        shared
    }

    /// Calls `f` on the server under the lock, then settles as every call does: what `f`
    /// queued for clients is written through, waiting clients go on. For what is neither a
    /// client nor the server's timer (stage 12's broker: its claims answered, its messages
    /// from other nodes).
    pub fn with<R>(&self, f: impl FnOnce(&mut Server, Instant) -> R) -> R {
        self.call(|state, now| f(&mut state.server, now))
    }
}
