//! A fault-injecting wrapper around any [`Device`].
//!
//! [`FaultyDevice`] passes every call to the device it wraps, except that
//! allocations, launches and synchronizations (including the reads that
//! wait for a stream) fail with the errors a real device gives: out of
//! memory, device lost, kernel timeout, uncorrectable ECC. Each rule fires
//! either at a rate, rolled from the runtime's [`FaultPlan`](zbmd_rt::fault::FaultPlan) sites (so a
//! seed replays the same faults), or on one given call (for tests that
//! need a fault exactly there).
//!
//! A device lost or hit by an ECC error stays broken, as hardware does:
//! every later call fails with [`GpuError::DeviceLost`] and
//! [`Device::health`] reports it unresponsive. Out-of-memory and timeouts
//! are one-off.
//!
//! Plan sites are named `gpu.<operation>.<fault>`, e.g.
//! `gpu.launch.device_lost`, `gpu.alloc.oom`, `gpu.sync.timeout`,
//! `gpu.launch.ecc` (see [`site_name`]); `ZBMD_FAULT_INJECTION=seed=7,
//! site.gpu.launch.device_lost=0.01` turns one on from the environment, for
//! devices wrapped with [`FaultyDevice::new`] and the runtime's injector
//! (`FaultyDevice::new(device, &rt.faults())`).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use zbmd_rt::fault::{FaultInjector, FaultSite};

use crate::device::{
    Arg, Buffer, Device, DeviceInfo, Event, Gemm, HealthReport, KernelHandle, LaunchConfig,
    MemoryInfo, Stream,
};
use crate::error::GpuError;
use crate::kernel::{Kernel, KernelSource};

/// The calls a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// [`Device::alloc`].
    Alloc,
    /// [`Device::launch`] and [`Device::gemm`].
    Launch,
    /// [`Device::synchronize`], [`Device::event_synchronize`] and
    /// [`Device::read`] (which waits for its stream).
    Sync,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 3] = [Operation::Alloc, Operation::Launch, Operation::Sync];

    /// The operation's name in plan sites.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Alloc => "alloc",
            Operation::Launch => "launch",
            Operation::Sync => "sync",
        }
    }
}

/// The errors a fault can raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// [`GpuError::OutOfMemory`], once.
    OutOfMemory,
    /// [`GpuError::DeviceLost`]; the device stays lost.
    DeviceLost,
    /// [`GpuError::KernelTimeout`], once.
    KernelTimeout,
    /// [`GpuError::Ecc`]; the device is lost from then on.
    Ecc,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 4] =
        [Fault::OutOfMemory, Fault::DeviceLost, Fault::KernelTimeout, Fault::Ecc];

    /// The fault's name in plan sites.
    pub fn name(self) -> &'static str {
        match self {
            Fault::OutOfMemory => "oom",
            Fault::DeviceLost => "device_lost",
            Fault::KernelTimeout => "timeout",
            Fault::Ecc => "ecc",
        }
    }
}

/// The plan site that injects `fault` into `operation`:
/// `gpu.<operation>.<fault>`.
pub fn site_name(operation: Operation, fault: Fault) -> String {
    format!("gpu.{}.{}", operation.name(), fault.name())
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// On the operation's `n`-th call on this device (1-based), once.
    OnCall(u64),
    /// On every call from the `n`-th on.
    FromCall(u64),
}

/// A fault on given calls, for tests that need it exactly there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The call it hits.
    pub operation: Operation,
    /// The error it raises.
    pub fault: Fault,
    /// When.
    pub trigger: Trigger,
}

/// A device whose calls fail as the plan and rules say.
pub struct FaultyDevice {
    inner: Arc<dyn Device>,
    rules: Mutex<Vec<Rule>>,
    /// One resolved plan site per (operation, fault), in `Operation::ALL` ×
    /// `Fault::ALL` order.
    sites: Vec<(Operation, Fault, FaultSite)>,
    calls: [AtomicU64; 3],
    injected: [AtomicU64; 4],
    lost: AtomicBool,
}

impl FaultyDevice {
    /// Wraps `inner`, injecting at the rates the runtime's plan gives its
    /// `gpu.*` sites (a disabled injector injects nothing until a rule is
    /// added).
    pub fn new(inner: Arc<dyn Device>, faults: &FaultInjector) -> Self {
        let mut sites = Vec::new();
        for operation in Operation::ALL {
            for fault in Fault::ALL {
                let site = faults.site(&site_name(operation, fault));
                if site.is_configured() {
                    sites.push((operation, fault, site));
                }
            }
        }
        FaultyDevice {
            inner,
            rules: Mutex::new(Vec::new()),
            sites,
            calls: Default::default(),
            injected: Default::default(),
            lost: AtomicBool::new(false),
        }
    }

    /// Wraps `inner` with no rate-driven faults: only the rules added.
    pub fn with_rules(inner: Arc<dyn Device>, rules: impl IntoIterator<Item = Rule>) -> Self {
        let device = FaultyDevice::new(inner, &FaultInjector::disabled());
        device.rules.lock().expect("fresh lock").extend(rules);
        device
    }

