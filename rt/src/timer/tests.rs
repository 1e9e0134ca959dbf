//! Unit tests for the timer wheel, driven by synthetic instants
//! (`start + n * tick`); no test reads the clock's progress.

use std::time::{Duration, Instant};

use super::*;

const TICK: Duration = Duration::from_millis(1);

fn wheel<T>(capacity: usize) -> (TimerWheel<T>, Instant) {
    let start = Instant::now();
    (TimerWheel::new(capacity, TICK, start).expect("a valid wheel"), start)
}

/// The instant `ticks` ticks (of 1 ms) after `start`.
fn at(start: Instant, ticks: u64) -> Instant {
    start + Duration::from_millis(ticks)
}

/// Polls at `now`, checks the wheel, and returns what fired, in order.
fn poll<T>(wheel: &mut TimerWheel<T>, now: Instant) -> Vec<T> {
    let mut fired = Vec::new();
    let count = wheel.poll(now, |_, payload| fired.push(payload));
    assert_eq!(count, fired.len());
    wheel.check_invariants();
    fired
}

/// The level a pending timer is filed on, `LEVELS` for the overflow list.
fn level_of<T>(wheel: &TimerWheel<T>, key: TimerKey) -> usize {
    assert!(wheel.slab.is_live(key.index, key.generation));
    let list = list_for(wheel.elapsed_tick, wheel.slab.deadline_tick(key.index));
    level_slot(list).map_or(LEVELS, |(level, _)| level)
}

#[test]
fn new_rejects_bad_arguments() {
    let start = Instant::now();
    let new = |capacity, tick| TimerWheel::<()>::new(capacity, tick, start).map(|_| ());
    assert_eq!(new(0, TICK), Err(TimerError::ZeroCapacity));
    assert_eq!(
        new(CAPACITY_MAX + 1, TICK),
        Err(TimerError::CapacityTooLarge { requested: CAPACITY_MAX + 1, max: CAPACITY_MAX })
    );
    for tick in [Duration::ZERO, Duration::from_nanos(999), Duration::from_millis(1001)] {
        assert_eq!(
            new(1, tick),
            Err(TimerError::TickOutOfRange { tick, min: TICK_MIN, max: TICK_MAX })
        );
    }
    assert_eq!(new(1, TICK_MIN), Ok(()));
    assert_eq!(new(1, TICK_MAX), Ok(()));
    assert_eq!(new(1, TICK_DEFAULT), Ok(()));
}

#[test]
fn fires_at_its_tick_never_before() {
    let (mut wheel, start) = wheel(4);
    wheel.insert(at(start, 5), "on a tick").unwrap();
    // 5.3 ms rounds up to tick 6.
    wheel.insert(at(start, 5) + Duration::from_micros(300), "between ticks").unwrap();
    let quarter = Duration::from_micros(250);
    let mut now = start;
    while now < at(start, 5) {
        assert_eq!(poll(&mut wheel, now), Vec::<&str>::new(), "fired early at {now:?}");
        now += quarter;
    }
    assert_eq!(poll(&mut wheel, at(start, 5)), ["on a tick"]);
    assert!(poll(&mut wheel, at(start, 6) - Duration::from_nanos(1)).is_empty());
    assert_eq!(poll(&mut wheel, at(start, 6)), ["between ticks"]);
    assert!(wheel.is_empty());
}

#[test]
fn a_poll_a_tick_after_the_deadline_fires_it() {
    for offset_us in [0, 1, 500, 999, 1000, 64_300, 4_100_000] {
        let (mut wheel, start) = wheel(1);
        let deadline = start + Duration::from_micros(offset_us);
        wheel.insert(deadline, offset_us).unwrap();
        assert!(wheel.next_deadline().unwrap() < deadline + TICK);
        assert_eq!(poll(&mut wheel, deadline + TICK), [offset_us]);
    }
}

#[test]
fn cancel_before_fire_returns_the_payload_and_it_never_fires() {
    let (mut wheel, start) = wheel(4);
    let near = wheel.insert(at(start, 3), "near").unwrap();
    let far = wheel.insert(at(start, 5000), "far").unwrap();
    let kept = wheel.insert(at(start, 3), "kept").unwrap();
    assert_eq!(wheel.len(), 3);
    assert_eq!(wheel.cancel(near), Some("near"));
    assert_eq!(wheel.cancel(far), Some("far"));
    wheel.check_invariants();
    assert_eq!(wheel.len(), 1);
    assert_eq!(poll(&mut wheel, at(start, 10_000)), ["kept"]);
    assert_eq!(wheel.cancel(near), None, "cancelled twice");
    assert_eq!(wheel.cancel(kept), None, "cancelled after it fired");
    assert!(wheel.is_empty());
    assert_eq!(wheel.next_deadline(), None);
}

