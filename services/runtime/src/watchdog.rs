//! The watchdog that takes partitions back when the group coordinator did not give them out.
//!
//! Why: tansu 0.6 does not expire a member that died without leaving (SIGKILL) the way Kafka
//! does, and two situations follow. (1) A member joining after it completes a generation in
//! which the dead leader never assigned anything, and heartbeats with no partitions from then
//! on. (2) With live members, the dead one is dropped at a later heartbeat but the group keeps
//! its stale leader and assignment: the live members keep their own partitions and the dead
//! member's go unread. A member leaving and joining again (a fresh JoinGroup after the session
//! timeout) clears both: the coordinator drops the dead member and the stale leader.
//!
//! So the watchdog re-joins (unsubscribe, subscribe; the back-off doubles up to 5 minutes)
//! when this member owned nothing for longer than the session timeout, unless the group has
//! more members than partitions (the group description says so where the broker answers it;
//! tansu does not), and when a partition nobody here owns has messages waiting while its
//! committed offset has not moved for [`STUCK_AFTER`] (its owner is dead or hung). Kafka
//! expires a dead member after `session.timeout.ms` and rebalances, so there neither case lasts
//! long enough for the watchdog to act.

use crate::group::Membership;
use crate::health::Readiness;
use crate::internal_events as events;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A partition of another member with messages waiting whose committed offset has not moved for
/// this long counts as orphaned: long enough that a member busy with a rebuild or waiting out a
/// ClickHouse outage is not taken for dead at once (and the back-off doubles after each re-join).
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// How often the committed offsets of the other members' partitions are read.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where a service joins its consumer group.
pub struct Group<'a> {
    /// The group id.
    pub id: &'a str,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// This member's view of the group (fed by the consumer's rebalance callbacks).
    pub membership: &'a Arc<Membership>,
}

/// Joins `group`: subscribes `consumer`, makes `readiness` follow the membership and keeps the
/// watchdog running on `tracker` until `shutdown`. Every service joins this way, so none can
/// subscribe without the watchdog that takes its partitions back.
pub fn join<C, X>(
    consumer: &Arc<C>,
    group: Group<'_>,
    readiness: &Readiness,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> KafkaResult<()>
where
    X: ConsumerContext + 'static,
    C: Consumer<X> + Send + Sync + 'static,
{
    let names: Vec<&str> = group.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    group.membership.subscribed();
    readiness.attach(group.membership.clone());
    tracing::info!(topics = ?group.topics, group = group.id, "subscribed");
    tracker.spawn(watch(
        consumer.clone(),
        group.membership.clone(),
        group.id.to_string(),
        group.topics,
        shutdown.clone(),
    ));
    Ok(())
}

/// Watches `consumer`'s membership until `shutdown` and re-joins `group` (subscribing to
/// `topics` again) in the two situations of the module documentation.
pub async fn watch<C, X>(
    consumer: Arc<C>,
    membership: Arc<Membership>,
    group: String,
    topics: Vec<String>,
    shutdown: CancellationToken,
) where
    X: ConsumerContext + 'static,
    C: Consumer<X> + Send + Sync + 'static,
{
    let mut progress = Progress::default();
    let mut last_check = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if last_check.elapsed() >= PROGRESS_EVERY && membership.orphan_check_due() {
            last_check = Instant::now();
            let (c, t, owned) = (consumer.clone(), topics.clone(), membership.partitions());
            let seen = tokio::task::spawn_blocking(move || others_progress(&*c, &t, &owned))
                .await
                .unwrap_or_default();
            let stuck = progress.observe(seen, Instant::now());
            if !stuck.is_empty() {
                events::orphaned_partitions(membership.service, &stuck);
                rejoin(&*consumer, &membership, &topics);
                progress = Progress::default();
            }
            continue;
        }
        if !membership.rejoin_due() {
            continue;
        }
        let (c, g, t) = (consumer.clone(), group.clone(), topics.clone());
        let sizes = tokio::task::spawn_blocking(move || group_and_partitions(&*c, &g, &t)).await;
        let (members, partitions) = sizes.unwrap_or((None, None));
        if let (Some(m), Some(p)) = (members, partitions) {
            if m > p {
                events::group_standby(membership.service, m, p);
                membership.mark_standby();
                continue;
            }
        }
        events::group_rejoin(membership.service, members, partitions);
        rejoin(&*consumer, &membership, &topics);
    }
}

