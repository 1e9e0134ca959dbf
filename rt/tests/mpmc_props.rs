//! The MPMC queue, driven single-threaded by random operation sequences,
//! answers exactly as a `VecDeque` bounded at the same capacity.
#![cfg(not(zbmd_loom))]

use std::collections::VecDeque;

use proptest::prelude::*;
use zbmd_rt::sync::Full;
use zbmd_rt::sync::mpmc::MpmcQueue;

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    // Pushes slightly more often than pops, so runs reach "full" as well as
    // "empty" and wrap around many laps.
    prop_oneof![3 => any::<u32>().prop_map(Op::Push), 2 => Just(Op::Pop)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn matches_a_bounded_vecdeque(capacity in 1usize..10, ops in prop::collection::vec(op(), 1..300)) {
        let queue = MpmcQueue::with_capacity(capacity).unwrap();
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(v) => {
                    let expected = if model.len() < capacity { model.push_back(v); Ok(()) } else { Err(Full(v)) };
                    prop_assert_eq!(queue.push(v), expected);
                }
                Op::Pop => prop_assert_eq!(queue.pop(), model.pop_front()),
            }
            prop_assert_eq!(queue.len(), model.len());
            prop_assert_eq!(queue.is_empty(), model.is_empty());
            prop_assert_eq!(queue.is_full(), model.len() == capacity);
            prop_assert_eq!(queue.capacity(), capacity);
        }
    }
}
