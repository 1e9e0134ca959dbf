//! The hardware floor of `ping_pong/two_shards`: two threads pinned to
//! cores 0 and 1 bouncing a u64 through two zbmd SPSC rings, spinning.

use std::hint::black_box;
use std::time::Duration;

use zbmd_benches::{Placement, run_threads};
use zbmd_rt::sync::spsc::{self, Consumer, Producer};

use crate::harness::{Fixture, PING_ROUND_TRIPS};

/// Capacity of each of the two rings of the raw SPSC ping-pong (only one
/// value is ever in flight).
const RAW_RING_CAPACITY: usize = 1024;

fn push_spin(ring: &mut Producer<u64>, value: u64) {
    let mut value = value;
    while let Err(full) = ring.push(value) {
        value = full.into_inner();
        std::hint::spin_loop();
    }
}

fn pop_spin(ring: &mut Consumer<u64>) -> u64 {
    loop {
        if let Some(value) = ring.pop() {
            return value;
        }
        std::hint::spin_loop();
    }
}

pub struct RingPingPong;

impl Fixture for RingPingPong {
    fn run(&mut self, iters: u64) -> Duration {
        let round_trips = iters * PING_ROUND_TRIPS;
        let (mut to_pong, mut at_pong) = spsc::channel::<u64>(RAW_RING_CAPACITY).expect("ring");
        let (mut to_ping, mut at_ping) = spsc::channel::<u64>(RAW_RING_CAPACITY).expect("ring");
        let ping = move |_: usize| {
            for i in 0..round_trips {
                push_spin(&mut to_pong, i);
                black_box(pop_spin(&mut at_ping));
            }
        };
        let pong = move |_: usize| {
            for _ in 0..round_trips {
                let value = pop_spin(&mut at_pong);
                push_spin(&mut to_ping, value);
            }
            0
        };
        // Ping is pinned to core 0, pong to core 1; thread start-up is
        // outside the timed span.
        run_threads(vec![ping], vec![pong], Placement::Pinned).0
    }
}
