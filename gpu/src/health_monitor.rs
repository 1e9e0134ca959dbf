//! The health monitor: an actor beside the kernel actors that probes every
//! device's driver each `probe_period` and tells actors placed on a device
//! that went critical to move, so idle actors leave before their next job.
//!
//! The health it reads and writes is [`crate::health`]'s registry; the
//! supervision tree it runs in is [`crate::pool`]'s.

use std::sync::Arc;
use std::time::Duration;

use zbmd_rt::supervisor::ChildRef;
use zbmd_rt::{Actor, ActorError, Context};

use crate::health::Health;
use crate::kernel_actor::{KernelMsg, Shared};

/// The health monitor's messages.
#[derive(Clone)]
pub(crate) enum MonitorMsg {
    Tick,
}

/// Probes every device and tells actors on critical devices to move.
pub(crate) struct HealthMonitor {
    shared: Arc<Shared>,
    kernels: Vec<ChildRef<KernelMsg>>,
    period: Duration,
}

impl HealthMonitor {
    /// A monitor of the kernel actors `kernels` (by slot), probing every
    /// `period`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        kernels: Vec<ChildRef<KernelMsg>>,
        period: Duration,
    ) -> Self {
        HealthMonitor { shared, kernels, period }
    }
}

impl Actor for HealthMonitor {
    type Msg = MonitorMsg;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        ctx.send_interval(&ctx.myself(), || MonitorMsg::Tick, self.period)
            .map_err(|error| ActorError::msg(format!("health monitor timer: {error}")))?;
        Ok(())
    }

    fn handle(
        &mut self,
        _: &mut Context<'_, Self>,
        MonitorMsg::Tick: MonitorMsg,
    ) -> Result<(), ActorError> {
        self.shared.registry.probe_all();
        for (slot, kernel) in self.kernels.iter().enumerate() {
            let Some(device) = self.shared.current(slot) else { continue };
            let critical = self
                .shared
                .registry
                .devices()
                .iter()
                .any(|health| health.id() == device && health.health() == Health::Critical);
            if critical {
                // Full mailbox: it will find out at its next job anyway.
                let _ = kernel.try_send(KernelMsg::Migrate);
            }
        }
        Ok(())
    }
}