#[test]
fn the_fired_key_is_the_inserted_key_and_is_then_stale() {
    let (mut wheel, start) = wheel(2);
    let key = wheel.insert(at(start, 1), 'a').unwrap();
    let mut fired = Vec::new();
    wheel.poll(at(start, 1), |key, payload| fired.push((key, payload)));
    assert_eq!(fired, [(key, 'a')]);
    assert_eq!(wheel.cancel(key), None);
}

#[test]
fn a_stale_key_does_not_cancel_the_entry_s_next_timer() {
    let (mut wheel, start) = wheel(1);
    let old = wheel.insert(at(start, 1), "old").unwrap();
    assert_eq!(wheel.cancel(old), Some("old"));
    let new = wheel.insert(at(start, 2), "new").unwrap();
    assert_eq!(new.index, old.index, "capacity 1 reuses the entry");
    assert_ne!(new, old);
    assert_eq!(wheel.cancel(old), None);
    assert_eq!(poll(&mut wheel, at(start, 2)), ["new"]);
    let newer = wheel.insert(at(start, 3), "newer").unwrap();
    assert_eq!(wheel.cancel(new), None, "stale after firing and reuse");
    assert_eq!(wheel.cancel(newer), Some("newer"));
    let foreign = TimerKey { index: 7, generation: 0 };
    assert_eq!(wheel.cancel(foreign), None, "an index beyond the slab");
}

#[test]
fn full_hands_the_payload_back_and_the_entry_is_reused_after_firing() {
    let (mut wheel, start) = wheel(1);
    wheel.insert(at(start, 1), String::from("first")).unwrap();
    let rejected = wheel.insert(at(start, 1), String::from("second")).unwrap_err();
    assert_eq!(rejected.reason, TimerError::Full { capacity: 1 });
    assert!(rejected.to_string().contains("full (1 timers pending)"), "{rejected}");
    assert_eq!(rejected.into_payload(), "second");
    assert_eq!(wheel.len(), 1);
    assert_eq!(poll(&mut wheel, at(start, 1)), ["first"]);
    wheel.insert(at(start, 2), String::from("third")).unwrap();
    assert_eq!(poll(&mut wheel, at(start, 2)), ["third"]);
}

#[test]
fn a_level_2_timer_cascades_down_and_fires_at_its_tick() {
    let (mut wheel, start) = wheel(1);
    let deadline_tick = 2 * 64 * 64 + 5 * 64 + 7;
    let key = wheel.insert(at(start, deadline_tick), ()).unwrap();
    assert_eq!(level_of(&wheel, key), 2);
    let mut levels_seen = vec![2];
    for tick in 0..deadline_tick {
        assert!(poll(&mut wheel, at(start, tick)).is_empty(), "fired early at tick {tick}");
        let level = level_of(&wheel, key);
        if levels_seen.last() != Some(&level) {
            levels_seen.push(level);
        }
        assert!(wheel.next_deadline().unwrap() <= at(start, deadline_tick));
    }
    assert_eq!(levels_seen, [2, 1, 0], "cascaded through each level");
    assert_eq!(wheel.next_deadline(), Some(at(start, deadline_tick)));
    assert_eq!(poll(&mut wheel, at(start, deadline_tick)).len(), 1);
}

/// Parks until `next_deadline` and polls, as a shard does, until `deadline`
/// is next; checks that nothing fires before it and that it then fires.
fn drive_to<T: std::fmt::Debug>(wheel: &mut TimerWheel<T>, deadline: Instant) -> T {
    for _ in 0..2 * (LEVELS + 1) {
        let next = wheel.next_deadline().expect("a timer is pending");
        assert!(next <= deadline, "next_deadline {next:?} is after the deadline {deadline:?}");
        if next == deadline {
            assert!(poll(wheel, deadline - Duration::from_nanos(1)).is_empty());
            let mut fired = poll(wheel, deadline);
            assert_eq!(fired.len(), 1);
            return fired.remove(0);
        }
        assert!(poll(wheel, next).is_empty(), "fired early at {next:?}");
    }
    panic!("the timer did not come due within one cascade per level");
}

