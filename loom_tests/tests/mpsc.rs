//! loom models of the mailbox queue: every interleaving of two producers
//! and the consumer, within the preemption bound, delivers each message
//! exactly once and in its producer's order, never reads an unwritten slot
//! (loom tracks every cell access), answers full and empty truly, and lets a
//! system signal through while the user lane is full.
#![cfg(zbmd_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use zbmd_rt::sync::mpsc::{Envelope, MailboxReceiver, mailbox};

mod common;
use common::model;

/// Receives what is left.
fn drain<S, U>(rx: &mut MailboxReceiver<S, U>) -> Vec<Envelope<S, U>> {
    std::iter::from_fn(|| rx.recv()).collect()
}

/// Two producers send 1, 2 and 3, 4 into a user lane of two while the
/// receiver takes three times. Each producer's messages arrive in its
/// order, nothing is lost or duplicated, the first two sends are never
/// refused (a refusal needs two queued), and once the receiver knows every send has
/// returned, `None` means nothing is left.
#[test]
fn two_producers_keep_their_order() {
    model(|| {
        let (tx, mut rx) = mailbox::<(), usize>(1, 2).unwrap();
        let finished = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = [vec![1, 2], vec![3, 4]]
            .into_iter()
            .map(|values| {
                let (tx, finished) = (tx.clone(), finished.clone());
                thread::spawn(move || {
                    let accepted: Vec<usize> =
                        values.into_iter().filter(|&v| tx.send(v).is_ok()).collect();
                    finished.fetch_add(1, Ordering::Release);
                    accepted
                })
            })
            .collect();
        drop(tx);
        let mut out = Vec::new();
        let mut none_after_all_sends = false;
        for _ in 0..3 {
            let all_sent = finished.load(Ordering::Acquire) == 2;
            match rx.recv() {
                Some(envelope) => out.push(envelope),
                None => none_after_all_sends |= all_sent,
            }
        }
        let accepted: Vec<Vec<usize>> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        let rest = drain(&mut rx);
        assert!(!none_after_all_sends || rest.is_empty(), "None with {rest:?} ready");
        out.extend(rest);
        let out: Vec<usize> = out
            .into_iter()
            .map(|envelope| match envelope {
                Envelope::User(v) => v,
                Envelope::System(()) => panic!("nobody sent a signal"),
            })
            .collect();
        assert!(accepted.iter().map(Vec::len).sum::<usize>() >= 2, "a send refused with room");
        for mine in &accepted {
            let seen: Vec<usize> = out.iter().copied().filter(|v| mine.contains(v)).collect();
            assert_eq!(&seen, mine, "lost, duplicated or reordered: out {out:?}");
        }
        assert_eq!(out.len(), accepted.iter().map(Vec::len).sum::<usize>(), "out {out:?}");
    });
}

/// The user lane (capacity 1) is full; a producer sends one more user
/// message, then a stop signal, while the receiver takes once. The signal is
/// always accepted. If the receiver got the signal, its single `recv` did
/// not take the queued user message, so the user send (which came before
/// the signal) must have been refused. Nothing is lost or duplicated.
#[test]
fn a_full_user_lane_does_not_block_the_system_lane() {
    model(|| {
        let (tx, mut rx) = mailbox::<&'static str, usize>(1, 1).unwrap();
        tx.send(1).unwrap();
        let producer = thread::spawn(move || {
            let user = tx.send(2);
            assert!(tx.send_system("stop").is_ok(), "the system lane refused a signal");
            user.map_err(|full| full.into_inner())
        });
        let first = rx.recv().expect("a message was queued before the spawn");
        let user = producer.join().unwrap();
        if first == Envelope::System("stop") {
            assert_eq!(user, Err(2), "a user send into a full lane was accepted");
        }
        let mut all = vec![first];
        all.extend(drain(&mut rx));
        let mut expected = vec![Envelope::System("stop"), Envelope::User(1)];
        if user.is_ok() {
            expected.push(Envelope::User(2));
        }
        all.sort_by_key(|e| match e {
            Envelope::System(_) => 0,
            Envelope::User(v) => *v,
        });
        assert_eq!(all, expected);
    });
}
