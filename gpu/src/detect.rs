//! Finding every device of every compiled backend.
//!
//! [`detect_devices`] asks each backend in turn (CUDA, ROCm, Vulkan, then
//! the CPU, which is always there) and never panics: a backend that is not
//! compiled in, whose driver library is missing or that sees no device is
//! reported [`BackendStatus::Absent`] with the reason. A backend that
//! panics while probing (a driver binding that panics instead of
//! returning an error) is caught and reported the same way.
//!
//! `ZBMD_GPU_BACKEND=cuda|rocm|vulkan|cpu` ([`BACKEND_ENV`]) restricts
//! detection to one backend; the others are reported "not selected".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::cpu::CpuDevice;
use crate::device::{BackendKind, Device};
use crate::error::GpuError;

/// The environment variable that picks one backend.
pub const BACKEND_ENV: &str = "ZBMD_GPU_BACKEND";

/// Whether one backend can be used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendStatus {
    /// It found this many devices.
    Available(usize),
    /// It cannot be used, and why ("not compiled in", "driver not found:
    /// ...", "no device", "not selected").
    Absent(String),
}

/// One backend's line in a [`Detection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReport {
    /// The backend.
    pub backend: BackendKind,
    /// What detection found.
    pub status: BackendStatus,
}

/// Every device found, best first (CPU last), and each backend's status.
pub struct Detection {
    /// The devices: accelerators first, then software devices (lavapipe),
    /// the CPU last.
    pub devices: Vec<Arc<dyn Device>>,
    /// One report per backend, in [`BackendKind::ALL`]'s order.
    pub backends: Vec<BackendReport>,
    /// The backend `ZBMD_GPU_BACKEND` selected, if it named one.
    pub selected: Option<BackendKind>,
    /// A problem with the selection (an unknown name), if any.
    pub warning: Option<String>,
}

impl Detection {
    /// The best device: the first one (none when `ZBMD_GPU_BACKEND`
    /// selected a backend that found nothing).
    pub fn best(&self) -> Option<&Arc<dyn Device>> {
        self.devices.first()
    }

    /// The report of one backend.
    pub fn backend(&self, backend: BackendKind) -> &BackendReport {
        self.backends
            .iter()
            .find(|report| report.backend == backend)
            .expect("every backend is reported")
    }
}

/// Lists every device of every compiled backend (or of the one
/// `ZBMD_GPU_BACKEND` names). Never panics; there is always at least one
/// device, the CPU, unless the selection excludes it.
pub fn detect_devices() -> Detection {
    match std::env::var(BACKEND_ENV) {
        Ok(name) if !name.trim().is_empty() => match BackendKind::parse(&name) {
            Some(backend) => detect(Some(backend), None),
            None => {
                let warning = format!(
                    "{BACKEND_ENV}={name:?} names no backend (cuda, rocm, vulkan, cpu): detecting all"
                );
                tracing::warn!("{warning}");
                detect(None, Some(warning))
            }
        },
        _ => detect(None, None),
    }
}

/// [`detect_devices`] with the selection given in code.
pub fn detect_backends(selected: Option<BackendKind>) -> Detection {
    detect(selected, None)
}

fn detect(selected: Option<BackendKind>, warning: Option<String>) -> Detection {
    let mut devices: Vec<Arc<dyn Device>> = Vec::new();
    let mut backends = Vec::new();
    for backend in BackendKind::ALL {
        let status = if selected.is_some_and(|selected| selected != backend) {
            BackendStatus::Absent(format!(
                "not selected ({BACKEND_ENV}={})",
                selected.expect("checked")
            ))
        } else {
            match probe(backend) {
                Ok(found) if found.is_empty() => BackendStatus::Absent("no device".into()),
                Ok(found) => {
                    let count = found.len();
                    devices.extend(found);
                    BackendStatus::Available(count)
                }
                Err(reason) => BackendStatus::Absent(reason),
            }
        };
        backends.push(BackendReport { backend, status });
    }
    // Real accelerators first, then software ones; within each, detection
    // order (the sort is stable). The CPU backend comes last of all.
    devices.sort_by_key(|device| {
        (device.info().id.backend == BackendKind::Cpu, device.info().is_software)
    });
    Detection { devices, backends, selected, warning }
}

/// One backend's devices, or why there are none.
fn probe(backend: BackendKind) -> Result<Vec<Arc<dyn Device>>, String> {
    let opened = catch_unwind(AssertUnwindSafe(|| open_all(backend)))
        .map_err(|panic| format!("the driver panicked while probing: {}", panic_message(&panic)))?;
    opened.map_err(|error| match error {
        GpuError::NotAvailable { reason, .. } => reason,
        other => other.to_string(),
    })
}

fn open_all(backend: BackendKind) -> Result<Vec<Arc<dyn Device>>, GpuError> {
    match backend {
        BackendKind::Cpu => Ok(vec![Arc::new(CpuDevice::new())]),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => crate::cuda::open_all(),
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => Err(not_compiled(backend, "cuda")),
        #[cfg(feature = "rocm")]
        BackendKind::Rocm => crate::rocm::open_all(),
        #[cfg(not(feature = "rocm"))]
        BackendKind::Rocm => Err(not_compiled(backend, "rocm")),
        #[cfg(feature = "vulkan")]
        BackendKind::Vulkan => crate::vulkan::open_all(),
        #[cfg(not(feature = "vulkan"))]
        BackendKind::Vulkan => Err(not_compiled(backend, "vulkan")),
    }
}

#[cfg(not(all(feature = "cuda", feature = "rocm", feature = "vulkan")))]
fn not_compiled(backend: BackendKind, feature: &str) -> GpuError {
    GpuError::NotAvailable {
        backend,
        reason: format!("not compiled in (build with --features {feature})"),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_found_and_comes_last() {
        let detection = detect_backends(None);
        assert_eq!(detection.devices.last().unwrap().id().backend, BackendKind::Cpu);
        assert_eq!(detection.backend(BackendKind::Cpu).status, BackendStatus::Available(1));
        assert_eq!(detection.backends.len(), BackendKind::ALL.len());
        for report in &detection.backends {
            if let BackendStatus::Absent(reason) = &report.status {
                assert!(!reason.is_empty(), "{:?} is absent without a reason", report.backend);
            }
        }
    }

    #[test]
    fn a_selection_probes_only_that_backend() {
        let detection = detect_backends(Some(BackendKind::Cpu));
        assert_eq!(detection.devices.len(), 1);
        for backend in [BackendKind::Cuda, BackendKind::Rocm, BackendKind::Vulkan] {
            let BackendStatus::Absent(reason) = &detection.backend(backend).status else {
                panic!("{backend} was probed though not selected");
            };
            assert!(reason.starts_with("not selected"), "{reason}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_compiled_in_says_so() {
        let detection = detect_backends(None);
        assert_eq!(
            detection.backend(BackendKind::Cuda).status,
            BackendStatus::Absent("not compiled in (build with --features cuda)".into())
        );
    }

    #[test]
    fn backend_names_parse_as_the_environment_spells_them() {
        assert_eq!(BackendKind::parse("CUDA"), Some(BackendKind::Cuda));
        assert_eq!(BackendKind::parse(" vulkan "), Some(BackendKind::Vulkan));
        assert_eq!(BackendKind::parse("metal"), None);
    }
}
