//! Scale-out against the real broker, collector and ClickHouse: two aggregator members of one
//! consumer group split the partitions, stitch devices to users across members, survive one
//! member leaving mid-stream (the other takes over its partitions) and its return, and end with
//! every API view equal to the generator's truth, which one member alone also reaches
//! (aggregator_e2e, with a kill -9).
#![allow(missing_docs)]

use leadstream_schemas::partition::kafka_partition;
use leadstream_tests::aggregator::{api_matches_truth, generate};
use leadstream_tests::process::{config_file, spawn_aggregator, Running};
use leadstream_tests::*;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_answer_like_one_across_a_departure_and_a_return() {
    let w = World::new("scaleout", 4).await;
    let url = clickhouse_url();
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let (file_a, file_b) = (
        config_file(&w.aggregator_config(&addr_a), "member-a"),
        config_file(&w.aggregator_config(&addr_b), "member-b"),
    );
    let group = w.aggregator_config(&addr_a).kafka.group_id;

    // Both members own their share before a single event exists, so the stream is consumed
    // with the work split between them, whatever the machine's speed.
    let mut a = spawn_aggregator(&file_a);
    let mut b = spawn_aggregator(&file_b);
    let split = eventually(
        Duration::from_secs(120),
        || async { Some((owned(&addr_a).await?, owned(&addr_b).await?)) },
        |(pa, pb)| !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == 4,
    )
    .await;
    let Some((owned_a, _)) = split
        .clone()
        .filter(|(pa, pb)| !pa.is_empty() && !pb.is_empty())
    else {
        panic!("the two members split the four partitions: {split:?}");
    };
    let collector = spawn_collector(w.collector_config());
    let truth = generate(&w, "aggregator_scaleout", 4242, 3000, (0.1, 0.05, 0.02)).await;

    // The member consuming a signup whose device lead is the other member's sends a recheck.
    // B's counter leaves with B, so the sum is read while both run; B then leaves mid-stream.
    let rechecks = eventually(
        Duration::from_secs(120),
        || async {
            Some(
                metric(&addr_a, "leadstream_aggregator_rechecks_sent_total").await
                    + metric(&addr_b, "leadstream_aggregator_rechecks_sent_total").await,
            )
        },
        |n| *n > 0.0,
    )
    .await;
    assert!(
        rechecks.is_some_and(|n| n > 0.0),
        "members stitching across each other sent no recheck"
    );

    // Member B stops (SIGTERM: flush, commit, leave the group); A takes over all partitions.
    terminate(&mut b);
    let alone = eventually(
        Duration::from_secs(60),
        || async { owned(&addr_a).await },
        |p| p.len() == 4,
    )
    .await;
    assert_eq!(
        alone.map(|p| p.len()),
        Some(4),
        "member A took over every partition"
    );
    let in_ch = wait_for_count(
        &url,
        &w.database,
        "SELECT count() FROM lead_events_unique",
        truth.messages.valid,
    )
    .await;
    assert_eq!(in_ch, Some(truth.messages.valid));
    stop_collector(collector).await;

    // The stitching the members did was really across members: signups whose user and device
    // lead land on partitions of different members (read from the data itself).
    let signups = query_json(
        &url,
        &w.database,
        "SELECT lead_id, device_id FROM lead_events_unique \
         WHERE event_type = 'signup' AND device_id != ''",
    )
    .await
    .expect("signups");
    let of_a = |key: &str| owned_a.contains(&kafka_partition(key.as_bytes(), 4));
    let across = signups
        .iter()
        .filter(|s| {
            let user = s["lead_id"].as_str().unwrap_or_default();
            let device = s["device_id"].as_str().unwrap_or_default();
            of_a(user) != of_a(&format!("device:{device}"))
        })
        .count();
    assert!(
        across > 100,
        "signups naming a device of the other member: {across}"
    );

    // B returns: the partitions are split again and both rebuild.
    let mut b = spawn_aggregator(&file_b);
    let topics = [w.normalized_topic(), w.stitch_topic()];
    let settled = eventually(
        Duration::from_secs(180),
        || async {
            let split = owned(&addr_b).await.is_some_and(|p| !p.is_empty());
            let committed = committed_vs_end(&group, &topics, w.partitions)
                .iter()
                .all(|(_, _, committed, end)| committed.max(&0) == end);
            Some(split && committed)
        },
        |done| *done,
    )
    .await;
    assert_eq!(
        settled,
        Some(true),
        "both members own partitions and committed both topics to the end: {:?}",
        committed_vs_end(&group, &topics, w.partitions)
    );
    for addr in [&addr_a, &addr_b] {
        let verdict = eventually(
            Duration::from_secs(60),
            || async { Some(api_matches_truth(addr, &truth).await) },
            |r| r.is_ok(),
        )
        .await
        .expect("answers");
        assert_eq!(verdict, Ok(()), "answers served by {addr}");
    }
    // Every event was where its key says (the collector and the members agree on the
    // partitioner).
    for addr in [&addr_a, &addr_b] {
        assert_eq!(
            metric(addr, "leadstream_aggregator_misrouted_events_total").await,
            0.0
        );
    }

    terminate(&mut a);
    terminate(&mut b);
}

/// The partitions a member reports owning (`/api/v1/status`), while it answers.
async fn owned(addr: &str) -> Option<Vec<u32>> {
    let status = http_get_json(addr, "/api/v1/status").await?;
    serde_json::from_value(status["partitions"].clone()).ok()
}

fn terminate(child: &mut Running) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    let code = child.wait().expect("wait");
    assert!(code.success(), "SIGTERM ends a member cleanly: {code:?}");
}