    /// Adds a rule (counted from the calls already made).
    pub fn add_rule(&self, rule: Rule) {
        self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(rule);
    }

    /// Makes the next call of `operation` fail with `fault`.
    pub fn fail_next(&self, operation: Operation, fault: Fault) {
        let next = self.calls[operation as usize].load(Ordering::Relaxed) + 1;
        self.add_rule(Rule { operation, fault, trigger: Trigger::OnCall(next) });
    }

    /// How many times `operation` was called on this device so far (what
    /// [`Trigger::OnCall`] counts).
    pub fn calls(&self, operation: Operation) -> u64 {
        self.calls[operation as usize].load(Ordering::Relaxed)
    }

    /// The wrapped device.
    pub fn inner(&self) -> &Arc<dyn Device> {
        &self.inner
    }

    /// How many faults of each kind were injected.
    pub fn injected(&self, fault: Fault) -> u64 {
        self.injected[fault as usize].load(Ordering::Relaxed)
    }

    /// Every fault injected so far.
    pub fn injected_total(&self) -> u64 {
        self.injected.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    /// Whether an injected fault has lost the device.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn lost_error(&self) -> GpuError {
        GpuError::DeviceLost {
            device: self.id(),
            detail: "injected fault: the device was lost earlier".into(),
        }
    }

    /// Fails every call once the device is lost.
    fn alive(&self) -> Result<(), GpuError> {
        if self.is_lost() { Err(self.lost_error()) } else { Ok(()) }
    }

    /// Counts a call of `operation` and decides whether a fault hits it.
    fn roll(
        &self,
        operation: Operation,
        kernel: &str,
        requested_bytes: usize,
    ) -> Result<(), GpuError> {
        self.alive()?;
        let call = self.calls[operation as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let ruled = {
            let rules = self.rules.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            rules
                .iter()
                .find(|rule| {
                    rule.operation == operation
                        && match rule.trigger {
                            Trigger::OnCall(n) => call == n,
                            Trigger::FromCall(n) => call >= n,
                        }
                })
                .map(|rule| rule.fault)
        };
        let fault = ruled.or_else(|| {
            self.sites
                .iter()
                .find(|(site_operation, _, site)| *site_operation == operation && site.inject())
                .map(|(_, fault, _)| *fault)
        });
        match fault {
            None => Ok(()),
            Some(fault) => Err(self.raise(fault, operation, kernel, requested_bytes)),
        }
    }

    fn raise(
        &self,
        fault: Fault,
        operation: Operation,
        kernel: &str,
        requested_bytes: usize,
    ) -> GpuError {
        self.injected[fault as usize].fetch_add(1, Ordering::Relaxed);
        let device = self.id();
        let detail = format!("injected fault on {}", operation.name());
        tracing::warn!(%device, fault = fault.name(), operation = operation.name(), "injecting a device fault");
        match fault {
            Fault::OutOfMemory => GpuError::OutOfMemory {
                device,
                requested_bytes,
                free_bytes: self.inner.memory().map_or(0, |memory| memory.free_bytes as usize),
            },
            Fault::KernelTimeout => GpuError::KernelTimeout { device, kernel: kernel.to_owned() },
            Fault::DeviceLost => {
                self.lost.store(true, Ordering::Release);
                GpuError::DeviceLost { device, detail }
            }
            Fault::Ecc => {
                self.lost.store(true, Ordering::Release);
                GpuError::Ecc { device, detail }
            }
        }
    }
}

impl fmt::Debug for FaultyDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyDevice")
            .field("device", &self.id())
            .field("lost", &self.is_lost())
            .field("injected", &self.injected_total())
            .finish_non_exhaustive()
    }
}

impl Device for FaultyDevice {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn memory(&self) -> Result<MemoryInfo, GpuError> {
        self.alive()?;
        self.inner.memory()
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer, GpuError> {
        self.roll(Operation::Alloc, "alloc", bytes)?;
        self.inner.alloc(bytes)
    }

    fn free(&self, buffer: Buffer) -> Result<(), GpuError> {
        // Freeing on a lost device still releases the wrapped memory, so a
        // test's stand-in device does not leak; the caller sees the loss.
        let freed = self.inner.free(buffer);
        self.alive()?;
        freed
    }

    fn write(
        &self,
        stream: Stream,
        dst: Buffer,
        offset: usize,
        src: &[u8],
    ) -> Result<(), GpuError> {
        self.alive()?;
        self.inner.write(stream, dst, offset, src)
    }

    fn read(
        &self,
        stream: Stream,
        src: Buffer,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), GpuError> {
        self.roll(Operation::Sync, "read", 0)?;
        self.inner.read(stream, src, offset, dst)
    }

    fn copy(&self, stream: Stream, src: Buffer, dst: Buffer, bytes: usize) -> Result<(), GpuError> {
        self.alive()?;
        self.inner.copy(stream, src, dst, bytes)
    }

