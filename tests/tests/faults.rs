//! The fault suite: the pipeline on the real stack (service binaries with the shipped
//! configuration) while things go wrong, each scenario ending with the one verdict of
//! `leadstream_tests::faults::assert_exact`: no valid event lost, none counted twice,
//! `lead_events_unique` equal to the generated set, the API equal to the generator's truth,
//! offsets committed to the end. Scenarios that stop a server get servers of their own.
//! `LEADSTREAM_FAULT_LEADS` and `LEADSTREAM_FAULT_KILLS` scale it up (`scripts/soak.sh`).
#![allow(missing_docs)]

use leadstream_schemas::partition::kafka_partition;
use leadstream_schemas::SourceKind;
use leadstream_tests::faults::{
    assert_exact, feed, kill_repeatedly, kills, labelled_sum, leads, not_ready_because, settle,
    unreadable, Service,
};
use leadstream_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

const SIGTERM_LIMIT: Duration = Duration::from_secs(10);

/// How long a feed lasts so that every kill of a scenario lands while events still arrive
/// (each restart waits out the session timeout before it owns partitions again on tansu).
fn feed_seconds() -> f64 {
    10.0 + 16.0 * kills() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_killed_five_times_mid_stream() {
    killed_mid_stream("fault_kill_collector", 1).await;
}

/// The aggregator killed with SIGKILL five times mid-stream: every restart after the first
/// checkpoint loads the checkpoints and reads no history
/// (`leadstream_aggregator_rebuilds_total` and `_history_reads_total` stay 0 in every restarted
/// process), on a feed of
/// 20k leads (`LEADSTREAM_CHECKPOINT_LEADS`) with late events and duplicates. Leads idle for 5
/// minutes of event time leave memory (the feed's steps are minutes to an hour apart, so many
/// leads go idle and come back), across the kills too: leads and rollup buckets are evicted
/// and read back. With an allowed lateness of 5 minutes too, leads' settled events are folded
/// (from 2 settled inputs on) and read back for the late events and claims that need them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregator_killed_five_times_mid_stream_restores_from_checkpoints() {
    use rand::{Rng, SeedableRng};
    let leads = std::env::var("LEADSTREAM_CHECKPOINT_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let w = World::new("fault_kill_aggregator", 3).await;
    let mut col = Service::collector(&w);
    let mut agg = Service::aggregator_with(&w, |c| {
        c.state.idle_after = Duration::from_secs(5 * 60);
        c.state.rollup_idle_after = Duration::from_secs(5 * 60);
        c.state.allowed_lateness = Duration::from_secs(5 * 60);
        c.state.fold_min_events = 2;
        // Checkpoints (and evictions) within each process's short life between kills.
        c.state.checkpoint_interval = Duration::from_secs(2);
    });
    col.start();
    agg.start();
    let sending = feed(&w, 102, leads, feed_seconds(), |_| {});
    // Evictions and reloads of leads and buckets, summed over the processes (each read just
    // before its kill, so a lower bound).
    const MOVED: [&str; 6] = [
        "leadstream_aggregator_evicted_groups_total",
        "leadstream_aggregator_reloaded_groups_total",
        "leadstream_aggregator_evicted_buckets_total",
        "leadstream_aggregator_resolved_buckets_total",
        "leadstream_aggregator_folded_events_total",
        "leadstream_aggregator_unfolded_rows_total",
    ];
    let mut moved = [0.0; 6];
    let count = |addr: String| async move {
        let mut n = [0.0; 6];
        for (n, name) in n.iter_mut().zip(MOVED) {
            *n = labelled_sum(&addr, name).await;
        }
        n
    };
    let add = |moved: &mut [f64; 6], n: [f64; 6]| {
        for (m, n) in moved.iter_mut().zip(n) {
            *m += n;
        }
    };
    // The first process has nothing to restore: it rebuilds (from an empty history) and writes
    // its first checkpoint right away.
    let first = eventually(
        Duration::from_secs(120),
        || async { Some(labelled_sum(&agg.addr, "leadstream_aggregator_checkpoints_total").await) },
        |n| *n >= 1.0,
    )
    .await;
    assert!(
        first.is_some_and(|n| n >= 1.0),
        "the first process checkpoints"
    );
    // The first kill comes once a checkpoint holds evicted leads and folded events, so that
    // restores load such state (each later process lives only a few seconds past the group's
    // handover).
    let started = std::time::Instant::now();
    let both = eventually(
        Duration::from_secs(120),
        || async { Some(count(agg.addr.clone()).await) },
        |n| n[0] > 0.0 && n[4] > 0.0,
    )
    .await;
    assert!(
        both.is_some_and(|n| n[0] > 0.0 && n[4] > 0.0),
        "the first process evicts and folds ({both:?})"
    );
    let written = labelled_sum(&agg.addr, "leadstream_aggregator_checkpoints_total").await;
    let after = eventually(
        Duration::from_secs(60),
        || async { Some(labelled_sum(&agg.addr, "leadstream_aggregator_checkpoints_total").await) },
        |n| *n > written,
    )
    .await;
    assert!(after.is_some_and(|n| n > written), "a checkpoint follows");
    eprintln!(
        "first process evicted and folded, then checkpointed, after {:?}",
        started.elapsed()
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    for kill in 1..=kills() {
        agg.wait_for_progress().await;
        let pause = rng.random_range(0..=3000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let n = count(agg.addr.clone()).await;
        add(&mut moved, n);
        let missing =
            labelled_sum(&agg.addr, "leadstream_aggregator_fold_rows_missing_total").await;
        assert_eq!(missing, 0.0, "every fold row asked for was found");
        eprintln!(
            "kill {kill}: this process evicted {} groups and {} buckets, read back {} groups and {} buckets, folded {} events, read back {} fold rows",
            n[0], n[2], n[1], n[3], n[4], n[5]
        );
        agg.kill9();
        agg.start();
        let restored = eventually(
            Duration::from_secs(120),
            || async {
                Some(
                    labelled_sum(&agg.addr, "leadstream_aggregator_checkpoint_restores_total")
                        .await,
                )
            },
            |n| *n >= 1.0,
        )
        .await;
        assert!(
            restored.is_some_and(|n| n >= 1.0),
            "restart {kill} restores from the checkpoints"
        );
        let bytes = labelled_sum(
            &agg.addr,
            "leadstream_aggregator_checkpoint_restored_bytes_total",
        )
        .await;
        assert!(bytes > 0.0, "restart {kill} loaded state ({bytes} bytes)");
        let rebuilds = labelled_sum(&agg.addr, "leadstream_aggregator_rebuilds_total").await;
        let history = labelled_sum(&agg.addr, "leadstream_aggregator_rebuilt_events_total").await;
        // Started at all: a read of history dropped by the handover counts too.
        let reads = labelled_sum(&agg.addr, "leadstream_aggregator_history_reads_total").await;
        assert_eq!(
            (rebuilds, history, reads),
            (0.0, 0.0, 0.0),
            "restart {kill} did not rebuild from history"
        );
    }
    let sent = sending.await.expect("feed");
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    add(&mut moved, count(agg.addr.clone()).await);
    for (n, name) in moved.iter().zip(MOVED) {
        assert!(
            *n > 0.0,
            "{name} summed over the processes is {n} ({moved:?})"
        );
    }
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}

/// The collector killed with SIGKILL `kills()` times at random moments (after progress, 0–3 s
/// later) while the feed arrives, restarted each time; the aggregator runs throughout.
async fn killed_mid_stream(name: &str, seed: u64) {
    let w = World::new(name, 3).await;
    let mut col = Service::collector(&w);
    let mut agg = Service::aggregator(&w);
    agg.start();
    col.start();
    let sending = feed(&w, 100 + seed, leads(), feed_seconds(), |_| {});
    kill_repeatedly(&mut col, kills(), Duration::from_secs(3), seed).await;
    let sent = sending.await.expect("feed");
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_30_seconds() {
    let mut ch = PrivateClickHouse::start();
    let w = World::on("fault_clickhouse", 3, &brokers(), &ch.url).await;
    let mut col = Service::collector(&w);
    let mut agg = Service::aggregator(&w);
    col.start();
    agg.start();
    let sending = feed(&w, 103, leads(), 60.0, |_| {});
    col.wait_for_progress().await;
    agg.wait_for_progress().await;
    ch.stop();
    let outage = std::time::Instant::now();
    for s in [&col, &agg] {
        let reported = eventually(
            Duration::from_secs(25),
            || async { Some(not_ready_because(&s.addr, "clickhouse").await) },
            |r| *r,
        )
        .await;
        assert_eq!(reported, Some(true), "{} reports not ready", s.addr);
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    ch.restart();
    let sent = sending.await.expect("feed");
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    for s in [&col, &agg] {
        let ready = eventually(
            Duration::from_secs(60),
            || async { Some(process::is_ready(&s.addr).await) },
            |r| *r,
        )
        .await;
        assert_eq!(ready, Some(true), "{} ready again", s.addr);
    }
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_while_both_services_run() {
    let broker = PrivateBroker::start();
    let w = World::on("fault_broker", 3, &broker.brokers, &clickhouse_url()).await;
    // librdkafka's idempotent producer bumps its epoch by itself after batches in flight at the
    // restart failed (KIP-360); tansu 0.6 panics on a produce with an epoch it never issued
    // (tansu-storage lite.rs:503, "more or less than one row") and its storage never recovers.
    // Real Kafka accepts the bump; here the producers run without idempotence, which the
    // pipeline does not rely on (copies of a message are absorbed by event id anyway).
    let mut col = Service::collector_with(&w, |c| {
        c.kafka
            .properties
            .0
            .insert("enable.idempotence".into(), "false".into());
    });
    let mut agg = Service::aggregator_with(&w, |c| {
        c.kafka
            .properties
            .0
            .insert("enable.idempotence".into(), "false".into());
    });
    col.start();
    agg.start();
    let sending = feed(&w, 104, leads(), 60.0, |_| {});
    col.wait_for_progress().await;
    agg.wait_for_progress().await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart();
    let sent = sending.await.expect("feed");
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_members_join_and_leave_one_by_sigkill() {
    let w = World::new("fault_members", 4).await;
    let mut col = Service::collector(&w);
    col.start();
    let (mut a, mut b, mut c) = (
        Service::aggregator(&w),
        Service::aggregator(&w),
        Service::aggregator(&w),
    );
    a.start();
    let sending = feed(&w, 105, leads(), 80.0, |_| {});
    a.wait_for_progress().await;
    b.start();
    b.wait_for_progress().await;
    c.start();
    c.wait_for_progress().await;
    // B leaves cleanly, C dies without leaving; A ends up owning everything.
    b.terminate(SIGTERM_LIMIT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kill9();
    let sent = sending.await.expect("feed");
    assert_exact(&w, &sent, &[&a.addr], settle()).await;
    col.terminate(SIGTERM_LIMIT);
    a.terminate(SIGTERM_LIMIT);
}

/// Members rebuilding their state, or flushing, while ClickHouse is away for longer than
/// `max.poll.interval.ms` stay in the group: both keep polling (partitions paused). A
/// member that stopped polling would be taken out of the group by librdkafka, and its next poll
/// would bring a revocation and another rebuild (a livelock once rebuilds outlast the interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_restoring_or_flushing_through_an_outage_stay_in_the_group() {
    let mut ch = PrivateClickHouse::start();
    let w = World::on("fault_restore", 3, &brokers(), &ch.url).await;
    // librdkafka's smallest allowed value (not below the session timeout), so the outage below
    // outlasts it by far.
    let member = || {
        Service::aggregator_with(&w, |c| {
            c.kafka
                .properties
                .0
                .insert("max.poll.interval.ms".into(), "10000".into());
        })
    };
    let mut col = Service::collector(&w);
    let (mut a, mut b, mut c) = (member(), member(), member());
    col.start();
    for s in [&mut a, &mut b, &mut c] {
        s.start();
    }
    for s in [&a, &b, &c] {
        assert!(
            ready_within(s, Duration::from_secs(90)).await,
            "{} ready",
            s.addr
        );
    }
    // Everything consumed and flushed first: a member blocked in a flush retry while ClickHouse
    // is away does not get to the rebalance until the write goes through.
    let sent = feed(&w, 109, leads(), 20.0, |_| {}).await.expect("feed");
    assert_exact(&w, &sent, &[&a.addr, &b.addr, &c.addr], settle()).await;
    ch.stop();
    let (a0, b0) = (a.rebalances().await, b.rebalances().await);
    // C leaves: A and B take its partitions and rebuild, which waits for ClickHouse.
    c.terminate(SIGTERM_LIMIT);
    for s in [&a, &b] {
        let rebuilding = eventually(
            Duration::from_secs(30),
            || async { Some(restoring(&s.addr).await) },
            |r| *r,
        )
        .await;
        assert_eq!(rebuilding, Some(true), "{} rebuilds after C left", s.addr);
    }
    // The rebalance is over (both own partitions again) before the count is taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (a1, b1) = (a.rebalances().await, b.rebalances().await);
    assert!(
        a1 > a0 && b1 > b0,
        "both saw C leave: A {a0} -> {a1}, B {b0} -> {b1}"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    ch.restart();
    for s in [&a, &b] {
        assert!(
            ready_within(s, Duration::from_secs(90)).await,
            "{} ready after the outage",
            s.addr
        );
    }
    // Long enough for a member taken out of the group to have noticed it and rebalanced.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (a2, b2) = (a.rebalances().await, b.rebalances().await);
    assert_eq!(
        (a2, b2),
        (a1, b1),
        "no member left the group during its restore (rebalances counted on A and B)"
    );
    // A flush waiting for ClickHouse keeps polling as well: rechecks of devices the members
    // hold (anonymous touches, so the owner of `device:<id>` holds the device) make their next
    // flushes look the devices up while ClickHouse is away. Some on every partition, so every
    // member gets some whatever it owns.
    let touched = query_json(
        &ch.url,
        &w.database,
        "SELECT DISTINCT device_id FROM lead_events_unique WHERE lead_id = '' AND device_id != ''",
    )
    .await
    .expect("devices");
    let mut per_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for d in &touched {
        let key = format!("device:{}", d["device_id"].as_str().expect("device_id"));
        let p = kafka_partition(key.as_bytes(), w.partitions as u32);
        let keys = per_partition.entry(p).or_default();
        if keys.len() < 20 {
            keys.push(key);
        }
    }
    assert_eq!(
        per_partition.len(),
        w.partitions as usize,
        "touched devices on every partition"
    );
    ch.stop();
    let producer = producer_on(&w.brokers);
    for key in per_partition.values().flatten() {
        let payload = serde_json::json!({ "recheck": key }).to_string();
        produce(&producer, &w.stitch_topic(), Some(key), payload.as_bytes()).await;
    }
    for s in [&a, &b] {
        let blocked = eventually(
            Duration::from_secs(30),
            || async { Some(flushing_into_the_outage(&s.addr).await) },
            |r| *r,
        )
        .await;
        assert_eq!(blocked, Some(true), "{} flushes into the outage", s.addr);
    }
    // 15 s: well past max.poll.interval.ms, and short enough that the members' watchdogs
    // (which re-join when another member's partition has waited 60 s without a commit) never
    // see the rechecks waiting behind this flush as orphaned, on a slow machine too.
    tokio::time::sleep(Duration::from_secs(15)).await;
    ch.restart();
    for s in [&a, &b] {
        assert!(
            ready_within(s, Duration::from_secs(90)).await,
            "{} ready after the second outage",
            s.addr
        );
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (a3, b3) = (a.rebalances().await, b.rebalances().await);
    assert_eq!(
        (a3, b3),
        (a1, b1),
        "no member left the group during a flush that waited for ClickHouse"
    );
    // A third member joins again; the answers stay exact.
    c.start();
    assert!(
        ready_within(&c, Duration::from_secs(90)).await,
        "C ready again"
    );
    assert_exact(&w, &sent, &[&a.addr, &b.addr, &c.addr], settle()).await;
    col.terminate(SIGTERM_LIMIT);
    for s in [&mut a, &mut b, &mut c] {
        s.terminate(SIGTERM_LIMIT);
    }
}

/// Rebuilding the state of partitions it owns (a rebalance in progress owns none).
async fn restoring(addr: &str) -> bool {
    process::readyz(addr).await.is_some_and(|(ready, body)| {
        !ready && body.contains("rebuild") && !body.contains("owns no partitions")
    })
}

/// Not ready because a ClickHouse call of a flush (or of the checkpoint that follows it, in the
/// same polled work) keeps failing, not merely the health ping.
async fn flushing_into_the_outage(addr: &str) -> bool {
    process::readyz(addr).await.is_some_and(|(ready, body)| {
        !ready
            && ["copies", "lookup", "write", "checkpoint"]
                .iter()
                .any(|call| body.contains(&format!("clickhouse: {call} failing")))
    })
}

async fn ready_within(s: &Service, limit: Duration) -> bool {
    eventually(
        limit,
        || async { Some(process::is_ready(&s.addr).await) },
        |r| *r,
    )
    .await
        == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_of_every_kind_and_junk_on_the_normalized_topic() {
    let w = World::new("fault_poison", 3).await;
    let big = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &w.brokers)
        .set("message.max.bytes", "4000000")
        .create::<rdkafka::producer::FutureProducer>()
        .expect("producer");
    // About 1 MB, just under and just over the broker's default record limit; JSON nested 130
    // deep (beyond serde_json's own limit of 128).
    let order = |pad: usize| {
        let head = r#"{"order_id":"big","user_id":"u-big","paid_at":1763870400,"amount_cents":1,"currency":"CNY","pad":""#;
        format!("{head}{}\"}}", "x".repeat(pad - head.len() - 2))
    };
    let deep = format!(
        r#"{{"trial_id":"t-deep","event":"trial_started","user_id":"u-deep","at":1763870400,"x":{}1{}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    for (kind, msg) in [
        (SourceKind::Order, order(1_000_000 - 100)),
        (SourceKind::Order, order(1_048_576 + 100)),
        (SourceKind::Trial, deep),
    ] {
        produce(&big, &w.topic(kind), None, msg.as_bytes()).await;
    }
    // Junk on the normalized topic, where only the collector should write.
    let junk: [&[u8]; 4] = [
        b"\xff\xfe not json",
        br#"{"hello":"world"}"#,
        br#"{"event_id":"\u00e9123456789abcdef0123456789abcde","event_type":"order","source_topic":"leads.order","source_partition":0,"source_offset":0,"native_id":"o","lead_id":"u-junk","event_time":"2026-11-02T01:00:00Z","received_at":"2026-11-02T01:00:00Z"}"#,
        br#"[1,2,3]"#,
    ];
    for j in junk {
        produce(&big, &w.normalized_topic(), Some("u-junk"), j).await;
    }
    let mut col = Service::collector(&w);
    let mut agg = Service::aggregator(&w);
    col.start();
    agg.start();
    let sending = feed(&w, 106, leads(), 20.0, |g| g.realism.poison_share = 0.01);
    let sent = sending.await.expect("feed");
    assert!(
        sent.truth.messages.poison_by_category.len() == 11,
        "every producible kind of poison: {:?}",
        sent.truth.messages.poison_by_category
    );
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    let rejected = sent.truth.messages.poison + 3;
    assert_eq!(
        query_u64(
            &w.clickhouse_url,
            &w.database,
            "SELECT count() FROM ingest_errors"
        )
        .await,
        Some(rejected),
        "every malformed message has its ingest_errors row"
    );
    let dlq = read_topic_until_on(&w.brokers, &w.dead_letter_topic(), settle(), |m| {
        m.len() as u64 >= rejected + junk.len() as u64
    })
    .await;
    assert_eq!(
        dlq.len() as u64,
        rejected + junk.len() as u64,
        "and its dead letter"
    );
    assert_eq!(
        unreadable(&agg.addr).await,
        junk.len() as f64,
        "the aggregator dead-letters the junk"
    );
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_re_saves_with_other_times_and_ids_under_other_leads() {
    let w = World::new("fault_duplicates", 3).await;
    let mut col = Service::collector(&w);
    let mut agg = Service::aggregator(&w);
    col.start();
    agg.start();
    let sending = feed(&w, 107, leads(), 20.0, |g| {
        g.realism.duplicate_share = 0.05;
        g.realism.resend_share = 0.03;
        g.realism.rekey_share = 0.02;
    });
    let sent = sending.await.expect("feed");
    assert!(sent.truth.messages.copies > 50, "{:?}", sent.truth.messages);
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_clickhouse_down_and_with_the_broker_down() {
    let mut ch = PrivateClickHouse::start();
    let broker = PrivateBroker::start();
    let w = World::on("fault_sigterm", 3, &broker.brokers, &ch.url).await;
    let mut col = Service::collector(&w);
    let mut agg = Service::aggregator(&w);
    let sending = feed(&w, 108, leads(), 20.0, |_| {});
    col.start();
    agg.start();
    col.wait_for_progress().await;
    agg.wait_for_progress().await;
    // ClickHouse away: both stop within the bound.
    ch.stop();
    for s in [&col, &agg] {
        let reported = eventually(
            Duration::from_secs(25),
            || async { Some(not_ready_because(&s.addr, "clickhouse").await) },
            |r| *r,
        )
        .await;
        assert_eq!(reported, Some(true), "{} reports not ready", s.addr);
    }
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
    ch.restart();
    col.start();
    agg.start();
    col.wait_for_progress().await;
    agg.wait_for_progress().await;
    // The broker away: both stop within the bound.
    broker.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
    broker.restart();
    // Nothing lost on restart.
    col.start();
    agg.start();
    let sent = sending.await.expect("feed");
    assert_exact(&w, &sent, &[&agg.addr], settle()).await;
    col.terminate(SIGTERM_LIMIT);
    agg.terminate(SIGTERM_LIMIT);
}
