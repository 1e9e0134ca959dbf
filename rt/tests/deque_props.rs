//! Random operation sequences on the work-stealing deque, driven from one
//! thread, against `VecDeque` models: the owner's push is `push_back` and its
//! pop `pop_back`, a steal is `pop_front`, and a batch steal moves the front
//! of the victim's model to the back of the thief's local model. Every
//! answer, length and full/empty verdict must match.
#![cfg(not(zbmd_loom))]

use std::collections::VecDeque;

use proptest::prelude::*;
use zbmd_rt::sync::Full;
use zbmd_rt::sync::deque::{self, Steal, Stealer, Worker};

#[derive(Debug, Clone)]
enum Op {
    Push(u32),
    Pop,
    Steal,
    StealBatch { max: usize },
    LocalPop,
    LocalSteal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u32>().prop_map(Op::Push),
        2 => Just(Op::Pop),
        2 => Just(Op::Steal),
        2 => (0usize..6).prop_map(|max| Op::StealBatch { max }),
        1 => Just(Op::LocalPop),
        1 => Just(Op::LocalSteal),
    ]
}

/// One deque and its model.
struct Pair {
    worker: Worker<u32>,
    stealer: Stealer<u32>,
    model: VecDeque<u32>,
    capacity: usize,
}

impl Pair {
    fn new(capacity: usize) -> Self {
        let (worker, stealer) = deque::bounded(capacity).unwrap();
        Self { worker, stealer, model: VecDeque::new(), capacity }
    }

    fn check_len(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.worker.len(), self.model.len());
        prop_assert_eq!(self.stealer.len(), self.model.len());
        prop_assert_eq!(self.worker.is_empty(), self.model.is_empty());
        prop_assert_eq!(self.stealer.is_empty(), self.model.is_empty());
        Ok(())
    }

    fn pop(&mut self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.worker.pop(), self.model.pop_back());
        Ok(())
    }

    fn steal(&mut self) -> Result<(), TestCaseError> {
        let expected = match self.model.pop_front() {
            Some(value) => Steal::Success(value),
            None => Steal::Empty,
        };
        prop_assert_eq!(self.stealer.steal(), expected);
        Ok(())
    }
}

/// The model of `steal_batch_and_pop`: half the victim rounded up, at most
/// `max` (0 counts as 1), at most one more than the local room.
fn model_batch(victim: &mut Pair, local: &mut Pair, max: usize) -> Steal<u32> {
    let Some(first) = victim.model.pop_front() else {
        return Steal::Empty;
    };
    let half = (victim.model.len() + 1).div_ceil(2);
    let room = local.capacity - local.model.len();
    let total = half.min(max.max(1)).min(room + 1);
    for _ in 1..total {
        let moved = victim.model.pop_front().expect("half never exceeds the length");
        local.model.push_back(moved);
    }
    Steal::Success(first)
}

fn run(capacity: usize, local_capacity: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut victim = Pair::new(capacity);
    let mut local = Pair::new(local_capacity);
    prop_assert_eq!(victim.worker.capacity(), capacity);
    for op in ops {
        match op {
            Op::Push(value) => {
                let expected =
                    if victim.model.len() == capacity { Err(Full(*value)) } else { Ok(()) };
                let answer = victim.worker.push(*value);
                if answer.is_ok() {
                    victim.model.push_back(*value);
                }
                prop_assert_eq!(answer, expected);
            }
            Op::Pop => victim.pop()?,
            Op::Steal => victim.steal()?,
            Op::StealBatch { max } => {
                let answer = victim.stealer.steal_batch_and_pop(&local.worker, *max);
                prop_assert_eq!(answer, model_batch(&mut victim, &mut local, *max));
            }
            Op::LocalPop => local.pop()?,
            Op::LocalSteal => local.steal()?,
        }
        victim.check_len()?;
        local.check_len()?;
    }
    // Drain both: whatever the model still holds comes out in LIFO order.
    while !victim.model.is_empty() {
        victim.pop()?;
    }
    prop_assert_eq!(victim.worker.pop(), None);
    prop_assert!(victim.stealer.steal().is_empty());
    while !local.model.is_empty() {
        local.steal()?;
    }
    prop_assert!(local.stealer.steal().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn matches_the_vecdeque_model(
        capacity in 1usize..=9,
        local_capacity in 1usize..=5,
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        run(capacity, local_capacity, &ops)?;
    }
}