    fn create_stream(&self) -> Result<Stream, GpuError> {
        self.alive()?;
        self.inner.create_stream()
    }

    fn destroy_stream(&self, stream: Stream) -> Result<(), GpuError> {
        let destroyed = self.inner.destroy_stream(stream);
        self.alive()?;
        destroyed
    }

    fn synchronize(&self, stream: Stream) -> Result<(), GpuError> {
        self.roll(Operation::Sync, "synchronize", 0)?;
        self.inner.synchronize(stream)
    }

    fn record_event(&self, stream: Stream) -> Result<Event, GpuError> {
        self.alive()?;
        self.inner.record_event(stream)
    }

    fn wait_event(&self, stream: Stream, event: Event) -> Result<(), GpuError> {
        self.alive()?;
        self.inner.wait_event(stream, event)
    }

    fn event_synchronize(&self, event: Event) -> Result<(), GpuError> {
        self.roll(Operation::Sync, "event_synchronize", 0)?;
        self.inner.event_synchronize(event)
    }

    fn destroy_event(&self, event: Event) -> Result<(), GpuError> {
        let destroyed = self.inner.destroy_event(event);
        self.alive()?;
        destroyed
    }

    fn load_kernel(&self, kernel: Kernel) -> Result<KernelHandle, GpuError> {
        self.alive()?;
        self.inner.load_kernel(kernel)
    }

    fn compile(&self, source: &KernelSource) -> Result<KernelHandle, GpuError> {
        self.alive()?;
        self.inner.compile(source)
    }

    fn launch(
        &self,
        stream: Stream,
        kernel: KernelHandle,
        config: LaunchConfig,
        args: &[Arg],
    ) -> Result<(), GpuError> {
        self.roll(Operation::Launch, &format!("kernel {}", kernel.0), 0)?;
        self.inner.launch(stream, kernel, config, args)
    }

    fn gemm(&self, stream: Stream, gemm: &Gemm) -> Result<(), GpuError> {
        self.roll(Operation::Launch, "gemm", 0)?;
        self.inner.gemm(stream, gemm)
    }

    fn health(&self) -> Result<HealthReport, GpuError> {
        if self.is_lost() {
            return Ok(HealthReport {
                responsive: false,
                ecc_corrected: None,
                ecc_uncorrected: Some(self.injected(Fault::Ecc)),
                detail: "lost to an injected fault".into(),
            });
        }
        self.inner.health()
    }
}

#[cfg(test)]
mod tests {
    use zbmd_rt::fault::FaultPlan;

    use super::*;
    use crate::CpuDevice;

    fn cpu() -> Arc<dyn Device> {
        Arc::new(CpuDevice::with_budget(1 << 20))
    }

    #[test]
    fn a_rule_fires_on_its_call_only() {
        let rule = Rule {
            operation: Operation::Alloc,
            fault: Fault::OutOfMemory,
            trigger: Trigger::OnCall(2),
        };
        let device = FaultyDevice::with_rules(cpu(), [rule]);
        device.alloc(64).expect("first call passes");
        let error = device.alloc(64).unwrap_err();
        assert!(matches!(error, GpuError::OutOfMemory { requested_bytes: 64, .. }), "{error}");
        device.alloc(64).expect("out of memory is one-off");
        assert_eq!(device.injected(Fault::OutOfMemory), 1);
        assert!(!device.is_lost());
    }

    #[test]
    fn a_lost_device_stays_lost_and_says_so() {
        let rule = Rule {
            operation: Operation::Launch,
            fault: Fault::DeviceLost,
            trigger: Trigger::OnCall(1),
        };
        let device = FaultyDevice::with_rules(cpu(), [rule]);
        let stream = device.create_stream().unwrap();
        let kernels = crate::launch::Kernels::load(&device).unwrap();
        let error = kernels.empty(&device, stream, 1).unwrap_err();
        assert!(matches!(error, GpuError::DeviceLost { .. }));
        assert!(matches!(device.alloc(4), Err(GpuError::DeviceLost { .. })));
        assert!(matches!(device.synchronize(stream), Err(GpuError::DeviceLost { .. })));
        assert!(!device.health().unwrap().responsive);
    }

    #[test]
    fn plan_sites_replay_from_their_seed() {
        let run = |seed: u64| {
            let plan = FaultPlan::new()
                .seed(seed)
                .site(site_name(Operation::Launch, Fault::KernelTimeout), 0.3);
            let device = FaultyDevice::new(cpu(), &FaultInjector::new(plan).unwrap());
            let stream = device.create_stream().unwrap();
            let kernels = crate::launch::Kernels::load(&device).unwrap();
            (0..200).map(|_| kernels.empty(&device, stream, 1).is_err()).collect::<Vec<bool>>()
        };
        let first = run(11);
        assert_eq!(first, run(11), "the same seed injects the same faults");
        assert_ne!(first, run(12));
        let fired = first.iter().filter(|&&failed| failed).count();
        assert!((30..=90).contains(&fired), "about 30% of 200 should fail, {fired} did");
    }
}
