//! The checks and the parameter layout of a native kernel launch, the same
//! for every vendor: a shape within the device's limits, at most
//! [`KERNEL_ARGS_MAX`] arguments, a standard kernel's buffers-then-scalars
//! order, and [`KERNEL_ARGS_MAX`] zeroed 64-byte slots behind the
//! parameter pointers (see [`LaunchParams`]).

use super::{ARG_SLOT_WORDS, DevicePtr, KERNEL_ARGS_MAX, LaunchParams};
use crate::error::GpuError;
use crate::handle::{Arg, Buffer, LaunchConfig};
use crate::info::DeviceInfo;
use crate::kernel::Kernel;

/// The argument slots behind a launch's parameter pointers.
pub(super) type ArgSlots = [[u64; ARG_SLOT_WORDS]; KERNEL_ARGS_MAX];

/// Checks a launch of kernel `name` (the standard kernel `standard`, if it
/// is one) on `device` before it reaches the driver.
pub(super) fn check_launch(
    device: &DeviceInfo,
    name: &str,
    standard: Option<Kernel>,
    config: &LaunchConfig,
    args: &[Arg],
) -> Result<(), GpuError> {
    let per_block: u64 = config.block.iter().map(|&b| u64::from(b)).product();
    if per_block == 0 || config.grid.contains(&0) {
        return Err(GpuError::invalid(device.id, format!("{name}: empty launch shape {config:?}")));
    }
    if per_block > u64::from(device.max_block_threads) {
        return Err(GpuError::invalid(
            device.id,
            format!(
                "{name}: {per_block} threads per block exceed the device's {}",
                device.max_block_threads
            ),
        ));
    }
    if args.len() > KERNEL_ARGS_MAX {
        return Err(GpuError::LimitReached {
            device: device.id,
            what: "kernel arguments",
            limit: KERNEL_ARGS_MAX,
        });
    }
    if let Some(standard) = standard {
        let (buffers, scalars) = standard.arity();
        let kinds_match = args.len() == buffers + scalars
            && args
                .iter()
                .enumerate()
                .all(|(i, arg)| matches!(arg, Arg::Buffer(_)) == (i < buffers));
        if !kinds_match {
            return Err(GpuError::invalid(
                device.id,
                format!("{name} takes {buffers} buffers then {scalars} scalars, got {args:?}"),
            ));
        }
    }
    Ok(())
}

/// Writes `args` into `slots` (a buffer as its device address from
/// `address`, a scalar in the low bytes) and returns the parameter array
/// pointing at every slot, used or not. At most [`KERNEL_ARGS_MAX`]
/// arguments are read ([`check_launch`] refuses more).
pub(super) fn launch_params(
    slots: &mut ArgSlots,
    args: &[Arg],
    address: impl Fn(Buffer) -> Result<DevicePtr, GpuError>,
) -> Result<LaunchParams, GpuError> {
    for (slot, arg) in slots.iter_mut().zip(args) {
        slot[0] = match *arg {
            Arg::Buffer(buffer) => address(buffer)?,
            Arg::U32(value) => u64::from(value),
            Arg::F32(value) => u64::from(value.to_bits()),
        };
    }
    let mut params: LaunchParams = [std::ptr::null_mut(); KERNEL_ARGS_MAX];
    for (param, slot) in params.iter_mut().zip(slots.iter_mut()) {
        *param = slot.as_mut_ptr().cast();
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::{BackendKind, DeviceId};

    fn device() -> DeviceInfo {
        DeviceInfo {
            id: DeviceId::new(BackendKind::Cuda, 0),
            name: "test".into(),
            memory_total_bytes: 1 << 30,
            capability: "sm_90".into(),
            is_software: false,
            max_block_threads: 1024,
        }
    }

    fn buffer(id: u64) -> Arg {
        Arg::Buffer(Buffer { id, bytes: 16 })
    }

    #[test]
    fn a_shape_must_be_nonempty_and_within_the_block_limit() {
        let device = device();
        let ok = LaunchConfig { grid: [4, 1, 1], block: [32, 32, 1] };
        assert_eq!(check_launch(&device, "k", None, &ok, &[]), Ok(()));
        for bad in [
            LaunchConfig { grid: [0, 1, 1], block: [32, 1, 1] },
            LaunchConfig { grid: [1, 1, 1], block: [32, 0, 1] },
            LaunchConfig { grid: [1, 1, 1], block: [32, 32, 2] },
        ] {
            let error = check_launch(&device, "k", None, &bad, &[]).unwrap_err();
            assert!(matches!(error, GpuError::InvalidArgument { .. }), "{bad:?}: {error:?}");
        }
    }

    #[test]
    fn too_many_arguments_reach_the_named_limit() {
        let config = LaunchConfig::linear(1, 1);
        let args = vec![Arg::U32(0); KERNEL_ARGS_MAX + 1];
        assert_eq!(
            check_launch(&device(), "k", None, &config, &args),
            Err(GpuError::LimitReached {
                device: device().id,
                what: "kernel arguments",
                limit: KERNEL_ARGS_MAX
            })
        );
        let fits = vec![Arg::U32(0); KERNEL_ARGS_MAX];
        assert_eq!(check_launch(&device(), "k", None, &config, &fits), Ok(()));
    }

    #[test]
    fn a_standard_kernel_takes_its_buffers_then_its_scalars() {
        let config = LaunchConfig::linear(1, 1);
        let right = [buffer(1), buffer(2), buffer(3), Arg::U32(4)];
        let check =
            |args: &[Arg]| check_launch(&device(), "add", Some(Kernel::VectorAdd), &config, args);
        assert_eq!(check(&right), Ok(()));
        let swapped = [buffer(1), buffer(2), Arg::U32(4), buffer(3)];
        let short = [buffer(1), buffer(2), buffer(3)];
        for wrong in [&swapped[..], &short[..]] {
            assert!(matches!(check(wrong), Err(GpuError::InvalidArgument { .. })), "{wrong:?}");
        }
        // A user kernel's arguments are its own business.
        assert_eq!(check_launch(&device(), "user", None, &config, &swapped), Ok(()));
    }

    #[test]
    fn every_slot_is_passed_zeroed_with_arguments_in_the_low_bytes() {
        let mut slots = ArgSlots::default();
        let args = [buffer(7), Arg::U32(5), Arg::F32(1.5)];
        let params = launch_params(&mut slots, &args, |b| Ok(0x1000 + b.id)).unwrap();
        assert_eq!(slots[0][0], 0x1007);
        assert_eq!(slots[1][0], 5);
        assert_eq!(slots[2][0], u64::from(1.5f32.to_bits()));
        assert!(slots[3..].iter().all(|slot| slot.iter().all(|&w| w == 0)));
        for (param, slot) in params.iter().zip(&slots) {
            assert_eq!(*param as *const u64, slot.as_ptr());
        }
        let missing = GpuError::invalid(device().id, "gone");
        let failed = launch_params(&mut slots, &args, |_| Err(missing.clone()));
        assert_eq!(failed, Err(missing));
    }
}
