//! [`Source`]: where the answer path gets the current snapshot. One
//! `ArcSwap` that readers load without locks (once per batch of queries),
//! and one store lock that orders writers — a reload, a GeoIP swap and a
//! new health epoch each build the next snapshot from the one current under
//! that lock, so none overwrites another's change.

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::Snapshot;

pub struct Source {
    cell: ArcSwap<Snapshot>,
    store: Mutex<()>,
}

impl Source {
    pub fn new(first: Snapshot) -> Source {
        Source {
            cell: ArcSwap::from_pointee(first),
            store: Mutex::new(()),
        }
    }

    /// The current snapshot, for the length of a batch (no lock, no count
    /// taken in the common case).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.cell.load()
    }

    /// The current snapshot, to keep.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.cell.load_full()
    }

    /// Replaces the current snapshot with what `next` makes of it, if
    /// anything, under the store lock. Returns the replaced snapshot, which
    /// the caller should free off the answer path (`control::retire`).
    pub fn update(
        &self,
        next: impl FnOnce(&Snapshot) -> Option<Snapshot>,
    ) -> Option<Arc<Snapshot>> {
        let _order = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.cell.load_full();
        let new = next(&cur)?;
        Some(self.cell.swap(Arc::new(new)))
    }
}
