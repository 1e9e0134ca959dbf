//! The SPSC ring, driven single-threaded by random operation sequences,
//! answers exactly as a `VecDeque` bounded at the same capacity.
#![cfg(not(zbmd_loom))]

use std::collections::VecDeque;

use proptest::prelude::*;
use zbmd_rt::sync::{Full, spsc};

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    PushSlice(Vec<u32>),
    Pop,
    PopInto(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u32>().prop_map(Op::Push),
        prop::collection::vec(any::<u32>(), 0..12).prop_map(Op::PushSlice),
        Just(Op::Pop),
        (0usize..12).prop_map(Op::PopInto),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn matches_a_bounded_vecdeque(capacity in 1usize..10, ops in prop::collection::vec(op(), 1..200)) {
        let (mut tx, mut rx) = spsc::channel(capacity).unwrap();
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(v) => {
                    let expected = if model.len() < capacity { model.push_back(v); Ok(()) } else { Err(Full(v)) };
                    prop_assert_eq!(tx.push(v), expected);
                }
                Op::PushSlice(values) => {
                    let room = (capacity - model.len()).min(values.len());
                    model.extend(&values[..room]);
                    prop_assert_eq!(tx.push_slice(&values), room);
                }
                Op::Pop => prop_assert_eq!(rx.pop(), model.pop_front()),
                Op::PopInto(n) => {
                    let mut out = vec![0; n];
                    let popped = rx.pop_into(&mut out);
                    let expected: Vec<u32> = (0..n.min(model.len())).filter_map(|_| model.pop_front()).collect();
                    prop_assert_eq!(&out[..popped], &expected[..]);
                }
            }
            prop_assert_eq!(tx.len(), model.len());
            prop_assert_eq!(rx.len(), model.len());
            prop_assert_eq!(rx.is_empty(), model.is_empty());
        }
    }
}
