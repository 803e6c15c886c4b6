//! Where the engine's memory goes (the benchmark prints it beside the measured heap).

use super::compact::CompactEvent;
use super::identity::Claim;
use super::ledger::Published;
use super::Engine;
use rustc_hash::FxHashMap as HashMap;

/// Bytes per part of the engine's state (see [`Engine::footprint`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    /// Lead table slots (key and lead inline).
    pub lead_slots: usize,
    /// Device table slots.
    pub device_slots: usize,
    /// Compact events of leads and devices.
    pub events: usize,
    /// Device claims.
    pub claims: usize,
    /// Rollup bucket tables.
    pub rollups: usize,
    /// Leads waiting for the next flush, with what they published.
    pub pending: usize,
    /// Bloom filters: of the ids held (copies) and of the keys and ids evicted.
    pub filters: usize,
}

impl Engine {
    /// Where the state's memory goes, in bytes (from table capacities and event counts; the
    /// benchmark prints it beside the measured heap).
    pub fn footprint(&self) -> Footprint {
        fn slots<K, V>(map: &HashMap<K, V>) -> usize {
            map.capacity() * (std::mem::size_of::<(K, V)>() + 1)
        }
        let event = std::mem::size_of::<CompactEvent>();
        Footprint {
            lead_slots: slots(&self.leads),
            device_slots: slots(&self.devices),
            events: self
                .leads
                .values()
                .map(|l| l.events.capacity() * event)
                .chain(self.devices.values().map(|d| d.touches.capacity() * event))
                .sum(),
            claims: self.devices.values().filter(|d| d.owner.is_some()).count()
                * std::mem::size_of::<Claim>(),
            rollups: self.rollups.table_bytes(),
            pending: slots(&self.dirty)
                + self.snapshots.published.capacity() * std::mem::size_of::<Published>()
                + self.snapshots.words.capacity() * 4,
            filters: self.copies.filter_bytes() + self.evicted.filter_bytes(),
        }
    }
}
