//! The checkpointer actor: writes checkpoints into the run's store.

use std::path::PathBuf;
use std::sync::Arc;

use zbmd_rt::{Actor, ActorError, Context};

use super::{Faults, Refusal, Reply, RunSettings, crash, injected};
use crate::checkpoint::Checkpoint;
use crate::train::config::FaultTarget;

pub(crate) enum CheckpointerMsg {
    /// Writes `checkpoint`; answers its file, or the I/O error
    /// (`Refusal::Declined`).
    Save { checkpoint: Arc<Checkpoint>, reply: Reply<PathBuf> },
}

/// Writes checkpoints into the run's store. The driver opened the store
/// (and holds its directory's lock) before the first step; every
/// incarnation writes through it, and owns nothing else.
pub(crate) struct CheckpointerActor {
    run: Arc<RunSettings>,
    faults: Faults,
}

impl CheckpointerActor {
    pub fn new(run: Arc<RunSettings>, faults: Faults) -> Self {
        CheckpointerActor { run, faults }
    }
}

impl Actor for CheckpointerActor {
    type Msg = CheckpointerMsg;

    fn handle(
        &mut self,
        _: &mut Context<'_, Self>,
        msg: CheckpointerMsg,
    ) -> Result<(), ActorError> {
        let CheckpointerMsg::Save { checkpoint, reply } = msg;
        let Some(store) = &self.run.store else {
            reply.reply(Err(Refusal::Declined("no checkpoint directory".into())));
            return Ok(());
        };
        if self.faults.fires(FaultTarget::Checkpointer, checkpoint.step) {
            // Die halfway through a write, as a crash would: half the temp
            // file this save writes, never renamed. The retried save
            // replaces it; a store opened later removes it.
            let bytes = checkpoint.encode().map_err(|error| ActorError::msg(error.to_string()))?;
            let _ = std::fs::write(store.temp_path_for(checkpoint.step), &bytes[..bytes.len() / 2]);
            let reason = injected(FaultTarget::Checkpointer, checkpoint.step);
            return Err(crash(reply, FaultTarget::Checkpointer, reason));
        }
        reply.reply(store.save(&checkpoint).map_err(|error| Refusal::Declined(error.to_string())));
        Ok(())
    }
}
