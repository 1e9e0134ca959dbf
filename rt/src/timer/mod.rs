//! Per-shard timers: a bounded hierarchical timing wheel.
//!
//! # Algorithm
//!
//! The hierarchical timing wheel of Varghese and Lauck ("Hashed and
//! Hierarchical Timing Wheels", SOSP 1987, scheme 7), in the shape tokio's time
//! driver uses: [`LEVELS`] levels of [`SLOTS`] slots, each level 64 times
//! coarser than the one below. A slot of level `l` spans `64^l` ticks, so the
//! six levels together span `2^36` ticks (795 days at the default 1 ms tick).
//!
//! Time is counted in ticks from the wheel's `start`. The wheel keeps
//! `elapsed`, the tick it has been polled up to, and files a timer due at tick
//! `d` by the highest 6-bit digit in which `d` and `elapsed` differ: a timer
//! that differs only in the lowest digit sits on level 0 in the slot of its
//! exact tick; one that differs in digit `l` sits on level `l`, in the slot
//! named by its digit `l`. When `elapsed` reaches the start of a slot above
//! level 0, the slot's timers are *cascaded*: filed again against the new
//! `elapsed`, which puts each on a lower level (or fires it), so a timer
//! moves down at most once per level. Each level keeps a 64-bit
//! bitmap of its non-empty slots, so the next slot to visit is found with one
//! `trailing_zeros` per level.
//!
//! Timers live in a slab allocated once, when the wheel is built: entries are
//! threaded into each slot's list by 32-bit indices, doubly linked so that a
//! cancel is O(1). Nothing allocates after [`TimerWheel::new`].
//!
//! # What it promises
//!
//! * **Never early.** A deadline is rounded *up* to a tick and `now` is
//!   rounded *down*, so a timer fires only at a poll whose `now` is at or
//!   after its deadline.
//! * **At most a tick late** when polled on time: a poll at any `now` at or
//!   after `deadline + tick` fires it. [`TimerWheel::next_deadline`] says when
//!   to poll next.
//! * **Order.** One poll fires its timers in order of deadline tick (ties in
//!   no particular order); a timer whose deadline had already passed when it
//!   was inserted counts as due at the tick the wheel had been polled to.
//! * **Deadlines in the past** (before the last poll, or even before
//!   `start`) are accepted and fire at the next poll.
//! * **Deadlines beyond the wheel's span** (further than `2^36` ticks past
//!   `elapsed`) are accepted: they wait on an overflow list that is cascaded
//!   each time `elapsed` crosses into a new `2^36`-tick span, and fire on
//!   time like any other. A timer is never lost or clamped early. The only
//!   deadlines refused are those more than [`DEADLINE_TICKS_MAX`] ticks after
//!   `start` (146,000 years even at the finest tick), with
//!   [`TimerError::DeadlineTooFar`]: no clock reaches them, and refusing them
//!   keeps all tick arithmetic far from overflow.
//! * **A panic in `fire`** loses only the timer being fired: the others stay
//!   pending and the wheel stays consistent.
//! * **A full wheel** refuses the timer with [`TimerError::Full`] inside an
//!   [`InsertError`] that hands the payload back.
//! * **Stale keys** (the timer fired or was cancelled, even if its entry now
//!   holds another timer) are detected by a generation counter in each entry
//!   and make [`TimerWheel::cancel`] answer `None`. The counter is 32 bits: a
//!   key could be mistaken for a new timer only after its entry was reused
//!   2^32 times while the key was kept.
//!
//! # Costs
//!
//! `insert` and `cancel` are O(1); `next_deadline` is O(levels); `poll` is
//! O(levels) per slot it visits plus O(1) per timer it fires or cascades,
//! and it visits only occupied slots, never empty ticks. The overflow list
//! is visited only once the wheel proper is empty and `now` has passed the
//! end of the current span: a visit walks the list to find its earliest
//! deadline and jumps straight to it (or to `now`), so a poll crosses any
//! number of empty spans at once, and makes at most one overflow visit more
//! than the overflow timers it fires.

mod error;
mod slab;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

pub use error::{InsertError, TimerError};
use slab::{NIL, Slab};

/// The wheel's levels. Six levels of six bits span `2^36` ticks, 795 days at
/// the default tick: every timeout a runtime sets (ask timeouts, retries,
/// leases) lands on the wheel proper, and the rare longer one waits on the
/// overflow list. More levels would add a bitmap scan to every
/// `next_deadline` for timers nobody sets.
pub const LEVELS: usize = 6;

