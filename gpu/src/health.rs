//! Per-device health: what the GPU supervisor knows of each device, and
//! where it places work.
//!
//! Each device has a window of its recent errors and a
//! [`CircuitBreaker`]. Its [`Health`] follows from them:
//!
//! | breaker   | errors in the window        | health   | placement            |
//! |-----------|-----------------------------|----------|----------------------|
//! | closed    | fewer than `degraded_after` | healthy  | preferred            |
//! | closed    | `degraded_after` or more    | degraded | if nothing healthy   |
//! | half-open | (after `open_timeout`)      | degraded | if nothing healthy   |
//! | open      | —                           | critical | never                |
//!
//! The breaker opens ("trips") on any device-class error (lost device,
//! ECC, a driver error: see [`ErrorClass::Device`]), on `critical_after`
//! errors within the window, or when the driver says the device is
//! unresponsive. Out-of-memory and bad requests are not the device's
//! fault and are not counted. After `open_timeout` the breaker is
//! half-open: actors may be placed on the device again (after healthy
//! devices); a job that succeeds there closes it, a failure opens it again.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbmd_rt::behaviour::{BreakerState, CircuitBreaker};

use crate::device::{Device, DeviceId};
use crate::error::{ErrorClass, GpuError};

/// A device's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    /// No recent trouble.
    Healthy,
    /// Recent errors, or on probation after being critical.
    Degraded,
    /// Not to be used: no work is placed here, actors on it move away.
    Critical,
}

impl Health {
    /// The value exported in metrics: 0 healthy, 1 degraded, 2 critical.
    pub fn level(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Critical => "critical",
        })
    }
}

/// When errors make a device degraded or critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// How far back errors count.
    pub window: Duration,
    /// Errors within the window that make a device degraded.
    pub degraded_after: u32,
    /// Errors within the window that make it critical.
    pub critical_after: u32,
    /// How long a critical device rests before a probe may use it again.
    pub open_timeout: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            window: Duration::from_secs(60),
            degraded_after: 1,
            critical_after: 5,
            open_timeout: Duration::from_secs(30),
        }
    }
}

impl HealthPolicy {
    fn validate(&self) -> Result<(), HealthConfigError> {
        if self.degraded_after == 0 || self.critical_after < self.degraded_after {
            return Err(HealthConfigError::Thresholds {
                degraded_after: self.degraded_after,
                critical_after: self.critical_after,
            });
        }
        if self.window.is_zero() || self.open_timeout.is_zero() {
            return Err(HealthConfigError::ZeroDuration);
        }
        Ok(())
    }
}

/// Why a [`HealthRegistry`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthConfigError {
    /// The thresholds are out of order (or zero).
    #[error(
        "health policy needs 1 <= degraded_after ({degraded_after}) <= critical_after ({critical_after})"
    )]
    Thresholds {
        /// The policy's `degraded_after`.
        degraded_after: u32,
        /// The policy's `critical_after`.
        critical_after: u32,
    },
    /// The window or the breaker's open time is zero.
    #[error("health policy needs a non-zero window and open_timeout")]
    ZeroDuration,
    /// No device to track.
    #[error("a health registry needs at least one device")]
    NoDevices,
}

/// One device as the supervisor tracks it.
pub struct DeviceHealth {
    device: Arc<dyn Device>,
    policy: HealthPolicy,
    breaker: CircuitBreaker,
    /// Times of the errors still in the window (at most `critical_after`:
    /// older ones cannot change the verdict).
    recent: Mutex<VecDeque<Instant>>,
    errors: [AtomicU64; 4],
    jobs: AtomicU64,
    placed: AtomicUsize,
}

impl DeviceHealth {
    fn new(device: Arc<dyn Device>, policy: HealthPolicy) -> Self {
        let breaker = CircuitBreaker::builder()
            .name("gpu device")
            .failure_threshold(policy.critical_after)
            .success_threshold(1)
            .half_open_probes(1)
            .open_timeout(policy.open_timeout)
            .build()
            .expect("a validated policy builds a breaker");
        DeviceHealth {
            device,
            policy,
            breaker,
            recent: Mutex::new(VecDeque::with_capacity(policy.critical_after as usize)),
            errors: Default::default(),
            jobs: AtomicU64::new(0),
            placed: AtomicUsize::new(0),
        }
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.device
    }

