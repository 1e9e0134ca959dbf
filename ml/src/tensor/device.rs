//! Tensors on zbmd-gpu devices: [`DeviceData`], the owner of one device
//! buffer behind [`Storage::Device`](super::Storage::Device), and
//! [`MatmulBackend`], the seam through which a [`Graph`](super::Graph) sends
//! its matrix products somewhere other than the host's `gemm`.
//!
//! The one backend here, [`PoolMatmul`], runs each product as a job on a
//! [`GpuPool`]: the pool's kernel actors retry transient device errors and
//! move to a healthy device when theirs is lost, so a training step survives
//! a device dying under it. It is offload, not residency: both operands
//! travel host → device and the result device → host for every product, and
//! every other graph operation (elementwise, softmax, reductions) stays on
//! the host. It pays off when products dominate and the device is much
//! faster than the host; for small models the transfers cost more than the
//! arithmetic saves.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use half::{bf16, f16};

use zbmd_gpu::{
    Buffer, Device, DeviceId, ErrorClass, GpuError, GpuPool, Job, JobError, Op, Stream,
};

use super::{DType, HostData, TensorError};

/// One buffer of elements on a device, shared between the tensors (views)
/// that use it and freed on the device when the last of them is dropped.
///
/// The elements keep their dtype: an `f16` or `bf16` tensor takes two bytes
/// an element on the device as on the host, and comes back the same bits.
#[derive(Clone)]
pub struct DeviceData {
    owner: Arc<Owner>,
}

/// The buffer and the device that holds it; frees the buffer on drop.
struct Owner {
    device: Arc<dyn Device>,
    buffer: Buffer,
    dtype: DType,
    len: usize,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Drop cannot report: a device that is already lost has taken the
        // buffer with it, and anything else is a bug worth a log line.
        if let Err(error) = self.device.free(self.buffer) {
            tracing::warn!(device = %self.device.id(), %error, "freeing a tensor's device buffer failed");
        }
    }
}

impl fmt::Debug for DeviceData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceData")
            .field("device", &self.device_id())
            .field("buffer", &self.owner.buffer)
            .field("dtype", &self.owner.dtype)
            .field("len", &self.owner.len)
            .finish()
    }
}

impl DeviceData {
    /// Copies elements `range` of `host` into a fresh buffer on `device`, in
    /// their own dtype, and waits until the copy is complete.
    pub(crate) fn upload(
        device: &Arc<dyn Device>,
        host: &HostData,
        range: Range<usize>,
    ) -> Result<DeviceData, TensorError> {
        const OP: &str = "to_device";
        let bytes: &[u8] = match host {
            HostData::F32(values) => bytemuck::cast_slice(&values[range.clone()]),
            HostData::F16(values) => bytemuck::cast_slice(&values[range.clone()]),
            HostData::BF16(values) => bytemuck::cast_slice(&values[range.clone()]),
        };
        // Some backends refuse zero-byte buffers; an empty tensor takes one
        // word it never uses.
        let buffer = device.alloc(bytes.len().max(4)).map_err(|e| TensorError::device(OP, &e))?;
        // Owned from here, so every early return below frees the buffer.
        let owner =
            Owner { device: Arc::clone(device), buffer, dtype: host.dtype(), len: range.len() };
        let data = DeviceData { owner: Arc::new(owner) };
        if !bytes.is_empty() {
            on_stream(&**device, OP, |stream| device.write(stream, buffer, 0, bytes))?;
        }
        Ok(data)
    }

    /// Reads `len` elements from element `offset` into host memory, in the
    /// buffer's dtype.
    pub(crate) fn download(&self, offset: usize, len: usize) -> Result<HostData, TensorError> {
        assert!(
            offset + len <= self.owner.len,
            "to_host: elements {offset}..{} are outside the buffer's {}",
            offset + len,
            self.owner.len
        );
        Ok(match self.owner.dtype {
            DType::F32 => HostData::F32(Arc::new(self.read(offset, vec![0.0; len])?)),
            DType::F16 => HostData::F16(Arc::new(self.read(offset, vec![f16::ZERO; len])?)),
            DType::BF16 => HostData::BF16(Arc::new(self.read(offset, vec![bf16::ZERO; len])?)),
        })
    }

    /// Fills `values` from element `offset` on, and hands them back.
    fn read<T: bytemuck::Pod>(
        &self,
        offset: usize,
        mut values: Vec<T>,
    ) -> Result<Vec<T>, TensorError> {
        if !values.is_empty() {
            let device = &*self.owner.device;
            let at = offset * std::mem::size_of::<T>();
            on_stream(device, "to_host", |stream| {
                device.read(stream, self.owner.buffer, at, bytemuck::cast_slice_mut(&mut values))
            })?;
        }
        Ok(values)
    }