/// Slots per level: 64, so a level's occupancy is one `u64` bitmap and the
/// next occupied slot is one `trailing_zeros` away.
pub const SLOTS: usize = 1 << SLOT_BITS;

/// The default tick: 1 ms. It is the resolution of Erlang's `send_after` and
/// of the millisecond timeouts actor code is written with, so those fire
/// exactly on their tick; it bounds a parked shard to 1000 timer wake-ups a
/// second; and it lets the wheel proper span 795 days. A finer tick (say
/// 100 µs) buys precision for sub-millisecond deadlines at the price of more
/// wake-ups and a shorter span (79 days).
pub const TICK_DEFAULT: Duration = Duration::from_millis(1);

/// The finest tick a wheel accepts: 1 µs. A parked shard wakes through the
/// kernel (a futex wake-up costs microseconds), so a finer tick adds no real
/// precision, only cascades; the wheel proper still spans 19 hours at 1 µs.
pub const TICK_MIN: Duration = Duration::from_micros(1);

/// The coarsest tick a wheel accepts: 1 s. Every timer may fire up to a tick
/// late, and a second is already coarser than any useful timeout resolution.
pub const TICK_MAX: Duration = Duration::from_secs(1);

/// The most timers one wheel holds: 2^30. Entries are named by 32-bit
/// indices with `u32::MAX` as the end of a list, and at 2^30 the slab is
/// already tens of gigabytes, far beyond any shard's need.
pub const CAPACITY_MAX: usize = 1 << 30;

/// The furthest deadline a wheel accepts, in ticks after its start: 2^62.
/// That is 146,000 years at the finest tick, so no real deadline is refused,
/// and it keeps every tick computation (span ends, tick-to-nanosecond
/// products in `u128`) far from overflow.
pub const DEADLINE_TICKS_MAX: u64 = 1 << 62;

/// Bits of a tick count per level.
const SLOT_BITS: u32 = 6;
/// The lowest digit of a tick count.
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// Ticks the wheel proper spans: `64^LEVELS`.
const SPAN_TICKS: u64 = 1 << (SLOT_BITS as usize * LEVELS);

/// Names one of the wheel's lists: `level * SLOTS + slot`, or [`OVERFLOW_LIST`].
type ListId = u16;
/// The list of timers beyond the wheel proper's span.
const OVERFLOW_LIST: ListId = (LEVELS * SLOTS) as ListId;
/// The number of lists: every slot of every level, and the overflow list.
const LIST_COUNT: usize = LEVELS * SLOTS + 1;

/// Names a timer set on a [`TimerWheel`], for [`TimerWheel::cancel`].
///
/// A key outlives its timer: once the timer fired or was cancelled, the key
/// is stale, and the wheel says so, even after the timer's entry was reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// The next list the wheel must visit, and the tick at which it must.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    list: ListId,
    tick: u64,
}

/// A bounded hierarchical timing wheel holding payloads of type `T` (what a
/// shard delivers when a timer fires, such as an actor and a message).
///
/// ```
/// use std::time::{Duration, Instant};
/// use zbmd_rt::timer::{TICK_DEFAULT, TimerWheel};
///
/// let start = Instant::now();
/// let mut wheel = TimerWheel::new(1024, TICK_DEFAULT, start)?;
/// let ping = wheel.insert(start + Duration::from_millis(20), "ping").map_err(|e| e.reason)?;
/// wheel.insert(start + Duration::from_millis(50), "pong").map_err(|e| e.reason)?;
/// assert_eq!(wheel.cancel(ping), Some("ping"));
///
/// // A shard parks until `next_deadline`, then polls.
/// assert_eq!(wheel.next_deadline(), Some(start + Duration::from_millis(50)));
/// let mut fired = Vec::new();
/// wheel.poll(start + Duration::from_millis(50), |_key, payload| fired.push(payload));
/// assert_eq!(fired, ["pong"]);
/// assert!(wheel.is_empty());
/// # Ok::<(), zbmd_rt::timer::TimerError>(())
/// ```
pub struct TimerWheel<T> {
    start: Instant,
    tick: Duration,
    /// `tick` in nanoseconds, at most 10^9.
    tick_ns: u64,
    /// The tick the wheel has been polled up to; every timer due at or before
    /// it has fired, except those inserted since with deadlines in the past.
    elapsed_tick: u64,
    /// Per level, bit `s` is set exactly when slot `s` holds a timer.
    occupied: [u64; LEVELS],
    slab: Slab<T>,
}