#[test]
fn far_deadlines_days_and_years_away_fire_on_time() {
    const DAY: Duration = Duration::from_secs(86_400);
    let (mut wheel, start) = wheel(4);
    let three_days = start + 3 * DAY + Duration::from_millis(17);
    let two_years = start + 800 * DAY + Duration::from_millis(3);
    let ten_years = start + 3650 * DAY;
    let k3 = wheel.insert(three_days, 3).unwrap();
    let k800 = wheel.insert(two_years, 800).unwrap();
    let k3650 = wheel.insert(ten_years, 3650).unwrap();
    assert_eq!(level_of(&wheel, k3), 4);
    assert_eq!(level_of(&wheel, k800), LEVELS, "beyond the span: on the overflow list");
    assert_eq!(level_of(&wheel, k3650), LEVELS);
    assert_eq!(drive_to(&mut wheel, three_days), 3);
    assert_eq!(drive_to(&mut wheel, two_years), 800);
    assert_eq!(drive_to(&mut wheel, ten_years), 3650);
    assert!(wheel.is_empty());
}

#[test]
fn a_timer_just_past_a_cascade_boundary_does_not_fire_at_the_boundary() {
    for level in 1..=LEVELS as u32 {
        let boundary = 1u64 << (SLOT_BITS * level);
        let (mut wheel, start) = wheel(2);
        wheel.insert(at(start, boundary + 1), "after").unwrap();
        wheel.insert(at(start, boundary), "at").unwrap();
        assert!(poll(&mut wheel, at(start, boundary - 1)).is_empty());
        assert_eq!(wheel.next_deadline(), Some(at(start, boundary)));
        assert_eq!(poll(&mut wheel, at(start, boundary)), ["at"], "level {level}");
        assert_eq!(wheel.next_deadline(), Some(at(start, boundary + 1)));
        assert_eq!(poll(&mut wheel, at(start, boundary + 1)), ["after"]);
    }
}

#[test]
fn one_large_jump_fires_every_level_in_deadline_order() {
    let (mut wheel, start) = wheel(16);
    let ticks = [1u64 << 40, 70, 0, 1 << 36, 5, 1 << 30, 63, 64, 4096, (1 << 36) - 1, 1 << 24];
    for tick in ticks {
        wheel.insert(start + Duration::from_millis(tick), tick).unwrap();
    }
    let mut sorted = ticks;
    sorted.sort_unstable();
    assert_eq!(poll(&mut wheel, start + Duration::from_millis(1 << 41)), sorted);
    assert!(wheel.is_empty());
}

#[test]
fn a_deadline_in_the_past_fires_at_the_next_poll() {
    let (mut wheel, start) = wheel(4);
    assert!(poll(&mut wheel, at(start, 100)).is_empty());
    wheel.insert(at(start, 50), "earlier").unwrap();
    wheel.insert(at(start, 100), "this tick").unwrap();
    if let Some(before_start) = start.checked_sub(Duration::from_secs(1)) {
        wheel.insert(before_start, "before start").unwrap();
    } else {
        wheel.insert(start, "before start").unwrap();
    }
    assert_eq!(wheel.next_deadline(), Some(at(start, 100)), "due now: do not park");
    let mut fired = poll(&mut wheel, at(start, 100));
    fired.sort_unstable();
    assert_eq!(fired, ["before start", "earlier", "this tick"]);
}

#[test]
fn next_deadline_is_exact_on_level_0_and_a_slot_start_above() {
    let (mut wheel, start) = wheel(4);
    assert_eq!(wheel.next_deadline(), None);
    let coarse = wheel.insert(at(start, 3 * 4096 + 100), ()).unwrap();
    assert_eq!(wheel.next_deadline(), Some(at(start, 3 * 4096)), "the level-2 slot's start");
    wheel.insert(at(start, 200), ()).unwrap();
    assert_eq!(wheel.next_deadline(), Some(at(start, 192)), "the level-1 slot's start");
    let fine = wheel.insert(at(start, 9) - Duration::from_micros(1), ()).unwrap();
    assert_eq!(wheel.next_deadline(), Some(at(start, 9)), "exact, rounded up to the tick");
    wheel.cancel(fine);
    assert!(poll(&mut wheel, at(start, 192)).is_empty());
    assert_eq!(wheel.next_deadline(), Some(at(start, 200)), "cascaded, now exact");
    wheel.cancel(coarse);
    assert_eq!(poll(&mut wheel, at(start, 200)).len(), 1);
    let overflow = wheel.insert(at(start, 1 << 37), ()).unwrap();
    assert_eq!(wheel.next_deadline(), Some(at(start, 1 << 36)), "the next span's start");
    assert_eq!(wheel.cancel(overflow), Some(()));
    assert_eq!(wheel.next_deadline(), None);
}

