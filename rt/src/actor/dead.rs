//! A dead actor's mailbox: who drains it, and how the signals in it that
//! expect an answer are answered.
//!
//! The dying shard drains the mailbox after marking the actor dead; a sender
//! whose push landed after the shard's last look (its `notify` found the
//! actor DEAD, see [`RunState`](crate::sync::run_state)) drains it itself.
//! `drain_lock` makes whichever thread drains the mailbox's one consumer.

use std::sync::atomic::{Ordering, fence};

use super::addr::{Shared, Signal, SysSignal};
use super::{ActorId, Down, ExitReason};
use crate::sync::mpsc::Envelope;

impl<M: Send + 'static> Shared<M> {
    /// Empties a dead actor's mailbox, answering signals that expect an
    /// answer (a link or a monitor gets `noproc`) and counting user messages
    /// as dead letters. Whoever holds `drain_lock` is the mailbox's single
    /// consumer, which makes the `unsafe` pops sound.
    pub(crate) fn drain_dead(&self) {
        debug_assert!(self.header.is_dead());
        // A `ReplyTo` dropped with a drained message was never handled: its
        // asker hears `Unhandled` (safe to resend), not `Dropped`.
        let _draining = super::Draining::begin(self.header.id);
        loop {
            if self.header.drain_lock.swap(true, Ordering::Acquire) {
                return; // another thread is draining and will see our push
            }
            // SAFETY: the actor is DEAD, so its shard no longer pops, and the
            // drain lock makes this thread the mailbox's only consumer.
            while let Some(envelope) = unsafe { self.mailbox.recv() } {
                match envelope {
                    Envelope::System(Signal::Sys(signal)) => answer_dead(self.header.id, signal),
                    Envelope::System(Signal::Reply(_) | Signal::Answer(..)) => {
                        self.header.sched.count_reply_dropped()
                    }
                    Envelope::User(_) => self.header.sched.count_dead_letter(),
                }
            }
            self.header.drain_lock.store(false, Ordering::Release);
            // A push may have landed between our last pop and the unlock, by
            // a sender that found the lock taken: look once more.
            fence(Ordering::SeqCst);
            if self.mailbox.is_empty() {
                return;
            }
            // A sender claimed a slot but has not written it yet (or wrote
            // it after our last pop and found the lock still ours). There
            // is no wake-up to block on here, on purpose: the signal that a
            // claimed slot got written is the slot's own stamp, which the
            // next pass reads, and an `Event` notified after every push
            // would put a SeqCst fence on every send in the runtime to
            // serve a path that runs once per death. The claimant is a few
            // instructions from its write (its claim and its write are
            // adjacent in `MpscQueue::push`) unless it was preempted, and
            // `yield_now` hands the CPU to it then; the loop ends once the
            // claim is written and drained (each pass pops what is written).
            std::thread::yield_now();
        }
    }
}

/// A dead actor's answer to a signal that expects one.
fn answer_dead(dead: ActorId, signal: SysSignal) {
    match signal {
        SysSignal::Link(from) => {
            let exit = SysSignal::Exit { from: dead, reason: ExitReason::NoProc, direct: false };
            let _ = from.target.send_sys(exit);
        }
        SysSignal::Monitor { watcher, monitor } => {
            let down = Down { monitor, actor: dead, reason: ExitReason::NoProc };
            let _ = watcher.target.send_sys(SysSignal::Down(down));
        }
        SysSignal::Start
        | SysSignal::Unlink(_)
        | SysSignal::Exit { .. }
        | SysSignal::Demonitor(_)
        | SysSignal::Down(_)
        | SysSignal::Stop(_) => {}
    }
}