impl<T> TimerWheel<T> {
    /// Builds a wheel for at most `capacity` pending timers, counting time in
    /// `tick`s from `start`. All memory is reserved here.
    pub fn new(capacity: usize, tick: Duration, start: Instant) -> Result<Self, TimerError> {
        if capacity == 0 {
            return Err(TimerError::ZeroCapacity);
        }
        if capacity > CAPACITY_MAX {
            return Err(TimerError::CapacityTooLarge { requested: capacity, max: CAPACITY_MAX });
        }
        if !(TICK_MIN..=TICK_MAX).contains(&tick) {
            return Err(TimerError::TickOutOfRange { tick, min: TICK_MIN, max: TICK_MAX });
        }
        let tick_ns =
            u64::try_from(tick.as_nanos()).expect("TICK_MAX is far below u64 nanoseconds");
        let slab = Slab::new(capacity)?;
        Ok(Self { start, tick, tick_ns, elapsed_tick: 0, occupied: [0; LEVELS], slab })
    }

    /// Sets a timer that hands `payload` to [`TimerWheel::poll`]'s `fire` at
    /// the first poll at or after `deadline` (rounded up to a tick). A
    /// deadline in the past fires at the next poll.
    ///
    /// Fails, handing `payload` back, when the wheel is full
    /// ([`TimerError::Full`]) or the deadline is beyond
    /// [`DEADLINE_TICKS_MAX`] ([`TimerError::DeadlineTooFar`]).
    pub fn insert(&mut self, deadline: Instant, payload: T) -> Result<TimerKey, InsertError<T>> {
        let deadline_tick = match self.deadline_tick(deadline) {
            Ok(tick) => tick,
            Err(reason) => return Err(InsertError { reason, payload }),
        };
        let capacity = self.capacity();
        let (index, generation) = self
            .slab
            .alloc(deadline_tick, payload)
            .map_err(|payload| InsertError { reason: TimerError::Full { capacity }, payload })?;
        self.file(index);
        Ok(TimerKey { index, generation })
    }

