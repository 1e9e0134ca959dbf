//! The Vulkan objects every other part shares: the loaded instance, the
//! logical device with its one compute queue, timeline semaphores, and the
//! mapping from `vk::Result` to [`GpuError`]. Each owner destroys its
//! object on drop, and holds an `Arc` of what it was made from, so
//! destruction runs in the reverse order of creation.

use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use ash::vk;

use crate::device::{BackendKind, DeviceId};
use crate::error::GpuError;

/// The loaded Vulkan library and an instance of it.
pub(super) struct Instance {
    /// Keeps the loader library mapped while `raw` lives.
    _entry: ash::Entry,
    pub raw: ash::Instance,
}

impl Instance {
    /// Loads the Vulkan loader and creates an instance for API 1.2 (timeline
    /// semaphores are core there). A missing loader or driver is
    /// [`GpuError::NotAvailable`].
    pub fn create() -> Result<Arc<Instance>, GpuError> {
        let not_available =
            |reason: String| GpuError::NotAvailable { backend: BackendKind::Vulkan, reason };
        // SAFETY: loading runs the loader library's initialisers; libvulkan is
        // the system's Vulkan loader, which is safe to load and keep loaded.
        let entry = unsafe { ash::Entry::load() }
            .map_err(|error| not_available(format!("driver not found: {error}")))?;
        let app = vk::ApplicationInfo::default()
            .application_name(c"zbmd")
            .api_version(vk::API_VERSION_1_2);
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: `info` and `app` are valid, fully initialised and outlive the
        // call; no layers or extensions are asked for.
        let raw = unsafe { entry.create_instance(&info, None) }.map_err(|result| {
            not_available(format!("driver not found: vkCreateInstance: {result:?}"))
        })?;
        Ok(Arc::new(Instance { _entry: entry, raw }))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every object made from this instance holds an `Arc` of it,
        // so none is left when the last one drops.
        unsafe { self.raw.destroy_instance(None) };
    }
}

/// A physical device zbmd can use: Vulkan 1.2+, a compute queue family,
/// timeline semaphores.
pub(super) struct Candidate {
    pub physical: vk::PhysicalDevice,
    pub properties: vk::PhysicalDeviceProperties,
    pub queue_family: u32,
    pub has_budget: bool,
}

/// Checks one physical device; `Err` says why it cannot be used.
pub(super) fn inspect(
    instance: &Instance,
    physical: vk::PhysicalDevice,
) -> Result<Candidate, String> {
    // SAFETY: `physical` came from this instance's enumeration.
    let properties = unsafe { instance.raw.get_physical_device_properties(physical) };
    if vk::api_version_minor(properties.api_version) < 2
        && vk::api_version_major(properties.api_version) == 1
    {
        return Err("Vulkan 1.2 is needed (timeline semaphores)".into());
    }
    // SAFETY: as above.
    let families = unsafe { instance.raw.get_physical_device_queue_family_properties(physical) };
    let queue_family = families
        .iter()
        .position(|family| family.queue_flags.contains(vk::QueueFlags::COMPUTE))
        .ok_or("no compute queue")? as u32;
    let mut timeline = vk::PhysicalDeviceTimelineSemaphoreFeatures::default();
    let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut timeline);
    // SAFETY: as above; the chained struct lives through the call.
    unsafe { instance.raw.get_physical_device_features2(physical, &mut features) };
    if timeline.timeline_semaphore == vk::FALSE {
        return Err("no timeline semaphores".into());
    }
    // SAFETY: as above.
    let extensions = unsafe { instance.raw.enumerate_device_extension_properties(physical) }
        .map_err(|result| format!("vkEnumerateDeviceExtensionProperties: {result:?}"))?;
    let has_budget = extensions.iter().any(|extension| {
        extension.extension_name_as_c_str().ok() == Some(ash::ext::memory_budget::NAME)
    });
    Ok(Candidate { physical, properties, queue_family, has_budget })
}