/// A fresh JoinGroup: leave (unsubscribe) and subscribe again.
fn rejoin<C, X>(consumer: &C, membership: &Membership, topics: &[String])
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    consumer.unsubscribe();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&names) {
        tracing::warn!(error = %e, "re-subscribing failed; trying again later");
    }
    membership.rejoined();
}

/// Members of `group` (when the broker describes groups) and the largest partition count of
/// `topics` (when metadata answers).
fn group_and_partitions<C, X>(
    consumer: &C,
    group: &str,
    topics: &[String],
) -> (Option<usize>, Option<usize>)
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let timeout = Duration::from_secs(5);
    let members = consumer
        .fetch_group_list(Some(group), timeout)
        .ok()
        .and_then(|l| l.groups().first().map(|g| g.members().len()));
    let partitions = topics
        .iter()
        .filter_map(|t| {
            let md = consumer.fetch_metadata(Some(t), timeout).ok()?;
            md.topics().first().map(|t| t.partitions().len())
        })
        .max();
    (members, partitions)
}

/// (partition, committed offset, high watermark) of every partition of `topics` this member
/// does not own; nothing when the broker does not answer.
fn others_progress<C, X>(
    consumer: &C,
    topics: &[String],
    owned: &[(String, i32)],
) -> Vec<((String, i32), i64, i64)>
where
    X: ConsumerContext,
    C: Consumer<X>,
{
    let timeout = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let Ok(md) = consumer.fetch_metadata(Some(t), timeout) else {
            return Vec::new();
        };
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            if !owned.iter().any(|(ot, op)| ot == t && *op == p.id()) {
                tpl.add_partition(t, p.id());
            }
        }
    }
    if tpl.count() == 0 {
        return Vec::new();
    }
    let Ok(committed) = consumer.committed_offsets(tpl, timeout) else {
        return Vec::new();
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            let (_, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .ok()?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            Some(((e.topic().to_string(), e.partition()), at, high))
        })
        .collect()
}

/// When each other member's partition last moved, to tell an orphaned one.
#[derive(Debug, Default)]
struct Progress {
    last: HashMap<(String, i32), (i64, Instant)>,
}

impl Progress {
    /// Takes a reading at `now`; returns the partitions with messages waiting whose committed
    /// offset has not moved for [`STUCK_AFTER`].
    fn observe(
        &mut self,
        seen: Vec<((String, i32), i64, i64)>,
        now: Instant,
    ) -> Vec<(String, i32)> {
        let mut stuck = Vec::new();
        for (tp, committed, high) in seen {
            let slot = self.last.entry(tp.clone()).or_insert((committed, now));
            if slot.0 != committed || high <= committed {
                *slot = (committed, now);
            } else if now.duration_since(slot.1) > STUCK_AFTER {
                stuck.push(tp);
            }
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_with_waiting_messages_and_no_commit_for_a_while_is_orphaned() {
        let mut p = Progress::default();
        let t0 = Instant::now();
        let tp = |n: i32| ("t".to_string(), n);
        // Partition 0 moves, 1 waits without moving, 2 has nothing waiting.
        p.observe(vec![(tp(0), 5, 9), (tp(1), 5, 9), (tp(2), 9, 9)], t0);
        let later = t0 + STUCK_AFTER + Duration::from_secs(1);
        let stuck = p.observe(vec![(tp(0), 7, 9), (tp(1), 5, 9), (tp(2), 9, 9)], later);
        assert_eq!(stuck, vec![tp(1)]);
        // Once it moves again it is not stuck.
        let again = p.observe(vec![(tp(1), 6, 9)], later + STUCK_AFTER * 2);
        assert!(again.is_empty());
    }
}
