//! The wheel's storage: one slab of entries, allocated when the wheel is
//! built, threaded into intrusive doubly linked lists by 32-bit indices.
//!
//! Every wheel slot is one list (plus the overflow list); free entries form a
//! singly linked free list through the same `next` field. Linking, unlinking
//! and taking a free entry are O(1) and never allocate. Each entry carries a
//! generation that advances when the entry is freed, so a key minted for an
//! earlier occupant of the entry no longer matches.

use super::{LIST_COUNT, ListId, TimerError};

/// The "no entry" index that ends every list.
pub(super) const NIL: u32 = u32::MAX;
/// The list id of an entry on the free list.
const LIST_FREE: ListId = ListId::MAX;
/// The list id of a live entry that is on no list: taken off one and about to
/// be placed on another, or fired.
const LIST_NONE: ListId = ListId::MAX - 1;

/// One timer, or one free place for a timer.
struct Entry<T> {
    /// The deadline, in ticks from the wheel's start, rounded up.
    deadline_tick: u64,
    /// The previous entry on this entry's list, or [`NIL`]; unused when free.
    prev: u32,
    /// The next entry on this entry's list (or the free list), or [`NIL`].
    next: u32,
    /// Advances each time the entry is freed; keys carry it to detect staleness.
    generation: u32,
    /// The list the entry is on: a wheel list, [`LIST_FREE`] or [`LIST_NONE`].
    list: ListId,
    /// The payload; `Some` exactly when the entry is live.
    payload: Option<T>,
}

/// A fixed set of entries and the heads of the lists they are threaded on.
pub(super) struct Slab<T> {
    entries: Box<[Entry<T>]>,
    heads: [u32; LIST_COUNT],
    free_head: u32,
    len: usize,
}

impl<T> Slab<T> {
    /// Reserves `capacity` entries, all free. The caller has checked that
    /// `1 <= capacity <= CAPACITY_MAX`, so every index fits below [`NIL`].
    pub(super) fn new(capacity: usize) -> Result<Self, TimerError> {
        assert!(capacity >= 1 && capacity < NIL as usize);
        let mut entries = Vec::new();
        entries.try_reserve_exact(capacity).map_err(|_| TimerError::OutOfMemory { capacity })?;
        entries.extend((1..=capacity).map(|next| Entry {
            deadline_tick: 0,
            prev: NIL,
            next: if next == capacity { NIL } else { next as u32 },
            generation: 0,
            list: LIST_FREE,
            payload: None,
        }));
        Ok(Self {
            entries: entries.into_boxed_slice(),
            heads: [NIL; LIST_COUNT],
            free_head: 0,
            len: 0,
        })
    }

