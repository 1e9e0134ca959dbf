//! A conformance suite every backend runs: the whole [`Device`] interface
//! against plain-Rust reference results on seeded pseudo-random data.
//!
//! `check_device` panics with a message naming the check and the device on
//! the first difference.

#![allow(dead_code)]

use zbmd_gpu::launch::Kernels;
use zbmd_gpu::{Arg, Buffer, Device, Gemm, GpuError, Kernel, LaunchConfig, Stream};

/// A small seeded generator (SplitMix64), so failures replay exactly.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` floats uniform in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

/// Runs every check on `device`.
pub fn check_device(device: &dyn Device) {
    let stream = device.create_stream().expect("create_stream");
    round_trips(device, stream);
    device_copy(device, stream);
    let kernels = Kernels::load(device).expect("load the standard kernels");
    elementwise(device, stream, &kernels);
    reductions(device, stream, &kernels);
    softmax(device, stream, &kernels);
    gemm(device, stream, &kernels);
    two_streams_ordered_by_an_event(device, &kernels);
    argument_errors(device, stream, &kernels);
    out_of_memory(device);
    device.destroy_stream(stream).expect("destroy_stream");
}

/// Uploads `data` to a new buffer.
pub fn upload(device: &dyn Device, stream: Stream, data: &[f32]) -> Buffer {
    let buffer = device.alloc(data.len() * 4).expect("alloc");
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_ne_bytes()).collect();
    device.write(stream, buffer, 0, &bytes).expect("write");
    buffer
}

/// Reads `n` floats from `buffer`.
pub fn download(device: &dyn Device, stream: Stream, buffer: Buffer, n: usize) -> Vec<f32> {
    let mut bytes = vec![0u8; n * 4];
    device.read(stream, buffer, 0, &mut bytes).expect("read");
    bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn free(device: &dyn Device, buffers: &[Buffer]) {
    for &buffer in buffers {
        device.free(buffer).expect("free");
    }
}

/// Asserts `got` is within `tolerance` of `want`, relative to `scale`.
fn assert_close(what: &str, got: f32, want: f64, scale: f64, tolerance: f64) {
    let error = (f64::from(got) - want).abs();
    assert!(
        error <= tolerance * scale.max(1e-30),
        "{what}: got {got}, want {want} (error {error:e}, allowed {tolerance:e} x {scale})"
    );
}

fn round_trips(device: &dyn Device, stream: Stream) {
    let mut rng = Rng::new(1);
    for bytes in [1usize, 3, 4, 7, 255, 4096, 65_537, 1 << 20] {
        let data: Vec<u8> = (0..bytes).map(|_| rng.next_u64() as u8).collect();
        let buffer = device.alloc(bytes).expect("alloc");
        assert_eq!(buffer.bytes, bytes);
        device.write(stream, buffer, 0, &data).expect("write");
        let mut back = vec![0u8; bytes];
        device.read(stream, buffer, 0, &mut back).expect("read");
        assert!(back == data, "{}: round trip of {bytes} bytes differs", device.id());
        if bytes > 2 {
            // A partial write at an odd offset leaves the rest alone.
            device.write(stream, buffer, 1, &[0xAB]).expect("offset write");
            let mut middle = [0u8; 2];
            device.read(stream, buffer, 0, &mut middle).expect("offset read");
            assert_eq!(middle, [data[0], 0xAB], "{}: write at offset 1", device.id());
        }
        free(device, &[buffer]);
    }
}

fn device_copy(device: &dyn Device, stream: Stream) {
    let data = Rng::new(2).vec(1000);
    let src = upload(device, stream, &data);
    let dst = upload(device, stream, &vec![0.0; 1000]);
    device.copy(stream, src, dst, 999 * 4).expect("copy");
    let back = download(device, stream, dst, 1000);
    assert_eq!(&back[..999], &data[..999], "{}: device copy", device.id());
    assert_eq!(back[999], 0.0, "{}: copy wrote past its length", device.id());
    free(device, &[src, dst]);
}

fn elementwise(device: &dyn Device, stream: Stream, kernels: &Kernels) {
    let id = device.id();
    let mut rng = Rng::new(3);
    for n in [1usize, 255, 256, 257, 1_000_003] {
        let (a, b) = (rng.vec(n), rng.vec(n));
        let (da, db, out) = (
            upload(device, stream, &a),
            upload(device, stream, &b),
            device.alloc(n * 4).expect("alloc"),
        );
        kernels.vector_add(device, stream, [da, db, out], n).expect("vector_add");
        let got = download(device, stream, out, n);
        for i in 0..n {
            assert_eq!(got[i], a[i] + b[i], "{id}: vector_add n={n} at {i}");
        }
        kernels.scale(device, stream, [da, out], -2.5, n).expect("scale");
        let got = download(device, stream, out, n);
        for i in 0..n {
            assert_eq!(got[i], -2.5 * a[i], "{id}: scale n={n} at {i}");
        }
        kernels.relu(device, stream, [da, out], n).expect("relu");
        let got = download(device, stream, out, n);
        for i in 0..n {
            assert_eq!(got[i], a[i].max(0.0), "{id}: relu n={n} at {i}");
        }
        kernels.relu_grad(device, stream, [da, db, out], n).expect("relu_grad");
        let got = download(device, stream, out, n);
        for i in 0..n {
            let want = if a[i] > 0.0 { b[i] } else { 0.0 };
            assert_eq!(got[i], want, "{id}: relu_grad n={n} at {i}");
        }
        free(device, &[da, db, out]);
    }
    kernels.empty(device, stream, 1000).expect("empty");
    device.synchronize(stream).expect("synchronize after empty");
}

fn reductions(device: &dyn Device, stream: Stream, kernels: &Kernels) {
    let id = device.id();
    let mut rng = Rng::new(4);
    for n in [0usize, 1, 255, 256, 257, 10_000, 100_003] {
        // Shift negative so the maximum is negative too for small n.
        let x: Vec<f32> = rng.vec(n).into_iter().map(|v| v - 1.5).collect();
        let dx = upload(device, stream, &x);
        let out = upload(device, stream, &[7.0]);
        kernels.sum(device, stream, [dx, out], n).expect("sum");
        let got = download(device, stream, out, 1)[0];
        let want: f64 = x.iter().map(|&v| f64::from(v)).sum();
        let scale: f64 = x.iter().map(|&v| f64::from(v).abs()).sum::<f64>().max(1.0);
        assert_close(&format!("{id}: sum n={n}"), got, want, scale, 1e-4);
        kernels.max(device, stream, [dx, out], n).expect("max");
        let got = download(device, stream, out, 1)[0];
        let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(got, want, "{id}: max n={n}");
        free(device, &[dx, out]);
    }
}

fn softmax(device: &dyn Device, stream: Stream, kernels: &Kernels) {
    let id = device.id();
    let mut rng = Rng::new(5);
    let rows = 7;
    for cols in [1usize, 2, 3, 31, 255, 256, 257, 300] {
        // Large magnitudes: a softmax that forgets to subtract the max overflows.
        let x: Vec<f32> = rng.vec(rows * cols).into_iter().map(|v| v * 100.0).collect();
        let dx = upload(device, stream, &x);
        let out = device.alloc(rows * cols * 4).expect("alloc");
        kernels.softmax(device, stream, [dx, out], rows, cols).expect("softmax");
        let got = download(device, stream, out, rows * cols);
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let total: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            for c in 0..cols {
                let want = (f64::from(row[c]) - max).exp() / total;
                assert_close(
                    &format!("{id}: softmax {rows}x{cols} at ({r},{c})"),
                    got[r * cols + c],
                    want,
                    1.0,
                    1e-5,
                );
            }
        }
        free(device, &[dx, out]);
    }
}