    /// The device's id.
    pub fn id(&self) -> DeviceId {
        self.device.id()
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        match self.breaker.state() {
            BreakerState::Open => Health::Critical,
            BreakerState::HalfOpen => Health::Degraded,
            BreakerState::Closed if self.recent_errors() >= self.policy.degraded_after => {
                Health::Degraded
            }
            BreakerState::Closed => Health::Healthy,
        }
    }

    fn recent_errors(&self) -> u32 {
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        while recent.front().is_some_and(|&at| now.duration_since(at) > self.policy.window) {
            recent.pop_front();
        }
        recent.len() as u32
    }

    /// Counts a failed operation. Returns the health it leaves the device in.
    pub fn record_error(&self, error: &GpuError) -> Health {
        let class = error.class();
        self.errors[class as usize].fetch_add(1, Ordering::Relaxed);
        if matches!(class, ErrorClass::OutOfMemory | ErrorClass::Request) {
            return self.health();
        }
        let in_window = {
            let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if recent.len() == self.policy.critical_after as usize {
                recent.pop_front();
            }
            recent.push_back(Instant::now());
            recent.len() as u32
        };
        if class == ErrorClass::Device || in_window >= self.policy.critical_after {
            if self.breaker.state() != BreakerState::Open {
                tracing::warn!(device = %self.id(), %error, "device is critical: no more work goes there");
            }
            self.breaker.trip();
        }
        self.health()
    }

    /// Counts a job that completed.
    pub fn record_success(&self) {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        if self.breaker.state() == BreakerState::HalfOpen {
            if let Ok(permit) = self.breaker.try_acquire() {
                permit.success();
            }
        }
    }

    /// Asks the driver whether the device answers; an unresponsive device
    /// is made critical. Returns the health it leaves.
    pub fn probe(&self) -> Health {
        match self.device.health() {
            Ok(report) if report.responsive => {}
            Ok(report) => {
                if self.breaker.state() != BreakerState::Open {
                    tracing::warn!(device = %self.id(), detail = %report.detail, "device unresponsive");
                }
                self.breaker.trip();
            }
            Err(error) => {
                self.record_error(&error);
            }
        }
        self.health()
    }

    /// Errors of one class seen on this device.
    pub fn errors(&self, class: ErrorClass) -> u64 {
        self.errors[class as usize].load(Ordering::Relaxed)
    }

    /// Jobs completed on this device.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Kernel actors placed on this device now.
    pub fn placed(&self) -> usize {
        self.placed.load(Ordering::Relaxed)
    }
}

/// A place taken on a device by one kernel actor: released on drop.
pub struct Placement {
    health: Arc<DeviceHealth>,
    index: usize,
}

