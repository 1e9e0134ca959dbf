//! Adds two vectors on the best device this machine has, through a kernel
//! actor under the GPU supervisor, and checks the result on the host.
//!
//! Run with `cargo run -p zbmd-gpu --example gpu_vector_add --features
//! vulkan,cuda [elements]`; `ZBMD_GPU_BACKEND=cpu|vulkan|cuda|rocm` picks a backend.

use std::sync::Arc;
use std::time::Instant;

use zbmd_gpu::{BackendStatus, GpuPool, Job, Op, detect_devices};
use zbmd_rt::Runtime;

fn main() {
    let n: usize =
        std::env::args().nth(1).map_or(1 << 20, |n| n.parse().expect("an element count"));
    let detection = detect_devices();
    for report in &detection.backends {
        if let BackendStatus::Absent(reason) = &report.status {
            println!("{}: {reason}", report.backend);
        }
    }
    let Some(best) = detection.best().cloned() else {
        eprintln!("no device found (ZBMD_GPU_BACKEND selects a backend with none?)");
        std::process::exit(1);
    };
    println!("running on {} ({})", best.id(), best.info().name);

    let rt = Runtime::builder().build().expect("runtime");
    // Every device found, best first: if the best one fails, the kernel
    // actor moves to the next.
    let pool = GpuPool::builder(detection.devices).actors(1).start(&rt).expect("GPU pool");

    let a: Arc<[f32]> = (0..n).map(|i| i as f32).collect();
    let b: Arc<[f32]> = (0..n).map(|i| (n - i) as f32).collect();
    let job = Job::new(Op::VectorAdd { n }, vec![a, b]).expect("a well-formed job");
    let started = Instant::now();
    let sum = pool.run(job).expect("vector add");
    let elapsed = started.elapsed();

    let wrong = sum.iter().filter(|&&x| x != n as f32).count();
    println!(
        "added {n} floats on {} in {elapsed:?} (upload, launch, read back): {}",
        pool.placements()[0].map_or("?".into(), |device| device.to_string()),
        if wrong == 0 {
            "every element is right".to_owned()
        } else {
            format!("{wrong} elements WRONG")
        }
    );
    pool.shutdown();
    rt.shutdown();
    assert_eq!(wrong, 0);
}