/// The logical device, its compute queue, and what zbmd reads of the
/// physical device once.
pub(super) struct Shared {
    pub instance: Arc<Instance>,
    pub physical: vk::PhysicalDevice,
    pub raw: ash::Device,
    /// Queue submission needs external synchronisation.
    pub queue: Mutex<vk::Queue>,
    pub queue_family: u32,
    pub id: DeviceId,
    pub memory: vk::PhysicalDeviceMemoryProperties,
    pub limits: vk::PhysicalDeviceLimits,
    pub has_budget: bool,
}

impl Shared {
    /// Creates the logical device with one compute queue and timeline
    /// semaphores on.
    pub fn create(
        instance: Arc<Instance>,
        candidate: &Candidate,
        id: DeviceId,
    ) -> Result<Arc<Shared>, GpuError> {
        let priorities = [1.0_f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(candidate.queue_family)
            .queue_priorities(&priorities)];
        let budget: [*const std::ffi::c_char; 1] = [ash::ext::memory_budget::NAME.as_ptr()];
        let extensions: &[*const std::ffi::c_char] =
            if candidate.has_budget { &budget } else { &[] };
        let mut timeline =
            vk::PhysicalDeviceTimelineSemaphoreFeatures::default().timeline_semaphore(true);
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(extensions)
            .push_next(&mut timeline);
        // SAFETY: the physical device is this instance's; the queue family
        // exists (from `inspect`); the extension and feature were reported
        // as supported; every pointer in `info` outlives the call.
        let raw = unsafe { instance.raw.create_device(candidate.physical, &info, None) }
            .map_err(|result| vk_error(id, "vkCreateDevice", result))?;
        // SAFETY: queue 0 of this family was created with the device.
        let queue = unsafe { raw.get_device_queue(candidate.queue_family, 0) };
        // SAFETY: the physical device is this instance's.
        let memory =
            unsafe { instance.raw.get_physical_device_memory_properties(candidate.physical) };
        Ok(Arc::new(Shared {
            physical: candidate.physical,
            raw,
            queue: Mutex::new(queue),
            queue_family: candidate.queue_family,
            id,
            memory,
            limits: candidate.properties.limits,
            has_budget: candidate.has_budget,
            instance,
        }))
    }

    /// The device-local heaps' indices.
    pub fn device_local_heaps(&self) -> impl Iterator<Item = usize> + '_ {
        self.memory.memory_heaps[..self.memory.memory_heap_count as usize]
            .iter()
            .enumerate()
            .filter(|(_, heap)| heap.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|(index, _)| index)
    }

    /// Bytes free in the device-local heaps, as VK_EXT_memory_budget says.
    pub fn budget_free(&self) -> u64 {
        let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
        let mut properties = vk::PhysicalDeviceMemoryProperties2::default().push_next(&mut budget);
        // SAFETY: the extension is supported and enabled (`has_budget`), and
        // the chained struct lives through the call.
        unsafe {
            self.instance.raw.get_physical_device_memory_properties2(self.physical, &mut properties)
        };
        self.device_local_heaps()
            .map(|heap| budget.heap_budget[heap].saturating_sub(budget.heap_usage[heap]))
            .sum()
    }

    /// Submits an empty batch with a fence and waits for it: whether the
    /// queue still answers.
    pub fn ping(&self, timeout_ns: u64) -> Result<(), GpuError> {
        // SAFETY: a default fence create info is valid.
        let fence = unsafe { self.raw.create_fence(&vk::FenceCreateInfo::default(), None) }
            .map_err(|result| vk_error(self.id, "vkCreateFence", result))?;
        let submitted = {
            let queue = self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // SAFETY: the queue is locked; an empty submit is valid and the
            // fence is unsignalled and unused elsewhere.
            unsafe { self.raw.queue_submit(*queue, &[vk::SubmitInfo::default()], fence) }
        };
        let waited = submitted.and_then(|()| {
            // SAFETY: the fence is this device's and stays alive through the wait.
            unsafe { self.raw.wait_for_fences(&[fence], true, timeout_ns) }
        });
        if waited.is_ok() || submitted.is_err() {
            // SAFETY: the fence is signalled (wait succeeded) or was never
            // submitted, so no queue operation refers to it.
            unsafe { self.raw.destroy_fence(fence, None) };
        } else {
            // A timed-out fence may still be signalled later: leak it rather
            // than destroy it while the queue may use it.
        }
        match waited {
            Err(vk::Result::TIMEOUT) => {
                Err(GpuError::KernelTimeout { device: self.id, kernel: "health ping".into() })
            }
            Err(result) => Err(vk_error(self.id, "health ping", result)),
            Ok(()) => Ok(()),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: every object made from this device holds an `Arc` of it, so
        // none is left; waiting idle first lets in-flight work finish.
        unsafe {
            let _ = self.raw.device_wait_idle();
            self.raw.destroy_device(None);
        }
    }
}

