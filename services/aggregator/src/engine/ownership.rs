//! Which lead keys this member publishes (its share of the partitions).

use leadstream_schemas::partition::kafka_partition;

/// Which leads this instance owns: those whose key lands on a partition of `leads.normalized`
/// assigned to it (the collector publishes with Kafka's murmur2 partitioner, keyed by lead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub(super) partitions: u32,
    pub(super) owned: Vec<bool>,
}

impl Ownership {
    /// One instance owning everything.
    pub fn all() -> Self {
        Self::new(1, [0])
    }

    /// `owned` out of `partitions` partitions.
    pub fn new(partitions: u32, owned: impl IntoIterator<Item = u32>) -> Self {
        let partitions = partitions.max(1);
        let mut v = vec![false; partitions as usize];
        for p in owned {
            if let Some(x) = v.get_mut(p as usize) {
                *x = true;
            }
        }
        Self {
            partitions,
            owned: v,
        }
    }

    /// The partition of a lead key.
    pub fn partition(&self, key: &str) -> u32 {
        if self.partitions == 1 {
            return 0;
        }
        kafka_partition(key.as_bytes(), self.partitions)
    }

    /// Whether this instance owns the lead `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.owned[self.partition(key) as usize]
    }

    /// Whether every partition is owned (then no other instance exists to talk to).
    pub fn owns_all(&self) -> bool {
        self.owned.iter().all(|o| *o)
    }

    /// Partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The owned partitions.
    pub fn owned(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.partitions).filter(|p| self.owned[*p as usize])
    }
}
