//! loom models of the SPSC ring: every interleaving of one producer and one
//! consumer, within the preemption bound, delivers each element once, in
//! order, never reads an unwritten slot, and answers full and empty truly.
#![cfg(zbmd_loom)]

use loom::thread;
use zbmd_rt::sync::spsc;

mod common;
use common::model;

/// Three elements through a ring of two: the producer must see "full" on some
/// interleavings and wrap around into a slot the consumer just freed.
#[test]
fn elements_arrive_once_in_order_across_a_wrap() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel::<usize>(2).unwrap();
        let producer = thread::spawn(move || {
            for i in 0..3 {
                let mut value = i;
                while let Err(full) = tx.push(value) {
                    value = full.into_inner();
                    thread::yield_now();
                }
            }
        });
        for expected in 0..3 {
            loop {
                match rx.pop() {
                    Some(value) => {
                        assert_eq!(value, expected);
                        break;
                    }
                    None => thread::yield_now(),
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(rx.pop(), None);
    });
}

/// Batches: one `push_slice` against one `pop_into`, on a ring of 3 holding
/// one element already. Whatever the consumer takes is a prefix, in order,
/// and the rest is still there afterwards.
#[test]
fn batches_publish_a_prefix_in_order() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel::<usize>(3).unwrap();
        tx.push(10).unwrap();
        let producer = thread::spawn(move || {
            let pushed = tx.push_slice(&[11, 12, 13]);
            (tx, pushed)
        });
        let mut out = [0; 4];
        let popped = rx.pop_into(&mut out);
        assert!(popped >= 1, "the element pushed before the spawn is always visible");
        for (offset, value) in out[..popped].iter().enumerate() {
            assert_eq!(*value, 10 + offset);
        }
        let (_tx, pushed) = producer.join().unwrap();
        // Room for 2 when the push ran before the pop, up to 3 after it.
        assert!((2..=3).contains(&pushed));
        let mut rest = Vec::new();
        while let Some(value) = rx.pop() {
            rest.push(value);
        }
        let expected: Vec<usize> = (10 + popped..11 + pushed).collect();
        assert_eq!(rest, expected);
    });
}
