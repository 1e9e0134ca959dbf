//! Millions of elements through the MPMC queue between two producers and
//! two consumers: every element arrives exactly once (count, sum and xor of
//! both ends agree), and each consumer sees each producer's elements in the
//! order they were pushed (the queue is FIFO).
#![cfg(not(zbmd_loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use zbmd_rt::sync::mpmc::MpmcQueue;

const PRODUCERS: u64 = 2;
const CONSUMERS: usize = 2;
const PER_PRODUCER: u64 = 1_000_000;
/// Small, so producers meet "full" and consumers meet "empty" often and the
/// ring wraps thousands of times.
const CAPACITY: usize = 61;

/// Mixes an element into a value whose sum and xor catch a lost, duplicated
/// or corrupted element.
fn mix(element: u64) -> u64 {
    element.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ element
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    sum: u64,
    xor: u64,
}

impl Tally {
    fn add(&mut self, element: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(mix(element));
        self.xor ^= mix(element);
    }

    fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.xor ^= other.xor;
    }
}

fn produce(queue: &MpmcQueue<u64>, producer: u64) -> Tally {
    let mut tally = Tally::default();
    for seq in 0..PER_PRODUCER {
        let element = producer << 32 | seq;
        tally.add(element);
        let mut value = element;
        while let Err(full) = queue.push(value) {
            value = full.into_inner();
            thread::yield_now();
        }
    }
    tally
}

fn consume(queue: &MpmcQueue<u64>, producers_done: &AtomicUsize) -> Tally {
    let mut tally = Tally::default();
    let mut next_seq = [0u64; PRODUCERS as usize];
    loop {
        let element = match queue.pop() {
            Some(element) => element,
            None if producers_done.load(Ordering::Acquire) == PRODUCERS as usize => {
                // Every push happened before this pop: `None` now means the
                // queue is drained for good.
                match queue.pop() {
                    Some(element) => element,
                    None => return tally,
                }
            }
            None => {
                thread::yield_now();
                continue;
            }
        };
        let (producer, seq) = ((element >> 32) as usize, element & 0xFFFF_FFFF);
        assert!(
            seq >= next_seq[producer],
            "producer {producer}: {seq} after {}",
            next_seq[producer]
        );
        next_seq[producer] = seq + 1;
        tally.add(element);
    }
}

#[test]
fn two_producers_two_consumers_deliver_every_element_once() {
    let queue = MpmcQueue::with_capacity(CAPACITY).unwrap();
    let producers_done = AtomicUsize::new(0);
    let (pushed, popped) = thread::scope(|scope| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let (queue, producers_done) = (&queue, &producers_done);
                scope.spawn(move || {
                    let tally = produce(queue, producer);
                    producers_done.fetch_add(1, Ordering::Release);
                    tally
                })
            })
            .collect();
        let consumers: Vec<_> =
            (0..CONSUMERS).map(|_| scope.spawn(|| consume(&queue, &producers_done))).collect();
        let mut pushed = Tally::default();
        for producer in producers {
            pushed.merge(producer.join().unwrap());
        }
        let mut popped = Tally::default();
        for consumer in consumers {
            popped.merge(consumer.join().unwrap());
        }
        (pushed, popped)
    });
    assert_eq!(pushed.count, PRODUCERS * PER_PRODUCER);
    assert_eq!(popped, pushed);
    assert!(queue.is_empty());
    assert_eq!(queue.pop(), None);
}