/// A timeline semaphore: one per stream, signalled with 1, 2, ... as its
/// batches finish. Events and other streams' waits hold an `Arc` of it.
pub(super) struct Timeline {
    pub shared: Arc<Shared>,
    pub raw: vk::Semaphore,
}

impl Timeline {
    /// A timeline semaphore at 0.
    pub fn create(shared: &Arc<Shared>) -> Result<Arc<Timeline>, GpuError> {
        let mut kind = vk::SemaphoreTypeCreateInfo::default()
            .semaphore_type(vk::SemaphoreType::TIMELINE)
            .initial_value(0);
        let info = vk::SemaphoreCreateInfo::default().push_next(&mut kind);
        // SAFETY: timeline semaphores were enabled at device creation.
        let raw = unsafe { shared.raw.create_semaphore(&info, None) }
            .map_err(|result| vk_error(shared.id, "vkCreateSemaphore", result))?;
        Ok(Arc::new(Timeline { shared: Arc::clone(shared), raw }))
    }

    /// The value reached so far.
    pub fn reached(&self) -> Result<u64, GpuError> {
        // SAFETY: `raw` is a live timeline semaphore of this device.
        unsafe { self.shared.raw.get_semaphore_counter_value(self.raw) }
            .map_err(|result| vk_error(self.shared.id, "vkGetSemaphoreCounterValue", result))
    }

    /// Blocks until the value reaches `value`; `Ok(false)` on timeout.
    pub fn wait(&self, value: u64, timeout_ns: u64) -> Result<bool, GpuError> {
        let semaphores = [self.raw];
        let values = [value];
        let info = vk::SemaphoreWaitInfo::default().semaphores(&semaphores).values(&values);
        // SAFETY: `raw` is a live timeline semaphore; the arrays outlive the call.
        match unsafe { self.shared.raw.wait_semaphores(&info, timeout_ns) } {
            Ok(()) => Ok(true),
            Err(vk::Result::TIMEOUT) => Ok(false),
            Err(result) => Err(vk_error(self.shared.id, "vkWaitSemaphores", result)),
        }
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        // SAFETY: a timeline is dropped only when no stream, event or pending
        // batch holds it; batches that signalled or waited on it have
        // finished (streams wait for their work before dropping theirs).
        unsafe { self.shared.raw.destroy_semaphore(self.raw, None) };
    }
}

/// Maps a failed Vulkan call to a [`GpuError`]: memory exhaustion to
/// `OutOfMemory`, `ERROR_DEVICE_LOST` to `DeviceLost`, the rest to `Driver`.
pub(super) fn vk_error(device: DeviceId, call: &str, result: vk::Result) -> GpuError {
    match result {
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY => {
            GpuError::OutOfMemory { device, requested_bytes: 0, free_bytes: 0 }
        }
        vk::Result::ERROR_DEVICE_LOST => {
            GpuError::DeviceLost { device, detail: format!("{call}: VK_ERROR_DEVICE_LOST") }
        }
        other => GpuError::Driver { device, code: format!("VK_{other:?}"), detail: call.into() },
    }
}

/// The device's name as the driver reports it.
pub(super) fn device_name(properties: &vk::PhysicalDeviceProperties) -> String {
    properties
        .device_name_as_c_str()
        .map(CStr::to_string_lossy)
        .map(|name| name.into_owned())
        .unwrap_or_else(|_| "unnamed Vulkan device".into())
}