    /// The device holding the buffer.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.owner.device
    }

    /// The id of the device holding the buffer.
    pub fn device_id(&self) -> DeviceId {
        self.owner.device.id()
    }

    /// The device's handle for the buffer (valid while this value lives).
    pub fn buffer(&self) -> Buffer {
        self.owner.buffer
    }

    /// How many elements the buffer holds.
    pub fn len(&self) -> usize {
        self.owner.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.owner.len == 0
    }

    /// The elements' type.
    pub fn dtype(&self) -> DType {
        self.owner.dtype
    }

    /// Whether the buffer is on this very device object (two objects may
    /// share a [`DeviceId`], a fault-injecting wrapper and its inner device
    /// say, but not buffer handles).
    pub(crate) fn is_on(&self, device: &Arc<dyn Device>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.owner.device), Arc::as_ptr(device))
    }
}

/// Runs `work` on a fresh stream of `device`, synchronizes it and closes it,
/// reporting the first failure as a [`TensorError::Device`] for `op`.
fn on_stream(
    device: &dyn Device,
    op: &'static str,
    work: impl FnOnce(Stream) -> Result<(), GpuError>,
) -> Result<(), TensorError> {
    let stream = device.create_stream().map_err(|e| TensorError::device(op, &e))?;
    let done = work(stream).and_then(|()| device.synchronize(stream));
    let closed = device.destroy_stream(stream);
    done.and(closed).map_err(|e| TensorError::device(op, &e))
}

/// One matrix product `a[m×k] · b[k×n]`, both operands row-major and
/// contiguous, their lengths checked against the sizes when it is made.
#[derive(Debug, Clone, Copy)]
pub struct Product<'a> {
    a: &'a [f32],
    b: &'a [f32],
    m: usize,
    n: usize,
    k: usize,
}

impl<'a> Product<'a> {
    /// The product `a[m×k] · b[k×n]`; fails when an operand's length is not
    /// its rows times its columns.
    pub fn new(
        a: &'a [f32],
        b: &'a [f32],
        (m, n, k): (usize, usize, usize),
    ) -> Result<Product<'a>, TensorError> {
        if m.checked_mul(n).is_none() {
            return Err(TensorError::InvalidArgument {
                op: "matmul",
                what: format!("a {m}x{n} result has more elements than memory can address"),
            });
        }
        let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
        if !(fits(a.len(), m, k) && fits(b.len(), k, n)) {
            return Err(TensorError::InvalidArgument {
                op: "matmul",
                what: format!(
                    "{m}x{k} · {k}x{n} needs operands of {} and {} elements; got {} and {}",
                    m.saturating_mul(k),
                    k.saturating_mul(n),
                    a.len(),
                    b.len()
                ),
            });
        }
        Ok(Product { a, b, m, n, k })
    }

    /// The left operand, `m×k`.
    pub fn lhs(&self) -> &'a [f32] {
        self.a
    }

    /// The right operand, `k×n`.
    pub fn rhs(&self) -> &'a [f32] {
        self.b
    }

    /// `(m, n, k)`: the result is `m×n`, summed over `k`.
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.m, self.n, self.k)
    }

    /// The result's elements, `m·n`.
    pub fn len(&self) -> usize {
        self.m * self.n
    }

    /// Whether the result has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `(row, col)` of the result, summed on the host in index order:
    /// the plain reference a backend's answer can be checked against.
    pub fn reference(&self, row: usize, col: usize) -> f32 {
        let (n, k) = (self.n, self.k);
        (0..k).map(|i| self.a[row * k + i] * self.b[i * n + col]).sum()
    }

    /// Fails unless `dst` holds exactly the result's `m·n` elements: what a
    /// backend checks before writing.
    pub fn check_dst(&self, dst: &[f32]) -> Result<(), TensorError> {
        if dst.len() == self.len() {
            return Ok(());
        }
        Err(TensorError::InvalidArgument {
            op: "matmul",
            what: format!(
                "a {}x{} product needs a destination of {} elements; got {}",
                self.m,
                self.n,
                self.len(),
                dst.len()
            ),
        })
    }
}

/// Where a [`Graph`](super::Graph) runs its matrix products when one is set
/// with [`Graph::set_matmul_backend`](super::Graph::set_matmul_backend).
///
/// The graph hands over row-major contiguous operands (transposed views are
/// copied into scratch buffers from its pool first) and takes the result in
/// `dst`.
pub trait MatmulBackend: Send + Sync {
    /// `dst = (accumulate ? dst : 0) + product`, `dst` row-major with the
    /// product's `m·n` elements.
    fn matmul(
        &self,
        product: Product<'_>,
        dst: &mut [f32],
        accumulate: bool,
    ) -> Result<(), TensorError>;

    /// For reports: where the products run ("cpu:0 via 2 kernel actors").
    fn describe(&self) -> String;
}

/// Matrix products as [`Op::Gemm`] jobs on a [`GpuPool`].
///
/// Each product is one job through [`GpuPool::run_into`], which blocks the
/// calling thread until the result is back: call it from a plain thread or
/// a runtime blocking thread, never from an actor's handler. Per product,
/// both operands are copied into the job's shared inputs (the pool keeps
/// its inputs on the host so that it can rerun a job on another device
/// after a loss), uploaded, multiplied, and the result read back; the
/// previous result's memory is reused for the next one. Accumulation
/// (`dst += a·b`) is done on the host.
///
/// Failures come back as [`TensorError::Device`]: class
/// [`OutOfMemory`](ErrorClass::OutOfMemory) when the product does not fit,
/// [`Device`](ErrorClass::Device) when devices failed and no healthy one is
/// left, the device error's own class otherwise.
pub struct PoolMatmul {
    pool: Arc<GpuPool>,
    /// The last result's memory, handed to the next job to write into.
    spare: Mutex<Vec<f32>>,
}

