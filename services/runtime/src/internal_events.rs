//! Happenings of the shared plumbing, as named events that emit their log line and metric
//! together; the metric names carry the service (`leadstream_<service>_...`).

/// The group coordinator assigned topic-partitions to this member.
pub fn partitions_assigned(service: &'static str, count: usize) {
    tracing::info!(service, partitions = count, "partitions assigned");
    metrics::gauge!(format!("leadstream_{service}_assigned_partitions")).set(count as f64);
}

/// The member owns nothing because the group has more members than partitions.
pub fn group_standby(service: &'static str, members: usize, partitions: usize) {
    tracing::info!(
        service,
        members,
        partitions,
        "owning no partitions: the group has more members than partitions (standby)"
    );
}

/// The member owned nothing for longer than the session timeout and joins the group again.
pub fn group_rejoin(service: &'static str, members: Option<usize>, partitions: Option<usize>) {
    tracing::warn!(
        service,
        members,
        partitions,
        "no partitions for longer than the session timeout; joining the group again \
         (a member that died without leaving may hold the group's assignment)"
    );
    metrics::counter!(format!("leadstream_{service}_group_rejoins_total")).increment(1);
}

/// Partitions of other members had messages waiting and no commit for a while: their owner
/// looks dead; the member joins the group again.
pub fn orphaned_partitions(service: &'static str, partitions: &[(String, i32)]) {
    tracing::warn!(
        service,
        ?partitions,
        "partitions of other members have messages waiting and no commit; joining the group \
         again (their owner may have died without leaving)"
    );
    metrics::counter!(format!("leadstream_{service}_group_rejoins_total")).increment(1);
}