impl Placement {
    /// The device's index in its registry.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The device's health record.
    pub fn health(&self) -> &Arc<DeviceHealth> {
        &self.health
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.health.placed.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every device the supervisor may place work on, with its health.
pub struct HealthRegistry {
    devices: Vec<Arc<DeviceHealth>>,
}

impl HealthRegistry {
    /// Tracks `devices` under `policy`, in their order of preference
    /// (detection's order: accelerators first, the CPU last).
    pub fn new(
        devices: Vec<Arc<dyn Device>>,
        policy: HealthPolicy,
    ) -> Result<Self, HealthConfigError> {
        policy.validate()?;
        if devices.is_empty() {
            return Err(HealthConfigError::NoDevices);
        }
        let devices =
            devices.into_iter().map(|device| Arc::new(DeviceHealth::new(device, policy))).collect();
        Ok(HealthRegistry { devices })
    }

    /// The devices, in order of preference.
    pub fn devices(&self) -> &[Arc<DeviceHealth>] {
        &self.devices
    }

    /// Picks a device for a new kernel actor: the first healthy device with
    /// the fewest actors, else a degraded one; never a critical one, nor one
    /// in `avoid` (devices an actor could not open) while another will do.
    pub fn place(&self, avoid: &[DeviceId]) -> Option<Placement> {
        let candidates = || {
            self.devices
                .iter()
                .enumerate()
                .filter(|(_, device)| device.health() != Health::Critical)
        };
        let best = |avoiding: bool| {
            candidates()
                .filter(|(_, device)| !(avoiding && avoid.contains(&device.id())))
                .min_by_key(|(index, device)| (device.health(), device.placed(), *index))
                .map(|(index, device)| (index, device.clone()))
        };
        let (index, health) = best(true).or_else(|| best(false))?;
        health.placed.fetch_add(1, Ordering::Relaxed);
        Some(Placement { health, index })
    }

    /// Whether every device is critical (nothing could be placed now).
    pub fn place_would_fail(&self) -> bool {
        self.devices.iter().all(|device| device.health() == Health::Critical)
    }

    /// Probes every device's driver, making unresponsive ones critical.
    pub fn probe_all(&self) {
        for device in &self.devices {
            device.probe();
        }
    }

    /// The registry in Prometheus' text format: per device its health
    /// (0 healthy, 1 degraded, 2 critical), errors by class, completed jobs
    /// and placed actors.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        let _ = writeln!(text, "# HELP zbmd_gpu_device_health 0 healthy, 1 degraded, 2 critical");
        let _ = writeln!(text, "# TYPE zbmd_gpu_device_health gauge");
        for device in &self.devices {
            let _ = writeln!(
                text,
                "zbmd_gpu_device_health{{device=\"{}\"}} {}",
                device.id(),
                device.health().level()
            );
        }
        let _ = writeln!(text, "# HELP zbmd_gpu_device_errors_total device errors seen, by class");
        let _ = writeln!(text, "# TYPE zbmd_gpu_device_errors_total counter");
        for device in &self.devices {
            for class in [
                ErrorClass::Transient,
                ErrorClass::OutOfMemory,
                ErrorClass::Device,
                ErrorClass::Request,
            ] {
                let _ = writeln!(
                    text,
                    "zbmd_gpu_device_errors_total{{device=\"{}\",class=\"{}\"}} {}",
                    device.id(),
                    class_label(class),
                    device.errors(class)
                );
            }
        }
        let _ = writeln!(text, "# HELP zbmd_gpu_device_jobs_total jobs completed per device");
        let _ = writeln!(text, "# TYPE zbmd_gpu_device_jobs_total counter");
        for device in &self.devices {
            let _ = writeln!(
                text,
                "zbmd_gpu_device_jobs_total{{device=\"{}\"}} {}",
                device.id(),
                device.jobs()
            );
        }
        let _ = writeln!(text, "# HELP zbmd_gpu_device_actors kernel actors placed per device");
        let _ = writeln!(text, "# TYPE zbmd_gpu_device_actors gauge");
        for device in &self.devices {
            let _ = writeln!(
                text,
                "zbmd_gpu_device_actors{{device=\"{}\"}} {}",
                device.id(),
                device.placed()
            );
        }
        text
    }
}

fn class_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Transient => "transient",
        ErrorClass::OutOfMemory => "oom",
        ErrorClass::Device => "device",
        ErrorClass::Request => "request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuDevice;
    use crate::device::BackendKind;

    fn registry(devices: u32, policy: HealthPolicy) -> HealthRegistry {
        let devices = (0..devices)
            .map(|ordinal| Arc::new(CpuDevice::with_ordinal(ordinal, 1 << 20)) as Arc<dyn Device>)
            .collect();
        HealthRegistry::new(devices, policy).unwrap()
    }

    fn error(ordinal: u32, class: ErrorClass) -> GpuError {
        let device = DeviceId::new(BackendKind::Cpu, ordinal);
        match class {
            ErrorClass::Transient => GpuError::KernelTimeout { device, kernel: "k".into() },
            ErrorClass::OutOfMemory => {
                GpuError::OutOfMemory { device, requested_bytes: 1, free_bytes: 0 }
            }
            ErrorClass::Device => GpuError::DeviceLost { device, detail: "gone".into() },
            ErrorClass::Request => GpuError::invalid(device, "bad"),
        }
    }