    /// Cancels a pending timer and returns its payload; `None` when the key
    /// is stale (the timer already fired or was cancelled) or not from this
    /// wheel.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if !self.slab.is_live(key.index, key.generation) {
            return None;
        }
        let list = self.slab.unlink(key.index);
        self.clear_if_empty(list);
        Some(self.slab.free(key.index))
    }

    /// When the wheel next has work: the instant to park until before the
    /// next [`TimerWheel::poll`]; `None` when no timer is pending.
    ///
    /// The answer is never later than the earliest pending deadline rounded
    /// up to a tick, so parking until it and then polling fires that timer
    /// at most a tick late. It may be earlier: when the earliest timer sits on
    /// a coarse level, the answer is the start of its slot (at most that
    /// level's slot span before the deadline), where a poll cascades it to a
    /// finer level; when it is on the overflow list, the answer is the start
    /// of the next `2^36`-tick span. Polling then does no harm, and asking
    /// again gives a later answer. It is exact for a timer within the
    /// 64-tick block the wheel was last polled in. It is at or before the
    /// last poll's `now` only when a timer was inserted with a deadline
    /// already past, which the next poll fires. O(levels).
    pub fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.next_expiry()?;
        let instant = self.instant_at(expiry.tick);
        // Every expiry is at or before a pending timer's deadline tick, and
        // `insert` refused any deadline tick whose instant does not exist.
        Some(instant.expect("an expiry precedes a deadline that insert checked is representable"))
    }

    /// Fires every timer due at `now` (rounded down to a tick), calling
    /// `fire` with each one's key and payload in order of deadline, and
    /// returns how many fired. Coarse slots whose start has passed are
    /// cascaded on the way. A `now` earlier than a previous poll's is treated
    /// as that poll's.
    ///
    /// `fire` cannot reach the wheel; to re-arm an interval, keep what to set
    /// and insert it after the poll. Should `fire` panic, the panic goes on
    /// to the caller, the timer it was handed is gone, and every other timer
    /// stays pending: the wheel stays consistent and the next poll carries on.
    pub fn poll(&mut self, now: Instant, mut fire: impl FnMut(TimerKey, T)) -> usize {
        let now_tick = self.now_tick(now).max(self.elapsed_tick);
        let mut fired = 0;
        while let Some(expiry) = self.next_expiry() {
            if expiry.tick > now_tick {
                break;
            }
            debug_assert!(expiry.tick >= self.elapsed_tick, "the wheel never moves backwards");
            fired += self.expire(expiry, now_tick, &mut fire);
        }
        self.elapsed_tick = now_tick;
        fired
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// The most timers the wheel holds at once.
    pub fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    /// The wheel's tick, the granularity of its deadlines.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Walks the whole wheel and panics if any invariant is broken: list
    /// links, counts, occupancy bitmaps, and every timer filed on the list its
    /// deadline and the wheel's position call for. O(capacity); for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut seen = [0u64; LEVELS];
        self.slab.check(|list, deadline_tick| {
            assert_eq!(list, list_for(self.elapsed_tick, deadline_tick), "a timer is misfiled");
            if let Some((level, slot)) = level_slot(list) {
                seen[level] |= 1 << slot;
            }
        });
        assert_eq!(seen, self.occupied, "the occupancy bitmaps disagree with the lists");
    }

    /// Visits one list at its expiry: fires its timers that are due and files
    /// the rest again, lower down. Returns how many fired.
    fn expire(
        &mut self,
        expiry: Expiry,
        now_tick: u64,
        fire: &mut impl FnMut(TimerKey, T),
    ) -> usize {
        self.elapsed_tick = if expiry.list == OVERFLOW_LIST {
            self.overflow_target(expiry.tick, now_tick)
        } else {
            expiry.tick
        };
        let first = self.slab.detach(expiry.list);
        debug_assert!(first != NIL, "the occupancy bitmap named an empty slot");
        self.clear_if_empty(expiry.list);
        let mut chain = Expiring { wheel: self, rest: first };
        let mut fired = 0;
        while chain.rest != NIL {
            let index = chain.rest;
            let wheel = &mut *chain.wheel;
            chain.rest = wheel.slab.take_from_chain(index);
            if wheel.slab.deadline_tick(index) <= wheel.elapsed_tick {
                let key = TimerKey { index, generation: wheel.slab.generation(index) };
                fire(key, wheel.slab.free(index));
                fired += 1;
            } else {
                wheel.file(index);
            }
        }
        fired
    }

    /// Where to move `elapsed` to when the overflow list is visited. The
    /// wheel proper is empty then, so it may jump past the span boundary
    /// `span_start` as far as the earliest overflow deadline, or `now`: a
    /// large jump then crosses many empty spans in one step.
    fn overflow_target(&self, span_start: u64, now_tick: u64) -> u64 {
        debug_assert_eq!(self.occupied, [0; LEVELS], "overflow is visited only after the wheel");
        let earliest = self.slab.min_deadline_tick(OVERFLOW_LIST).unwrap_or(span_start);
        debug_assert!(earliest >= span_start, "an overflow timer is due in the current span");
        let target = earliest.min(now_tick);
        debug_assert!(target >= span_start && target >= self.elapsed_tick);
        target
    }

    /// The next list to visit and its tick: the first occupied slot at or
    /// after the wheel's position on the finest non-empty level, else the
    /// overflow list at the start of the next span.
    fn next_expiry(&self) -> Option<Expiry> {
        (0..LEVELS).find_map(|level| self.next_expiry_on(level)).or_else(|| {
            let span_next = (self.elapsed_tick | (SPAN_TICKS - 1)) + 1;
            (!self.slab.is_empty(OVERFLOW_LIST))
                .then_some(Expiry { list: OVERFLOW_LIST, tick: span_next })
        })
    }

    /// The first occupied slot on `level`, with the tick at which it starts.
    fn next_expiry_on(&self, level: usize) -> Option<Expiry> {
        let occupied = self.occupied[level];
        let shift = SLOT_BITS * level as u32;
        let position = (self.elapsed_tick >> shift) & SLOT_MASK;
        // Level 0 may hold timers in the current slot (due now); a coarser
        // level's current slot was cascaded when the wheel entered it.
        let behind = if level == 0 { (1 << position) - 1 } else { u64::MAX >> (63 - position) };
        debug_assert_eq!(occupied & behind, 0, "level {level} holds a slot the wheel has passed");
        if occupied == 0 {
            return None;
        }
        let slot = u64::from(occupied.trailing_zeros());
        let level_start = self.elapsed_tick & !((1 << (shift + SLOT_BITS)) - 1);
        Some(Expiry {
            list: (level * SLOTS) as ListId + slot as ListId,
            tick: level_start + (slot << shift),
        })
    }

    /// Puts a timer that is on no list on the list its deadline calls for.
    fn file(&mut self, index: u32) {
        let list = list_for(self.elapsed_tick, self.slab.deadline_tick(index));
        self.slab.link(list, index);
        if let Some((level, slot)) = level_slot(list) {
            self.occupied[level] |= 1 << slot;
        }
    }

    /// Clears a slot's occupancy bit once its list is empty.
    fn clear_if_empty(&mut self, list: ListId) {
        if let Some((level, slot)) = level_slot(list) {
            if self.slab.is_empty(list) {
                self.occupied[level] &= !(1 << slot);
            }
        }
    }

    /// The tick a deadline is due at: rounded up, so it never fires early.
    fn deadline_tick(&self, deadline: Instant) -> Result<u64, TimerError> {
        let after_start = deadline.saturating_duration_since(self.start);
        let ticks = after_start.as_nanos().div_ceil(u128::from(self.tick_ns));
        u64::try_from(ticks)
            .ok()
            .filter(|&tick| tick <= DEADLINE_TICKS_MAX && self.instant_at(tick).is_some())
            .ok_or(TimerError::DeadlineTooFar {
                after_start,
                max: self.ticks_to_duration(DEADLINE_TICKS_MAX),
            })
    }

    /// The tick `now` falls in: rounded down, so no timer fires early.
    fn now_tick(&self, now: Instant) -> u64 {
        let ticks = now.saturating_duration_since(self.start).as_nanos() / u128::from(self.tick_ns);
        u64::try_from(ticks).unwrap_or(u64::MAX).min(DEADLINE_TICKS_MAX)
    }

    /// The instant tick `tick` starts at, if the platform's `Instant` reaches it.
    fn instant_at(&self, tick: u64) -> Option<Instant> {
        self.start.checked_add(self.ticks_to_duration(tick))
    }

    /// `ticks` ticks as a duration; exact for any tick up to `DEADLINE_TICKS_MAX`.
    fn ticks_to_duration(&self, ticks: u64) -> Duration {
        const NANOS_PER_SEC: u128 = 1_000_000_000;
        let nanos = u128::from(ticks) * u128::from(self.tick_ns);
        let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
        Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
    }
}

