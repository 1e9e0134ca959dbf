//! A vendor handle that destroys itself when its last holder lets go.
//!
//! A stream or event lives in the device's table behind an `Arc`; a call
//! that waits on it (`synchronize`, `read`, `event_synchronize`) clones the
//! `Arc` and waits outside the device's lock, so a concurrent destroy only
//! removes the table's holder and the handle is destroyed when the waiter
//! lets go. Each holder keeps the API object alive, so a CUDA context is
//! released only after its last stream and event are destroyed.

use std::sync::Arc;

use super::NativeApi;

/// A live `H` of API `A`, destroyed by `destroy` on drop.
pub(super) struct Owned<A: NativeApi, H: Copy> {
    raw: H,
    api: Arc<A>,
    destroy: unsafe fn(&A, H),
}

// SAFETY: `NativeApi`'s contract: every handle it hands out may be used and
// destroyed from any thread (its `destroy_*` methods bind the device
// themselves), and `A` itself is `Send + Sync`. The raw handle is never
// mutated through a shared reference.
unsafe impl<A: NativeApi, H: Copy> Send for Owned<A, H> {}
// SAFETY: as for `Send`.
unsafe impl<A: NativeApi, H: Copy> Sync for Owned<A, H> {}

impl<A: NativeApi, H: Copy> Owned<A, H> {
    /// Takes ownership of `raw`, to be destroyed with `destroy`.
    pub(super) fn new(api: &Arc<A>, raw: H, destroy: unsafe fn(&A, H)) -> Self {
        Owned { raw, api: Arc::clone(api), destroy }
    }

    /// The raw handle, live while `self` is.
    pub(super) fn raw(&self) -> H {
        self.raw
    }
}

impl<A: NativeApi, H: Copy> Drop for Owned<A, H> {
    fn drop(&mut self) {
        // SAFETY: `raw` came live from the API with this `destroy` (see
        // `new`'s callers); this is its only owner, dropping once, and the
        // API object it belongs to is held alive by `api`.
        unsafe { (self.destroy)(&self.api, self.raw) }
    }
}