    pub(super) fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Takes a free entry for a timer, which is then on no list; hands the
    /// payload back when every entry is in use. Returns `(index, generation)`.
    pub(super) fn alloc(&mut self, deadline_tick: u64, payload: T) -> Result<(u32, u32), T> {
        let index = self.free_head;
        if index == NIL {
            debug_assert_eq!(self.len, self.capacity());
            return Err(payload);
        }
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.list == LIST_FREE && entry.payload.is_none());
        self.free_head = entry.next;
        (entry.deadline_tick, entry.prev, entry.next) = (deadline_tick, NIL, NIL);
        entry.list = LIST_NONE;
        entry.payload = Some(payload);
        self.len += 1;
        Ok((index, entry.generation))
    }

    /// Frees a live entry that is on no list, making every key for it stale,
    /// and returns its payload.
    pub(super) fn free(&mut self, index: u32) -> T {
        let entry = &mut self.entries[index as usize];
        debug_assert_eq!(entry.list, LIST_NONE, "only an unlinked entry may be freed");
        let payload = entry.payload.take().expect("a live entry holds its payload");
        entry.generation = entry.generation.wrapping_add(1);
        entry.list = LIST_FREE;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        payload
    }

    /// Whether a key's `(index, generation)` names a live entry.
    pub(super) fn is_live(&self, index: u32, generation: u32) -> bool {
        self.entries.get(index as usize).is_some_and(|entry| {
            entry.generation == generation && entry.list != LIST_FREE && entry.payload.is_some()
        })
    }

    pub(super) fn deadline_tick(&self, index: u32) -> u64 {
        self.entries[index as usize].deadline_tick
    }

    pub(super) fn generation(&self, index: u32) -> u32 {
        self.entries[index as usize].generation
    }

    pub(super) fn is_empty(&self, list: ListId) -> bool {
        self.heads[usize::from(list)] == NIL
    }

    /// Puts a live entry that is on no list at the front of `list`.
    pub(super) fn link(&mut self, list: ListId, index: u32) {
        let head = self.heads[usize::from(list)];
        let entry = &mut self.entries[index as usize];
        debug_assert_eq!(entry.list, LIST_NONE, "an entry is on one list at a time");
        debug_assert!(entry.payload.is_some());
        (entry.prev, entry.next, entry.list) = (NIL, head, list);
        if head != NIL {
            debug_assert_eq!(self.entries[head as usize].prev, NIL, "a list's head has no prev");
            self.entries[head as usize].prev = index;
        }
        self.heads[usize::from(list)] = index;
    }

    /// Takes a live entry off its list, in O(1); returns the list it was on.
    pub(super) fn unlink(&mut self, index: u32) -> ListId {
        let Entry { prev, next, list, .. } = self.entries[index as usize];
        debug_assert!(list != LIST_FREE && list != LIST_NONE, "unlinking an entry on no list");
        if prev == NIL {
            debug_assert_eq!(self.heads[usize::from(list)], index);
            self.heads[usize::from(list)] = next;
        } else {
            debug_assert_eq!(self.entries[prev as usize].next, index);
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            debug_assert_eq!(self.entries[next as usize].prev, index);
            self.entries[next as usize].prev = prev;
        }
        let entry = &mut self.entries[index as usize];
        (entry.prev, entry.next, entry.list) = (NIL, NIL, LIST_NONE);
        list
    }

    /// Empties `list` in O(1) and returns the first entry of the chain it held;
    /// walk the chain with [`Slab::take_from_chain`].
    pub(super) fn detach(&mut self, list: ListId) -> u32 {
        std::mem::replace(&mut self.heads[usize::from(list)], NIL)
    }

    /// Takes the first entry of a detached chain off it, leaving it on no
    /// list, and returns the rest of the chain.
    pub(super) fn take_from_chain(&mut self, index: u32) -> u32 {
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.list != LIST_FREE && entry.list != LIST_NONE && entry.prev == NIL);
        let rest = entry.next;
        (entry.next, entry.list) = (NIL, LIST_NONE);
        if rest != NIL {
            self.entries[rest as usize].prev = NIL;
        }
        rest
    }

    /// The earliest deadline on `list`, by walking it: O(length of the list).
    pub(super) fn min_deadline_tick(&self, list: ListId) -> Option<u64> {
        let mut cursor = self.heads[usize::from(list)];
        let mut min = None;
        while cursor != NIL {
            let entry = &self.entries[cursor as usize];
            min = Some(min.map_or(entry.deadline_tick, |m: u64| m.min(entry.deadline_tick)));
            cursor = entry.next;
        }
        min
    }

    /// Walks every list and the free list and panics on any broken link or
    /// count; calls `check` with each live entry's list and deadline.
    pub(super) fn check(&self, mut check: impl FnMut(ListId, u64)) {
        let mut live = 0;
        for (list, &head) in self.heads.iter().enumerate() {
            let mut prev = NIL;
            let mut cursor = head;
            while cursor != NIL {
                let entry = &self.entries[cursor as usize];
                assert_eq!(usize::from(entry.list), list, "entry {cursor} is on the wrong list");
                assert_eq!(entry.prev, prev, "entry {cursor} has a broken prev link");
                assert!(entry.payload.is_some(), "entry {cursor} is linked but holds no payload");
                check(entry.list, entry.deadline_tick);
                live += 1;
                assert!(live <= self.len, "a list is longer than the wheel holds: a cycle");
                (prev, cursor) = (cursor, entry.next);
            }
        }
        assert_eq!(live, self.len, "entries are lost from the lists");
        let mut free = 0;
        let mut cursor = self.free_head;
        while cursor != NIL {
            let entry = &self.entries[cursor as usize];
            assert!(
                entry.list == LIST_FREE && entry.payload.is_none(),
                "free entry {cursor} is live"
            );
            free += 1;
            assert!(free <= self.capacity(), "the free list has a cycle");
            cursor = entry.next;
        }
        assert_eq!(live + free, self.capacity(), "entries are lost from the free list");
    }
}