fn gemm(device: &dyn Device, stream: Stream, kernels: &Kernels) {
    let id = device.id();
    let mut rng = Rng::new(6);
    for (m, n, k) in [(1, 1, 1), (17, 5, 33), (33, 47, 19), (64, 16, 80)] {
        let (a, b, c) = (rng.vec(m * k), rng.vec(k * n), rng.vec(m * n));
        let (alpha, beta) = (1.5f32, -0.75f32);
        let (da, db) = (upload(device, stream, &a), upload(device, stream, &b));
        for through_device in [false, true] {
            let dc = upload(device, stream, &c);
            let g = Gemm { m, n, k, alpha, beta, a: da, b: db, c: dc };
            if through_device {
                device.gemm(stream, &g).expect("device gemm");
            } else {
                kernels.gemm(device, stream, &g).expect("kernel gemm");
            }
            let got = download(device, stream, dc, m * n);
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 =
                        (0..k).map(|e| f64::from(a[i * k + e]) * f64::from(b[e * n + j])).sum();
                    let abs: f64 =
                        (0..k).map(|e| f64::from((a[i * k + e] * b[e * n + j]).abs())).sum();
                    let want = f64::from(alpha) * dot + f64::from(beta) * f64::from(c[i * n + j]);
                    let scale = f64::from(alpha) * abs + f64::from(beta.abs() * c[i * n + j].abs());
                    let what =
                        format!("{id}: gemm {m}x{n}x{k} (device: {through_device}) at ({i},{j})");
                    assert_close(&what, got[i * n + j], want, scale.max(1.0), 1e-4);
                }
            }
            free(device, &[dc]);
        }
        // beta = 0 overwrites: a NaN in c must not survive.
        let dc = upload(device, stream, &vec![f32::NAN; m * n]);
        let g = Gemm { m, n, k, alpha: 1.0, beta: 0.0, a: da, b: db, c: dc };
        device.gemm(stream, &g).expect("gemm beta 0");
        let got = download(device, stream, dc, m * n);
        assert!(got.iter().all(|v| v.is_finite()), "{id}: gemm with beta 0 kept NaN from c");
        free(device, &[da, db, dc]);
    }
}

