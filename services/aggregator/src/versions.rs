//! Row versions that fence a member off its successors. The aggregator's tables replace rows by
//! version (`ReplacingMergeTree(version, is_deleted)`), so a member that lost its partitions
//! but still writes (paused by the machine, evicted while busy) must never write newer versions
//! than the member that took them over, whatever the two clocks say.
//!
//! A version is `(epoch << 32) | sequence`. Every restore takes a new epoch: one above every
//! epoch a member took before (recorded in `aggregator_epochs` before any row is written with
//! it) and above every version stored. A member that restored before the current owner did
//! therefore holds a lower epoch and loses every replacement against the owner's rows; within
//! an epoch the sequence grows with every flush. Clocks play no part.

use clickhouse::Client;
use serde::Serialize;

/// Bits of a version below the epoch.
const SEQUENCE_BITS: u32 = 32;

/// The versions of one restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    epoch: u64,
    sequence: u64,
}

impl Versions {
    /// Versions of `epoch`.
    pub fn of_epoch(epoch: u64) -> Self {
        Self { epoch, sequence: 0 }
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The version issued last (of the epoch's start before any).
    pub fn last(&self) -> u64 {
        (self.epoch << SEQUENCE_BITS) | self.sequence
    }

    /// The next version, newer than every one issued before in this epoch.
    pub fn issue(&mut self) -> u64 {
        self.sequence = (self.sequence + 1).min((1 << SEQUENCE_BITS) - 1);
        (self.epoch << SEQUENCE_BITS) | self.sequence
    }
}

/// The epoch that follows `max_epoch` and every stored `max_version`.
pub fn next_epoch(max_epoch: u64, max_version: u64) -> u64 {
    max_epoch.max(max_version >> SEQUENCE_BITS) + 1
}

#[derive(Debug, clickhouse::Row, Serialize)]
struct EpochRow<'a> {
    epoch: u64,
    member: &'a str,
    partitions: Vec<u32>,
}

/// Takes and records the epoch of a restore of `partitions` by `member`.
pub async fn reserve(
    client: &Client,
    member: &str,
    partitions: Vec<u32>,
) -> Result<Versions, clickhouse::error::Error> {
    let (max_epoch, max_version) = client
        .query(
            "SELECT ifNull((SELECT max(epoch) FROM aggregator_epochs), 0), toUInt64(ifNull(greatest( \
               (SELECT max(version) FROM lead_funnels), (SELECT max(version) FROM stage_transitions), \
               (SELECT max(version) FROM funnel_cohort_minute), (SELECT max(version) FROM funnel_reach_minute), \
               (SELECT max(version) FROM funnel_transition_minute)), 0))",
        )
        .fetch_one::<(u64, u64)>()
        .await?;
    let epoch = next_epoch(max_epoch, max_version);
    let mut insert = client.insert::<EpochRow<'_>>("aggregator_epochs").await?;
    insert
        .write(&EpochRow {
            epoch,
            member,
            partitions,
        })
        .await?;
    insert.end().await?;
    Ok(Versions::of_epoch(epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_epoch_beats_every_version_of_an_earlier_one() {
        let mut old = Versions::of_epoch(7);
        let mut last_old = 0;
        for _ in 0..1000 {
            last_old = old.issue();
        }
        let mut new = Versions::of_epoch(next_epoch(7, last_old));
        assert!(new.issue() > last_old);
        assert!(old.issue() < new.issue(), "the old member keeps losing");
    }

    #[test]
    fn the_next_epoch_clears_wall_clock_versions_of_earlier_releases() {
        // Before epochs, versions were wall-clock nanoseconds.
        let nanos: u64 = 1_796_153_454_678_777_765;
        let mut v = Versions::of_epoch(next_epoch(0, nanos));
        assert!(v.issue() > nanos);
    }
}
