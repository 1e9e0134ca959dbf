//! The optimizer actor: owns the parameters and the optimizer's state, and
//! applies each step's gradients to them.

use std::sync::Arc;

use zbmd_rt::{Actor, ActorError, Context};

use super::{Faults, Refusal, Reply, RunSettings, crash, injected};
use crate::checkpoint::NamedArray;
use crate::optim::{Optimizer, OptimizerState, ParamView};
use crate::train::commit::{Committed, Params, StepCursor};
use crate::train::config::FaultTarget;

pub(crate) enum OptimizerMsg {
    /// Applies step `step`'s gradients; answers the new parameters, the
    /// learning rate used and, if asked (a snapshot is due), its state.
    Step {
        step: u64,
        grads: Vec<Vec<f32>>,
        /// Whether to answer the state, written over this old one when
        /// given (so that a snapshot each step allocates no state).
        with_state: Option<OptimizerState>,
        reply: Reply<Stepped>,
    },
    /// Resets to the snapshot.
    Restore { snapshot: Arc<Committed>, reply: Reply<()> },
}

/// What an optimizer step answers.
pub(crate) struct Stepped {
    pub params: Params,
    pub lr: f64,
    pub state: Option<Arc<OptimizerState>>,
}

/// What a restored optimizer holds.
struct Restored {
    optimizer: Box<dyn Optimizer + Send>,
    params: Vec<NamedArray>,
    /// The last step it applied.
    at: StepCursor,
}

/// Applies updates; `None` until the driver restores it.
pub(crate) struct OptimizerActor {
    run: Arc<RunSettings>,
    faults: Faults,
    state: Option<Restored>,
}

impl OptimizerActor {
    /// An unrestored incarnation.
    pub fn new(run: Arc<RunSettings>, faults: Faults) -> Self {
        OptimizerActor { run, faults, state: None }
    }

    fn restore(&mut self, snapshot: &Committed) -> Result<(), String> {
        let mut optimizer = self.run.optimizer.build().map_err(|error| error.to_string())?;
        if snapshot.optimizer.step > 0 {
            optimizer.load_state(&snapshot.optimizer).map_err(|error| error.to_string())?;
        }
        self.state = Some(Restored {
            optimizer,
            params: snapshot.params.to_vec(),
            at: StepCursor::restored(snapshot.step),
        });
        Ok(())
    }

    /// Applies `grads` as step `step`, or says why not.
    fn step(
        &mut self,
        step: u64,
        grads: &[Vec<f32>],
        with_state: Option<OptimizerState>,
    ) -> Result<Stepped, Refusal> {
        let Some(state) = &mut self.state else {
            return Err(Refusal::Unrestored);
        };
        state.at.advance("optimizer", step).map_err(Refusal::Declined)?;
        let optimizer = &mut state.optimizer;
        if let Some(schedule) = &self.run.schedule {
            optimizer.set_lr(schedule.lr_at(step - 1));
        }
        let lr = optimizer.lr();
        let mut views: Vec<ParamView<'_>> = state
            .params
            .iter_mut()
            .zip(grads)
            .map(|(param, grad)| ParamView { name: &param.name, value: &mut param.data, grad })
            .collect();
        optimizer.step(&mut views).map_err(|error| Refusal::Declined(error.to_string()))?;
        let state_out = with_state.map(|mut out| {
            optimizer.state_into(&mut out);
            Arc::new(out)
        });
        Ok(Stepped { params: Arc::new(state.params.clone()), lr, state: state_out })
    }
}

impl Actor for OptimizerActor {
    type Msg = OptimizerMsg;

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: OptimizerMsg) -> Result<(), ActorError> {
        match msg {
            OptimizerMsg::Step { step, grads, with_state, reply } => {
                if self.faults.fires(FaultTarget::Optimizer, step) {
                    let reason = injected(FaultTarget::Optimizer, step);
                    return Err(crash(reply, FaultTarget::Optimizer, reason));
                }
                reply.reply(self.step(step, &grads, with_state));
            }
            OptimizerMsg::Restore { snapshot, reply } => {
                reply.reply(self.restore(&snapshot).map_err(Refusal::Declined));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NamedArray;
    use crate::train::TrainConfig;
    use crate::train::actors::tests::settings;

    fn snapshot(step: u64) -> Committed {
        Committed {
            step,
            params: Arc::new(vec![NamedArray::new("w", vec![2], vec![1.0, -1.0])]),
            optimizer: Arc::new(OptimizerState::default()),
            loader: Default::default(),
            rng_state: 0,
        }
    }

    #[test]
    fn an_unrestored_optimizer_refuses_every_step_until_it_is_sent_the_snapshot() {
        let config = TrainConfig::default();
        let faults = Faults::plan(&config.faults, 0).unwrap();
        let mut actor = OptimizerActor::new(settings(&config), faults);
        let grads = vec![vec![0.5, 0.5]];
        assert_eq!(actor.step(1, &grads, None).err(), Some(Refusal::Unrestored));
        actor.restore(&snapshot(3)).unwrap();
        let stale = actor.step(3, &grads, None).err();
        assert!(
            matches!(&stale, Some(Refusal::Declined(why)) if why.ends_with(StepCursor::RESTARTED_LATE)),
            "{stale:?}"
        );
        let stepped = actor.step(4, &grads, Some(OptimizerState::default())).ok().unwrap();
        assert_ne!(stepped.params[0].data, vec![1.0, -1.0], "the update applied");
        assert!(stepped.state.is_some(), "the state asked for");
    }
}
