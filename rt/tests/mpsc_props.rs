//! The mailbox queue, driven single-threaded by random operation sequences,
//! answers exactly as bounded `VecDeque`s: one for a lane, two for a
//! mailbox whose `recv` prefers the system lane.
#![cfg(not(zbmd_loom))]

use std::collections::VecDeque;

use proptest::prelude::*;
use zbmd_rt::sync::Full;
use zbmd_rt::sync::mpsc::{Envelope, MpscQueue, mailbox};

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => any::<u32>().prop_map(Op::Push), 2 => Just(Op::Pop)]
}

#[derive(Debug, Clone)]
enum MailOp {
    Send(u32),
    SendSystem(u8),
    Recv,
}

fn mail_op() -> impl Strategy<Value = MailOp> {
    prop_oneof![
        3 => any::<u32>().prop_map(MailOp::Send),
        1 => any::<u8>().prop_map(MailOp::SendSystem),
        3 => Just(MailOp::Recv),
    ]
}

/// Pushes into a bounded model the way the queue should.
fn model_push<T: Copy>(model: &mut VecDeque<T>, capacity: usize, value: T) -> Result<(), Full<T>> {
    if model.len() < capacity {
        model.push_back(value);
        Ok(())
    } else {
        Err(Full(value))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_lane_matches_a_bounded_vecdeque(capacity in 1usize..10, ops in prop::collection::vec(op(), 1..300)) {
        let queue = MpscQueue::with_capacity(capacity).unwrap();
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(v) => prop_assert_eq!(queue.push(v), model_push(&mut model, capacity, v)),
                // SAFETY: the test thread is the only consumer.
                Op::Pop => prop_assert_eq!(unsafe { queue.pop() }, model.pop_front()),
            }
            prop_assert_eq!(queue.len(), model.len());
            prop_assert_eq!(queue.is_empty(), model.is_empty());
            prop_assert_eq!(queue.capacity(), capacity);
        }
    }

    #[test]
    fn a_mailbox_matches_two_bounded_vecdeques(
        system_capacity in 1usize..4,
        user_capacity in 1usize..8,
        ops in prop::collection::vec(mail_op(), 1..300),
    ) {
        let (tx, mut rx) = mailbox::<u8, u32>(system_capacity, user_capacity).unwrap();
        let mut system = VecDeque::new();
        let mut user = VecDeque::new();
        for op in ops {
            match op {
                MailOp::Send(v) => prop_assert_eq!(tx.send(v), model_push(&mut user, user_capacity, v)),
                MailOp::SendSystem(s) => {
                    prop_assert_eq!(tx.send_system(s), model_push(&mut system, system_capacity, s));
                }
                MailOp::Recv => {
                    let expected = match system.pop_front() {
                        Some(s) => Some(Envelope::System(s)),
                        None => user.pop_front().map(Envelope::User),
                    };
                    prop_assert_eq!(rx.recv(), expected);
                }
            }
            prop_assert_eq!(rx.len(), (system.len(), user.len()));
            prop_assert_eq!(rx.is_empty(), system.is_empty() && user.is_empty());
        }
    }
}