    #[test]
    fn errors_in_the_window_degrade_then_make_critical() {
        let policy =
            HealthPolicy { degraded_after: 2, critical_after: 3, ..HealthPolicy::default() };
        let devices = registry(1, policy);
        let device = &devices.devices()[0];
        assert_eq!(device.record_error(&error(0, ErrorClass::Transient)), Health::Healthy);
        assert_eq!(device.record_error(&error(0, ErrorClass::Transient)), Health::Degraded);
        assert_eq!(
            device.record_error(&error(0, ErrorClass::OutOfMemory)),
            Health::Degraded,
            "not counted"
        );
        assert_eq!(device.record_error(&error(0, ErrorClass::Transient)), Health::Critical);
        assert_eq!(device.errors(ErrorClass::Transient), 3);
        assert_eq!(device.errors(ErrorClass::OutOfMemory), 1);
    }

    #[test]
    fn one_device_error_makes_critical_and_placement_avoids_it() {
        let devices = registry(2, HealthPolicy::default());
        let first = devices.place(&[]).unwrap();
        assert_eq!(first.index(), 0, "the first healthy device is preferred");
        devices.devices()[0].record_error(&error(0, ErrorClass::Device));
        assert_eq!(devices.devices()[0].health(), Health::Critical);
        for _ in 0..3 {
            assert_eq!(devices.place(&[]).unwrap().index(), 1);
        }
        devices.devices()[1].record_error(&error(1, ErrorClass::Device));
        assert!(devices.place(&[]).is_none(), "nothing is placed on critical devices");
    }

    #[test]
    fn placement_spreads_actors_and_steps_off_the_device_it_leaves() {
        let devices = registry(2, HealthPolicy::default());
        let a = devices.place(&[]).unwrap();
        let b = devices.place(&[]).unwrap();
        assert_eq!((a.index(), b.index()), (0, 1), "fewest actors first");
        drop(b);
        let away = devices.place(&[devices.devices()[0].id()]).unwrap();
        assert_eq!(away.index(), 1);
        assert!(devices.prometheus().contains("zbmd_gpu_device_actors{device=\"cpu:0\"} 1"));
    }

    #[test]
    fn a_critical_device_is_probed_after_its_rest_and_closes_on_success() {
        let policy =
            HealthPolicy { open_timeout: Duration::from_millis(20), ..HealthPolicy::default() };
        let devices = registry(1, policy);
        let device = &devices.devices()[0];
        device.record_error(&error(0, ErrorClass::Device));
        assert_eq!(device.health(), Health::Critical);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(device.health(), Health::Degraded, "half-open: on probation");
        device.record_success();
        // Closed again; the device error is still in the window.
        assert_eq!(device.breaker.state(), BreakerState::Closed);
        assert!(devices.prometheus().contains("zbmd_gpu_device_health{device=\"cpu:0\"} 1"));
    }

    #[test]
    fn a_bad_policy_is_refused() {
        let policy =
            HealthPolicy { degraded_after: 3, critical_after: 2, ..HealthPolicy::default() };
        let devices: Vec<Arc<dyn Device>> = vec![Arc::new(CpuDevice::with_budget(1024))];
        let refused = HealthRegistry::new(devices.clone(), policy).err();
        let thresholds = HealthConfigError::Thresholds { degraded_after: 3, critical_after: 2 };
        assert_eq!(refused, Some(thresholds));
        let no_window = HealthPolicy { window: Duration::ZERO, ..HealthPolicy::default() };
        let refused = HealthRegistry::new(devices, no_window).err();
        assert_eq!(refused, Some(HealthConfigError::ZeroDuration));
        let refused = HealthRegistry::new(Vec::new(), HealthPolicy::default()).err();
        assert_eq!(refused, Some(HealthConfigError::NoDevices));
    }
}
