//! Millions of messages from three producers into one mailbox consumer:
//! every message arrives exactly once (count, sum and xor of both ends
//! agree), and each producer's messages arrive in the order it sent them,
//! lane by lane.
#![cfg(not(zbmd_loom))]

use std::thread;

use zbmd_rt::sync::mpsc::{Envelope, MailboxReceiver, MailboxSender, mailbox};

const PRODUCERS: usize = 3;
const PER_PRODUCER: u64 = 1_000_000;
/// Small, so producers meet "full" and the consumer meets "empty" often and
/// the ring wraps thousands of times.
const USER_CAPACITY: usize = 100;
const SYSTEM_CAPACITY: usize = 3;
/// One producer in this many messages also sends a system signal.
const SIGNAL_EVERY: u64 = 64;

/// Mixes a message into a value whose sum and xor catch a lost, duplicated
/// or corrupted one.
fn mix(message: u64) -> u64 {
    message.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ message
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct Tally {
    count: u64,
    sum: u64,
    xor: u64,
}

impl Tally {
    fn add(&mut self, message: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(mix(message));
        self.xor ^= mix(message);
    }

    fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.xor ^= other.xor;
    }
}

/// Sends, retrying while the lane is full.
fn send_until_accepted(mut value: u64, send: impl Fn(u64) -> Result<(), zbmd_rt::sync::Full<u64>>) {
    while let Err(full) = send(value) {
        value = full.into_inner();
        thread::yield_now();
    }
}

/// Sends `PER_PRODUCER` user messages, and a system signal with every
/// `signals_every`-th one; returns (user, system) tallies.
fn produce(tx: MailboxSender<u64, u64>, producer: usize, signals_every: u64) -> (Tally, Tally) {
    let (mut user, mut system) = (Tally::default(), Tally::default());
    for seq in 0..PER_PRODUCER {
        let message = (producer as u64) << 32 | seq;
        user.add(message);
        send_until_accepted(message, |m| tx.send(m));
        if seq % signals_every == signals_every - 1 {
            system.add(message);
            send_until_accepted(message, |m| tx.send_system(m));
        }
    }
    (user, system)
}

/// Receives until `expected` user messages arrived; checks per-producer
/// order in each lane; returns (user, system) tallies.
fn consume(rx: &mut MailboxReceiver<u64, u64>, expected: u64) -> (Tally, Tally) {
    let (mut user, mut system) = (Tally::default(), Tally::default());
    let mut next_user = [0u64; PRODUCERS];
    let mut next_system = [0u64; PRODUCERS];
    while user.count < expected {
        let (message, tally, next) = match rx.recv() {
            Some(Envelope::User(m)) => (m, &mut user, &mut next_user),
            Some(Envelope::System(m)) => (m, &mut system, &mut next_system),
            None => {
                thread::yield_now();
                continue;
            }
        };
        let (producer, seq) = ((message >> 32) as usize, message & 0xFFFF_FFFF);
        assert!(seq >= next[producer], "producer {producer}: {seq} after {}", next[producer]);
        next[producer] = seq + 1;
        tally.add(message);
    }
    (user, system)
}

fn run(signals_every: u64) {
    let (tx, mut rx) = mailbox::<u64, u64>(SYSTEM_CAPACITY, USER_CAPACITY).unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let tx = tx.clone();
            thread::spawn(move || produce(tx, producer, signals_every))
        })
        .collect();
    let (user_in, mut system_in) = consume(&mut rx, PRODUCERS as u64 * PER_PRODUCER);
    let (mut user_out, mut system_out) = (Tally::default(), Tally::default());
    for producer in producers {
        let (user, system) = producer.join().unwrap();
        user_out.merge(user);
        system_out.merge(system);
    }
    // The last signals may still be queued behind the last user message.
    while let Some(envelope) = rx.recv() {
        match envelope {
            Envelope::System(m) => system_in.add(m),
            Envelope::User(m) => panic!("user message {m:#x} beyond the expected count"),
        }
    }
    assert_eq!(user_in, user_out);
    assert_eq!(system_in, system_out);
    assert!(rx.is_empty());
}

#[test]
fn three_producers_one_consumer_deliver_in_order_once() {
    // `u64::MAX` never divides a count below it: no signals, one lane.
    run(u64::MAX);
}

#[test]
fn both_lanes_deliver_in_order_once() {
    run(SIGNAL_EVERY);
}