#[test]
fn a_deadline_beyond_the_limit_is_refused_with_the_payload() {
    let start = Instant::now();
    let mut wheel = TimerWheel::new(2, TICK_MAX, start).unwrap();
    let limit = TICK_MAX * 2;
    let Some(beyond) = start.checked_add(limit * (1 << 30) * (1 << 31) + TICK_MAX) else {
        return; // this platform's `Instant` cannot even express the deadline
    };
    let rejected = wheel.insert(beyond, "too far").unwrap_err();
    assert!(matches!(rejected.reason, TimerError::DeadlineTooFar { .. }), "{rejected:?}");
    assert_eq!(rejected.into_payload(), "too far");
    let at_limit = beyond - TICK_MAX;
    wheel.insert(at_limit, "at the limit").unwrap();
    wheel.check_invariants();
}

#[test]
fn a_poll_back_in_time_changes_nothing() {
    let (mut wheel, start) = wheel(4);
    wheel.insert(at(start, 120), "later").unwrap();
    assert!(poll(&mut wheel, at(start, 100)).is_empty());
    assert!(poll(&mut wheel, at(start, 50)).is_empty());
    assert!(poll(&mut wheel, start).is_empty());
    wheel.insert(at(start, 60), "past").unwrap();
    assert_eq!(poll(&mut wheel, at(start, 50)), ["past"], "due at the wheel's tick 100");
    assert!(poll(&mut wheel, at(start, 119)).is_empty());
    assert_eq!(poll(&mut wheel, at(start, 120)), ["later"]);
}

#[test]
fn a_fine_tick_counts_in_its_own_units() {
    let start = Instant::now();
    let tick = Duration::from_micros(100);
    let mut wheel = TimerWheel::new(2, tick, start).unwrap();
    assert_eq!(wheel.tick(), tick);
    wheel.insert(start + Duration::from_micros(250), "250us").unwrap();
    assert_eq!(wheel.next_deadline(), Some(start + Duration::from_micros(300)));
    assert!(poll(&mut wheel, start + Duration::from_micros(299)).is_empty());
    assert_eq!(poll(&mut wheel, start + Duration::from_micros(300)), ["250us"]);
}

#[test]
fn a_panic_in_fire_loses_no_other_timer() {
    let (mut wheel, start) = wheel(8);
    for payload in 0..4 {
        wheel.insert(at(start, 64), payload).unwrap();
    }
    wheel.insert(at(start, 70), 10).unwrap();
    let mut fired = Vec::new();
    let poll_and_panic = std::panic::AssertUnwindSafe(|| {
        wheel.poll(at(start, 100), |_, payload| {
            assert!(fired.len() < 2, "a payload that panics");
            fired.push(payload);
        })
    });
    assert!(std::panic::catch_unwind(poll_and_panic).is_err());
    wheel.check_invariants();
    assert_eq!(wheel.len(), 2, "two fired, one panicked, two remain");
    fired.extend(poll(&mut wheel, at(start, 100)));
    assert_eq!(fired.len(), 4);
    assert!(fired.contains(&10));
    assert!(wheel.is_empty());
}

#[test]
fn list_for_files_by_the_highest_differing_digit() {
    assert_eq!(list_for(0, 0), 0);
    assert_eq!(list_for(0, 63), 63);
    assert_eq!(list_for(0, 64), SLOTS as ListId + 1);
    assert_eq!(list_for(10, 3), 10, "past: the current level-0 slot");
    assert_eq!(list_for(60, 66), SLOTS as ListId + 1, "60 and 66 differ in digit 1");
    assert_eq!(list_for(64, 66), 2);
    assert_eq!(list_for(0, SPAN_TICKS - 1), (5 * SLOTS + 63) as ListId);
    assert_eq!(list_for(0, SPAN_TICKS), OVERFLOW_LIST);
    assert_eq!(list_for(SPAN_TICKS - 1, SPAN_TICKS), OVERFLOW_LIST, "crosses a span boundary");
}

#[test]
fn debug_shows_the_counts_not_the_payloads() {
    let (mut wheel, start) = wheel::<Vec<u8>>(3);
    wheel.insert(at(start, 1), vec![1]).unwrap();
    let debug = format!("{wheel:?}");
    assert!(debug.contains("len: 1") && debug.contains("capacity: 3"), "{debug}");
}
