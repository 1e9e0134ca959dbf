//! What can go wrong on a device, and what each failure means for the
//! caller: retry in place, shrink the work, move to another device, or fix
//! the request.

use std::fmt;

use crate::info::{BackendKind, DeviceId};

/// A device operation's failure.
///
/// [`GpuError::class`] sorts every variant into the four things a caller
/// (a kernel actor, its supervisor, the trainer) does about it; see
/// [`ErrorClass`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    /// The backend cannot be used on this machine: not compiled in, its
    /// driver library is missing, or it sees no device. A value, never a
    /// panic.
    #[error("{backend} not available: {reason}")]
    NotAvailable {
        /// The backend asked for.
        backend: BackendKind,
        /// Why, in words ("not compiled in", "driver not found", "no device").
        reason: String,
    },
    /// An allocation did not fit in the device's memory. Recoverable: free
    /// something or ask for less (the trainer halves its micro-batch).
    #[error("{device}: out of memory: asked for {requested_bytes} bytes with {free_bytes} free")]
    OutOfMemory {
        /// The device.
        device: DeviceId,
        /// Bytes asked for.
        requested_bytes: usize,
        /// Bytes free when it failed, as the backend reports them.
        free_bytes: usize,
    },
    /// The device stopped answering (fell off the bus, driver reset, Vulkan's
    /// `ERROR_DEVICE_LOST`). Everything on it is gone.
    #[error("{device}: device lost: {detail}")]
    DeviceLost {
        /// The device.
        device: DeviceId,
        /// What the backend said.
        detail: String,
    },
    /// An uncorrectable memory error (ECC) on the device.
    #[error("{device}: uncorrectable ECC error: {detail}")]
    Ecc {
        /// The device.
        device: DeviceId,
        /// What the backend said.
        detail: String,
    },
    /// A kernel or a wait did not finish in time (a watchdog, a fence
    /// timeout). The device may still be fine: worth a bounded retry.
    #[error("{device}: kernel `{kernel}` timed out")]
    KernelTimeout {
        /// The device.
        device: DeviceId,
        /// The kernel's name.
        kernel: String,
    },
    /// The device was briefly unable to take the work (launch resources,
    /// a busy queue). Worth a bounded retry.
    #[error("{device}: busy: {detail}")]
    Busy {
        /// The device.
        device: DeviceId,
        /// What the backend said.
        detail: String,
    },
    /// A kernel's source did not compile for this backend.
    #[error("{device}: kernel `{kernel}` failed to compile: {log}")]
    Compile {
        /// The device.
        device: DeviceId,
        /// The kernel's name.
        kernel: String,
        /// The compiler's log.
        log: String,
    },
    /// The request itself is wrong: a freed buffer, a size mismatch, a
    /// kernel source for another backend. Retrying cannot help.
    #[error("{device}: invalid argument: {detail}")]
    InvalidArgument {
        /// The device.
        device: DeviceId,
        /// What is wrong.
        detail: String,
    },
    /// A bound was reached (buffers, streams, events per device).
    #[error("{device}: limit reached: at most {limit} {what}")]
    LimitReached {
        /// The device.
        device: DeviceId,
        /// What ran out ("buffers", "streams", ...).
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// Any other driver error, with the backend's own code.
    #[error("{device}: {code}: {detail}")]
    Driver {
        /// The device.
        device: DeviceId,
        /// The backend's error name (`CUDA_ERROR_LAUNCH_FAILED`, `VK_ERROR_...`).
        code: String,
        /// What the backend said.
        detail: String,
    },
}

/// What a caller does about a [`GpuError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Retry on the same device, a bounded number of times with backoff.
    Transient,
    /// Recoverable by asking for less memory; the device is healthy.
    OutOfMemory,
    /// The device is broken or gone: stop using it and move the work to
    /// another device (a kernel actor crashes; its supervisor migrates it).
    Device,
    /// The request is wrong or the backend is absent: report it, retrying
    /// anywhere gives the same answer.
    Request,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::OutOfMemory => "out of memory",
            ErrorClass::Device => "device failure",
            ErrorClass::Request => "bad request",
        })
    }
}

impl GpuError {
    /// Which of the four responses this failure calls for.
    pub fn class(&self) -> ErrorClass {
        match self {
            GpuError::KernelTimeout { .. } | GpuError::Busy { .. } => ErrorClass::Transient,
            GpuError::OutOfMemory { .. } => ErrorClass::OutOfMemory,
            GpuError::DeviceLost { .. } | GpuError::Ecc { .. } | GpuError::Driver { .. } => {
                ErrorClass::Device
            }
            GpuError::NotAvailable { .. }
            | GpuError::Compile { .. }
            | GpuError::InvalidArgument { .. }
            | GpuError::LimitReached { .. } => ErrorClass::Request,
        }
    }

    /// The device the error happened on, if it names one.
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            GpuError::NotAvailable { .. } => None,
            GpuError::OutOfMemory { device, .. }
            | GpuError::DeviceLost { device, .. }
            | GpuError::Ecc { device, .. }
            | GpuError::KernelTimeout { device, .. }
            | GpuError::Busy { device, .. }
            | GpuError::Compile { device, .. }
            | GpuError::InvalidArgument { device, .. }
            | GpuError::LimitReached { device, .. }
            | GpuError::Driver { device, .. } => Some(*device),
        }
    }

    /// Shorthand for [`GpuError::InvalidArgument`].
    pub fn invalid(device: DeviceId, detail: impl Into<String>) -> Self {
        GpuError::InvalidArgument { device, detail: detail.into() }
    }
}
