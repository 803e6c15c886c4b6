//! An engine that evicts (and folds) beside one that keeps all history, on the same arrivals,
//! flushes and ClickHouse answers (an in-process fake): both must publish the same rows.

use super::events::snapshot;
use super::{default_funnels, FakeStore, ReadModel};
use leadstream_aggregator::{Engine, Ingested};
use leadstream_schemas::NormalizedEvent;

/// `state.allowed_lateness` unless given.
pub const LATENESS_MS: i64 = 3_600_000;
/// `state.idle_after`.
pub const IDLE_MS: i64 = 86_400_000;

/// An engine that evicts, one that does not, and what each published.
pub struct Pair {
    pub store: FakeStore,
    pub evicted: super::evicted::EvictedStore,
    pub bounded: Engine,
    pub full: Engine,
    pub bounded_rows: ReadModel,
    pub full_rows: ReadModel,
    version: u64,
    lateness_ms: i64,
    fold_min: Option<usize>,
}

impl Pair {
    /// The bounded engine evicts leads idle for [`IDLE_MS`], with the shipped lateness.
    pub fn new() -> Self {
        Self::with(LATENESS_MS, None)
    }

    /// Lateness `lateness_ms`; folding leads with at least `fold_min` settled inputs if given.
    pub fn with(lateness_ms: i64, fold_min: Option<usize>) -> Self {
        let mut bounded = Engine::new(default_funnels(), lateness_ms);
        bounded.set_idle_after(Some(IDLE_MS));
        if let Some(n) = fold_min {
            bounded.set_fold_min(n);
        }
        Self {
            store: FakeStore::default(),
            evicted: Default::default(),
            bounded,
            full: Engine::new(default_funnels(), lateness_ms),
            bounded_rows: ReadModel::default(),
            full_rows: ReadModel::default(),
            version: 0,
            lateness_ms,
            fold_min,
        }
    }

    /// Stored by the collector, then consumed by both; what the bounded engine did.
    pub fn arrive(&mut self, e: &NormalizedEvent) -> Ingested {
        self.store.store(e);
        self.full.ingest(e, 0);
        self.bounded.ingest(e, 0)
    }

    pub fn reload(&mut self) -> Vec<Ingested> {
        self.evicted.reload(&mut self.bounded)
    }

    /// Both flush, answering what they ask as the service does; the bounded one then evicts
    /// its idle groups. Returns what the parked events did once applied.
    pub fn flush(&mut self) -> Vec<Ingested> {
        self.version += 1;
        self.store.answer(&mut self.full);
        self.full_rows.apply(self.full.flush(self.version));
        let mut done = self.reload();
        for c in self.bounded.take_checks() {
            let copies = self.store.copies_of(&c);
            self.bounded.need_for_settle(&c, &copies);
            done.extend(self.reload());
            self.bounded.settle(&c, &copies);
        }
        for l in self.bounded.take_lookups() {
            let (claims, touches) = self.store.lookup(&l);
            self.bounded.need_for_learn(&l, &claims);
            done.extend(self.reload());
            self.bounded.learn(&l, &claims, &touches);
        }
        let mut out = self.bounded.flush(self.version);
        self.evicted.resolve(&mut self.bounded, &mut out);
        self.store.hide(&out.minute_tombstones);
        self.bounded_rows.apply(out);
        self.evicted.evict_idle(&mut self.bounded, self.version);
        // Taken as a checkpoint written (a restart here loads what `restart` takes).
        self.bounded.checkpoint_written();
        done
    }

    /// The bounded engine restarts from the checkpoints it takes now (right after a flush).
    pub fn restart(&mut self) {
        let mut restored = Engine::new(default_funnels(), self.lateness_ms);
        restored.set_idle_after(Some(IDLE_MS));
        if let Some(n) = self.fold_min {
            restored.set_fold_min(n);
        }
        for (_, bytes) in self.bounded.checkpoints(7) {
            restored.load_checkpoint(&bytes, 7).expect("loads");
        }
        restored.restored();
        self.bounded = restored;
    }

    pub fn assert_same(&self) {
        assert!(!snapshot(&self.full_rows).is_empty());
        super::assert_same_answers(&self.bounded_rows, &self.full_rows);
    }
}
