//! One kind of bucket: its cells, and the rule of which counts are known.
//!
//! A cell is *known* when its count is the bucket's count. Below its partition's horizon a
//! bucket may be stored instead of held (see `evict`), so a cell created there holds only the
//! change since, until the stored count is added (`Table::resolve`). For the same reason a
//! known cell below the horizon is kept at zero: dropping it would let a stored count from
//! before come back when the bucket is next touched.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::hash::Hash;

/// What every bucket key tells: whose partition and which minute.
pub trait Bucket: Copy + Hash + Eq {
    /// Partition of the leads counted.
    fn partition(&self) -> u16;
    /// Epoch minute.
    fn minute(&self) -> i32;
}

/// Buckets with their count.
pub(super) type Counts<K> = Vec<(K, i64)>;

#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    count: i64,
    /// Changed since the last [`Table::drain_changed`].
    dirty: bool,
    /// `count` is a change to a stored count not read yet.
    unknown: bool,
}

/// Cells of one kind of bucket.
#[derive(Debug)]
pub struct Table<K> {
    cells: HashMap<K, Cell>,
    /// Buckets read back since the last checkpoint written: not stored again before one is
    /// (a checkpoint that failed after the store would leave a newer stored count than the one
    /// the checkpoint before relies on).
    recent: HashSet<K>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            cells: HashMap::default(),
            recent: HashSet::default(),
        }
    }
}

/// Per partition: buckets of earlier minutes may be stored. The one place that says so.
pub(super) fn below(horizons: &HashMap<u16, i32>, partition: u16, minute: i32) -> bool {
    horizons.get(&partition).is_some_and(|h| minute < *h)
}

fn below_key(horizons: &HashMap<u16, i32>, k: &impl Bucket) -> bool {
    below(horizons, k.partition(), k.minute())
}

impl<K: Bucket> Table<K> {
    pub(super) fn add(&mut self, key: K, by: i64, horizons: &HashMap<u16, i32>) {
        let c = self.cells.entry(key).or_insert_with(|| Cell {
            unknown: below_key(horizons, &key),
            ..Cell::default()
        });
        c.count += by;
        c.dirty = true;
    }

    /// Changed cells with their count: `(known, unknown)`, the unknown ones with their change.
    pub(super) fn drain_changed(&mut self, horizons: &HashMap<u16, i32>) -> (Counts<K>, Counts<K>) {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        self.cells.retain(|k, c| {
            if c.dirty {
                match c.unknown {
                    false => known.push((*k, c.count)),
                    true => unknown.push((*k, c.count)),
                }
                c.dirty = false;
            }
            c.count != 0 || c.unknown || below_key(horizons, k)
        });
        (known, unknown)
    }

    /// Adds the stored count of an unknown cell (0 when none was stored).
    pub(super) fn resolve(&mut self, key: &K, stored: i64) -> Option<i64> {
        let c = self.cells.get_mut(key).filter(|c| c.unknown)?;
        c.count += stored;
        c.unknown = false;
        self.recent.insert(*key);
        Some(c.count)
    }

    /// Known cells below `horizons` that may be stored now.
    pub(super) fn idle(&self, horizons: &HashMap<u16, i32>) -> Vec<(K, i64)> {
        self.cells
            .iter()
            .filter(|(k, c)| {
                !c.unknown && !c.dirty && below_key(horizons, *k) && !self.recent.contains(*k)
            })
            .map(|(k, c)| (*k, c.count))
            .collect()
    }

    pub(super) fn remove(&mut self, keys: &[(K, i64)]) {
        for (k, _) in keys {
            self.cells.remove(k);
        }
    }

    pub(super) fn checkpoint_written(&mut self) {
        self.recent.clear();
    }

    pub(super) fn any_unknown(&self) -> bool {
        self.cells.values().any(|c| c.unknown)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (K, i64)> + '_ {
        self.cells.iter().map(|(k, c)| (*k, c.count))
    }

    /// Inserts a checkpoint's count (known, written).
    pub(super) fn insert(&mut self, key: K, count: i64) {
        self.cells.insert(
            key,
            Cell {
                count,
                ..Cell::default()
            },
        );
    }

    pub(super) fn len(&self) -> usize {
        self.cells.len()
    }

    /// Bytes the table's slots take.
    pub(super) fn bytes(&self) -> usize {
        self.cells.capacity() * (std::mem::size_of::<(K, Cell)>() + 1)
            + self.recent.capacity() * (std::mem::size_of::<K>() + 1)
    }
}