impl fmt::Debug for PoolMatmul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMatmul").field("runs_on", &self.describe()).finish()
    }
}

impl PoolMatmul {
    /// Products on `pool`'s kernel actors.
    pub fn new(pool: Arc<GpuPool>) -> PoolMatmul {
        PoolMatmul { pool, spare: Mutex::new(Vec::new()) }
    }

    /// The pool the products run on.
    pub fn pool(&self) -> &Arc<GpuPool> {
        &self.pool
    }

    fn take_spare(&self) -> Vec<f32> {
        // A panic while holding the lock leaves a Vec, never a broken one.
        std::mem::take(&mut *self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn keep_spare(&self, spare: Vec<f32>) {
        *self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = spare;
    }
}

const POOL_OP: &str = "matmul on a GPU pool";

/// The class of a pool failure: what the caller can do about it.
fn job_error(error: JobError) -> TensorError {
    let class = match &error {
        JobError::OutOfMemory { .. } => ErrorClass::OutOfMemory,
        JobError::DeviceFailed { .. } | JobError::NoHealthyDevice { .. } => ErrorClass::Device,
        JobError::Gpu(gpu) => gpu.class(),
        // The pool's call timeout: the devices may only be slow or busy.
        JobError::Timeout(_) => ErrorClass::Transient,
        JobError::Invalid(_) | JobError::Runtime(_) => ErrorClass::Request,
    };
    TensorError::Device { op: POOL_OP, class, message: error.to_string() }
}

impl MatmulBackend for PoolMatmul {
    fn matmul(
        &self,
        product: Product<'_>,
        dst: &mut [f32],
        accumulate: bool,
    ) -> Result<(), TensorError> {
        product.check_dst(dst)?;
        let (m, n, k) = product.dims();
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // An empty sum: nothing to send to a device.
            if !accumulate {
                dst.fill(0.0);
            }
            return Ok(());
        }
        let inputs = vec![Arc::from(product.lhs()), Arc::from(product.rhs())];
        let job = Job::new(Op::Gemm { m, n, k }, inputs).map_err(job_error)?;
        let result = self.pool.run_into(job, self.take_spare()).map_err(job_error)?;
        if result.len() != dst.len() {
            return Err(TensorError::Device {
                op: POOL_OP,
                class: ErrorClass::Request,
                message: format!(
                    "the pool returned {} elements for a {m}x{n} product",
                    result.len()
                ),
            });
        }
        if accumulate {
            dst.iter_mut().zip(&result).for_each(|(d, r)| *d += r);
        } else {
            dst.copy_from_slice(&result);
        }
        self.keep_spare(result);
        Ok(())
    }

    fn describe(&self) -> String {
        let placements = self.pool.placements();
        let mut devices: Vec<String> = Vec::new();
        for id in placements.iter().flatten() {
            let name = id.to_string();
            if !devices.contains(&name) {
                devices.push(name);
            }
        }
        let devices = if devices.is_empty() { "no device".to_string() } else { devices.join(", ") };
        let actors = placements.len();
        format!("{devices} via {actors} kernel actor{}", if actors == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_whose_operands_do_not_fit_its_sizes_is_refused() {
        let (a, b) = ([1.0; 6], [1.0; 12]);
        assert!(Product::new(&a, &b, (2, 4, 3)).is_ok());
        for dims in [(3, 4, 3), (2, 4, 2), (2, 3, 3), (usize::MAX, 1, 1)] {
            let error = Product::new(&a, &b, dims).unwrap_err();
            assert!(
                matches!(&error, TensorError::InvalidArgument { what, .. } if what.contains("got 6 and 12")),
                "{dims:?}: {error}"
            );
        }
        // Operands that fit (k = 0) but a result too large to count.
        let error = Product::new(&[], &[], (usize::MAX, 2, 0)).unwrap_err();
        assert!(error.to_string().contains("more elements than memory can address"), "{error}");
    }

    #[test]
    fn the_reference_is_the_row_times_column_sum_and_the_destination_is_checked() {
        // [1 2 3; 4 5 6] · [1 0; 0 1; 1 1] = [4 5; 10 11]
        let (a, b) = ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let product = Product::new(&a, &b, (2, 2, 3)).unwrap();
        let got: Vec<f32> =
            [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(r, c)| product.reference(r, c)).to_vec();
        assert_eq!(got, [4.0, 5.0, 10.0, 11.0]);
        assert_eq!(product.len(), 4);
        assert!(product.check_dst(&[0.0; 4]).is_ok());
        let error = product.check_dst(&[0.0; 5]).unwrap_err();
        assert!(error.to_string().contains("destination of 4 elements; got 5"), "{error}");
    }
}
