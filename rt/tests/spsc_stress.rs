//! Millions of elements through the SPSC ring between two threads: every
//! element arrives once, in order, and the checksums of both ends agree.
#![cfg(not(zbmd_loom))]

use std::thread;

use zbmd_rt::sync::spsc;

const ELEMENTS: u64 = 4_000_000;

/// Mixes a counter into a value whose sum and xor catch a lost, duplicated
/// or corrupted element.
fn mix(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ i
}

#[test]
fn single_elements_arrive_once_in_order() {
    let (mut tx, mut rx) = spsc::channel::<u64>(1024).unwrap();
    let producer = thread::spawn(move || {
        let (mut sum, mut xor) = (0u64, 0u64);
        for i in 0..ELEMENTS {
            let mut value = mix(i);
            sum = sum.wrapping_add(value);
            xor ^= value;
            while let Err(full) = tx.push(value) {
                value = full.into_inner();
                thread::yield_now();
            }
        }
        (sum, xor)
    });
    let (mut sum, mut xor) = (0u64, 0u64);
    for i in 0..ELEMENTS {
        let value = loop {
            match rx.pop() {
                Some(value) => break value,
                None => thread::yield_now(),
            }
        };
        assert_eq!(value, mix(i), "element {i} out of order or corrupted");
        sum = sum.wrapping_add(value);
        xor ^= value;
    }
    assert_eq!(rx.pop(), None);
    assert_eq!(producer.join().unwrap(), (sum, xor));
}

#[test]
fn batches_arrive_once_in_order() {
    let (mut tx, mut rx) = spsc::channel::<u64>(1000).unwrap();
    let producer = thread::spawn(move || {
        let mut batch = [0u64; 61];
        let mut next = 0u64;
        while next < ELEMENTS {
            let len = batch.len().min((ELEMENTS - next) as usize);
            for (offset, slot) in batch[..len].iter_mut().enumerate() {
                *slot = mix(next + offset as u64);
            }
            let mut sent = 0;
            while sent < len {
                let pushed = tx.push_slice(&batch[sent..len]);
                if pushed == 0 {
                    thread::yield_now();
                }
                sent += pushed;
            }
            next += len as u64;
        }
    });
    let mut out = [0u64; 47];
    let mut next = 0u64;
    while next < ELEMENTS {
        let popped = rx.pop_into(&mut out);
        if popped == 0 {
            thread::yield_now();
        }
        for value in &out[..popped] {
            assert_eq!(*value, mix(next), "element {next} out of order or corrupted");
            next += 1;
        }
    }
    producer.join().unwrap();
    assert_eq!(rx.pop(), None);
}
