//! The data loader actor: owns the prefetching loader and its position,
//! and serves each step's batch in order.

use std::sync::Arc;

use zbmd_rt::{Actor, ActorError, Context};

use super::{Faults, Refusal, Reply, RunSettings, crash, injected};
use crate::data::{Batch, DataLoader, LoaderPosition, Prefetcher};
use crate::train::commit::{Committed, StepCursor};
use crate::train::config::FaultTarget;

pub(crate) enum LoaderMsg {
    /// Step `step`'s batch, and the position after it; refused when this
    /// incarnation is not at the step before (see [`StepCursor`]).
    Next { step: u64, reply: Reply<(Arc<Batch>, LoaderPosition)> },
    /// Seeks to the snapshot's position.
    Restore { snapshot: Arc<Committed>, reply: Reply<()> },
}

/// Batches ahead the loader prepares while the model computes.
const PREFETCH: usize = 2;

/// What a restored loader holds.
struct Restored {
    loader: Prefetcher,
    /// The last step it served a batch for.
    at: StepCursor,
}

/// Serves batches in order, preparing the next [`PREFETCH`] after each one
/// it hands out (on its own shard, while the model works on this one);
/// `None` until the driver restores it.
pub(crate) struct LoaderActor {
    run: Arc<RunSettings>,
    faults: Faults,
    state: Option<Restored>,
}

impl LoaderActor {
    /// An unrestored incarnation.
    pub fn new(run: Arc<RunSettings>, faults: Faults) -> Self {
        LoaderActor { run, faults, state: None }
    }

    fn restore(&mut self, snapshot: &Committed) -> Result<(), String> {
        let mut loader = DataLoader::builder(self.run.train.clone())
            .batch_size(self.run.batch_size)
            .seed(self.run.seed)
            .build()
            .map_err(|error| error.to_string())?;
        if snapshot.loader != LoaderPosition::default() {
            loader.seek(&snapshot.loader).map_err(|error| error.to_string())?;
        }
        let loader = Prefetcher::new(loader, PREFETCH).map_err(|error| error.to_string())?;
        self.state = Some(Restored { loader, at: StepCursor::restored(snapshot.step) });
        Ok(())
    }
}

impl Actor for LoaderActor {
    type Msg = LoaderMsg;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: LoaderMsg) -> Result<(), ActorError> {
        match msg {
            LoaderMsg::Next { step, reply } => {
                if self.faults.fires(FaultTarget::Loader, step) {
                    let reason = injected(FaultTarget::Loader, step);
                    return Err(crash(reply, FaultTarget::Loader, reason));
                }
                let Some(state) = &mut self.state else {
                    reply.reply(Err(Refusal::Unrestored));
                    return Ok(());
                };
                if let Err(stale) = state.at.advance("loader", step) {
                    reply.reply(Err(Refusal::Declined(stale)));
                    return Ok(());
                }
                let batch = state.loader.next_batch();
                reply.reply(Ok((Arc::new(batch), state.loader.position())));
                state.loader.fill();
            }
            LoaderMsg::Restore { snapshot, reply } => {
                reply.reply(self.restore(&snapshot).map_err(Refusal::Declined));
            }
        }
        Ok(())
    }
}