fn two_streams_ordered_by_an_event(device: &dyn Device, kernels: &Kernels) {
    let id = device.id();
    let (first, second) =
        (device.create_stream().expect("stream"), device.create_stream().expect("stream"));
    let n = 1 << 18;
    let x = Rng::new(7).vec(n);
    let dx = upload(device, first, &x);
    let mid = device.alloc(n * 4).expect("alloc");
    let out = device.alloc(n * 4).expect("alloc");
    // first: mid = 2x (many times, so the work is long); second: out = mid + mid.
    for _ in 0..8 {
        kernels.scale(device, first, [dx, mid], 2.0, n).expect("scale");
    }
    let event = device.record_event(first).expect("record_event");
    device.wait_event(second, event).expect("wait_event");
    kernels.vector_add(device, second, [mid, mid, out], n).expect("vector_add");
    device.synchronize(second).expect("synchronize second");
    let got = download(device, second, out, n);
    for i in 0..n {
        assert_eq!(got[i], 4.0 * x[i], "{id}: second stream ran before the event at {i}");
    }
    device.event_synchronize(event).expect("event_synchronize");
    device.destroy_event(event).expect("destroy_event");
    let gone = device.event_synchronize(event).expect_err("a destroyed event");
    assert!(matches!(gone, GpuError::InvalidArgument { .. }), "{id}: destroyed event: {gone}");
    free(device, &[dx, mid, out]);
    device.destroy_stream(first).expect("destroy_stream");
    device.destroy_stream(second).expect("destroy_stream");
    let closed = device.synchronize(first).expect_err("a closed stream");
    assert!(matches!(closed, GpuError::InvalidArgument { .. }), "{id}: closed stream: {closed}");
}

fn expect_invalid(id: impl std::fmt::Display, what: &str, result: Result<(), GpuError>) {
    match result {
        Err(GpuError::InvalidArgument { .. }) => {}
        other => panic!("{id}: {what}: expected InvalidArgument, got {other:?}"),
    }
}

fn argument_errors(device: &dyn Device, stream: Stream, kernels: &Kernels) {
    let id = device.id();
    let a = upload(device, stream, &[1.0; 64]);
    let small = device.alloc(16).expect("alloc");
    let freed = device.alloc(256).expect("alloc");
    device.free(freed).expect("free");
    expect_invalid(id, "free twice", device.free(freed));
    expect_invalid(id, "read a freed buffer", device.read(stream, freed, 0, &mut [0u8; 4]));
    expect_invalid(id, "write a freed buffer", device.write(stream, freed, 0, &[0u8; 4]));
    expect_invalid(
        id,
        "vector_add on a freed buffer",
        kernels.vector_add(device, stream, [a, a, freed], 64),
    );
    expect_invalid(id, "read past the end", device.read(stream, small, 8, &mut [0u8; 9]));
    expect_invalid(id, "write past the end", device.write(stream, small, 16, &[0u8; 1]));
    expect_invalid(id, "copy more than the source holds", device.copy(stream, small, a, 64));
    expect_invalid(id, "too-small output", kernels.vector_add(device, stream, [a, a, small], 64));
    let handle = kernels.handle(Kernel::VectorAdd);
    let config = LaunchConfig::linear(64, 256);
    let wrong_kind = [Arg::Buffer(a), Arg::U32(1), Arg::Buffer(a), Arg::U32(64)];
    expect_invalid(
        id,
        "scalar where a buffer goes",
        device.launch(stream, handle, config, &wrong_kind),
    );
    let too_few = [Arg::Buffer(a), Arg::Buffer(a), Arg::U32(64)];
    expect_invalid(id, "too few arguments", device.launch(stream, handle, config, &too_few));
    let bad_gemm = Gemm { m: 8, n: 8, k: 8, alpha: 1.0, beta: 0.0, a, b: a, c: small };
    expect_invalid(id, "gemm into a too-small c", device.gemm(stream, &bad_gemm));
    device.synchronize(stream).expect("the stream still works after rejected calls");
    free(device, &[a, small]);
}

fn out_of_memory(device: &dyn Device) {
    let id = device.id();
    let total = device.memory().expect("memory").total_bytes;
    let bytes = usize::try_from(total).unwrap_or(usize::MAX).saturating_add(1);
    match device.alloc(bytes) {
        Err(GpuError::OutOfMemory { requested_bytes, .. }) => {
            assert_eq!(requested_bytes, bytes, "{id}")
        }
        other => panic!(
            "{id}: alloc of {bytes} bytes (total {total}): expected OutOfMemory, got {other:?}"
        ),
    }
    let buffer = device.alloc(1 << 20).expect("alloc after OutOfMemory");
    device.free(buffer).expect("free");
}
