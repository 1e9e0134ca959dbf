//! The name registry: OTP's `register/2` and `whereis/1`.
//!
//! A lock-protected map, as BEAM's is: registering and looking up names is
//! not a hot path, and a lock makes "one name, one live actor, released at
//! death before links hear of it" simple to keep true.

use std::collections::HashMap;
use std::sync::Mutex;

use super::scheduler::lock;
use crate::actor::{ActorId, Pid};
use crate::error::RuntimeError;

#[derive(Default)]
struct Names {
    by_name: HashMap<Box<str>, Pid>,
    by_actor: HashMap<ActorId, Box<str>>,
}

/// Names of live actors.
pub(crate) struct Registry {
    names: Mutex<Names>,
    capacity: usize,
    name_len_max: usize,
}

impl Registry {
    pub(crate) fn new(capacity: usize, name_len_max: usize) -> Self {
        Registry { names: Mutex::new(Names::default()), capacity, name_len_max }
    }

    /// Registers `name` for `pid`. An actor holds at most one name, and a
    /// name belongs to at most one live actor.
    pub(crate) fn register(&self, name: &str, pid: Pid) -> Result<(), RuntimeError> {
        if name.is_empty() || name.len() > self.name_len_max {
            return Err(RuntimeError::NameTooLong { len: name.len(), limit: self.name_len_max });
        }
        let mut names = lock(&self.names);
        if let Some(holder) = names.by_name.get(name) {
            return Err(RuntimeError::NameTaken { name: name.to_string(), holder: holder.id() });
        }
        if let Some(held) = names.by_actor.get(&pid.id()) {
            return Err(RuntimeError::AlreadyNamed { actor: pid.id(), name: held.to_string() });
        }
        if names.by_name.len() >= self.capacity {
            return Err(RuntimeError::RegistryFull { limit: self.capacity });
        }
        // Checked under the lock: a dying actor marks itself dead before it
        // takes this lock to release its name, so a dead actor found here
        // can never be registered after its release ran.
        if !pid.is_alive() {
            return Err(RuntimeError::NoProc(pid.id()));
        }
        pid.target.header().set_registered();
        names.by_actor.insert(pid.id(), name.into());
        names.by_name.insert(name.into(), pid);
        Ok(())
    }

    /// Removes the name `actor` holds, if any (at its death, or on request).
    pub(crate) fn release(&self, actor: ActorId) -> Option<Box<str>> {
        let mut names = lock(&self.names);
        let name = names.by_actor.remove(&actor)?;
        names.by_name.remove(&name);
        Some(name)
    }

    pub(crate) fn whereis(&self, name: &str) -> Option<Pid> {
        lock(&self.names).by_name.get(name).cloned()
    }
}