/// The part of a list [`TimerWheel::expire`] has not visited yet. Should
/// `fire` panic, dropping this files those timers again (they fire at the next
/// poll), so a panic loses no timer but the one whose payload `fire` took, and
/// leaves the wheel consistent.
struct Expiring<'a, T> {
    wheel: &'a mut TimerWheel<T>,
    rest: u32,
}

impl<T> Drop for Expiring<'_, T> {
    fn drop(&mut self) {
        while self.rest != NIL {
            let index = self.rest;
            self.rest = self.wheel.slab.take_from_chain(index);
            self.wheel.file(index);
        }
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("tick", &self.tick)
            .field("elapsed_tick", &self.elapsed_tick)
            .finish_non_exhaustive()
    }
}

/// The list a timer due at `deadline_tick` belongs on while the wheel is at
/// `elapsed_tick`: the level of the highest 6-bit digit in which the two
/// differ, in the slot of the deadline's digit there; the current level-0
/// slot for a deadline already due; the overflow list beyond the span.
fn list_for(elapsed_tick: u64, deadline_tick: u64) -> ListId {
    let due_tick = deadline_tick.max(elapsed_tick);
    let differing = (elapsed_tick ^ due_tick) | SLOT_MASK;
    let level = ((63 - differing.leading_zeros()) / SLOT_BITS) as usize;
    if level >= LEVELS {
        return OVERFLOW_LIST;
    }
    let slot = (due_tick >> (SLOT_BITS * level as u32)) & SLOT_MASK;
    (level * SLOTS) as ListId + slot as ListId
}

/// The level and slot a list stands for; `None` for the overflow list.
fn level_slot(list: ListId) -> Option<(usize, u32)> {
    let list = usize::from(list);
    (list < LEVELS * SLOTS).then_some((list / SLOTS, (list % SLOTS) as u32))
}
