//! End-to-end benchmark: N mixed valid events (all seven topics, exposure-heavy: `BENCH_EXPOSURES`
//! exposures per lead, default 20) produced to the local broker, then
//! one in-process collector drains them into ClickHouse, then one aggregator, started on that
//! backlog, catches up (rebuild from ClickHouse + the whole normalized topic). Prints events/s and
//! CPU seconds of each. Then the aggregator binary is killed with SIGKILL and restarted twice:
//! from its checkpoints (leads idle for `state.idle_after` evicted), and with checkpoints and
//! evictions removed and nothing evicted (a rebuild from history, as before checkpoints); prints
//! the time until it is ready and current, the leads held and its RSS. Event times advance at a
//! fixed rate of new leads, so a longer history is older history. Run through scripts/bench.sh
//! (release build, private stack).
#![allow(missing_docs)]

use leadstream_schemas::SourceKind;
use leadstream_tests::faults::labelled_sum;
use leadstream_tests::*;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

/// Event time of the newest lead: 2025-11-23T04:00:00Z.
const END_MS: i64 = 1_763_870_400_000;

/// The events of one lead: `exposures` exposures, then one of each other source, in order.
#[derive(Clone, Copy)]
struct Mix {
    exposures: u64,
}

impl Mix {
    fn per_lead(self) -> u64 {
        self.exposures + 6
    }

    fn leads(self, n: u64) -> u64 {
        n.div_ceil(self.per_lead())
    }

    /// Lead of event `i`, and its position among the lead's events.
    fn of(self, i: u64) -> (u64, u64) {
        (i / self.per_lead(), i % self.per_lead())
    }

    fn kind(self, i: u64) -> SourceKind {
        match self.of(i).1 {
            p if p < self.exposures => SourceKind::Exposure,
            p => SourceKind::ALL[(p - self.exposures + 1) as usize],
        }
    }
}

/// Event time of event `i` of `n`: each lead starts `gap_ms` after the one before it, and its
/// events are a minute apart. A fixed rate of new leads, so a longer history is older history:
/// the leads active within the last `state.idle_after` are about the same at any `n`.
fn event_time(mix: Mix, i: u64, n: u64, gap_ms: i64) -> i64 {
    let (lead, pos) = mix.of(i);
    END_MS - (mix.leads(n) as i64 - lead as i64) * gap_ms + pos as i64 * 60_000
}

fn payload(mix: Mix, i: u64, t: i64) -> (SourceKind, String) {
    let kind = mix.kind(i);
    let lead = mix.of(i).0;
    let utc = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
    let body = match kind {
        SourceKind::Exposure => format!(
            r#"{{"impression_id":"imp-{i}","ts":{t},"platform":"{}","campaign_id":"cmp-{}","device_id":"dev-{}","cost_micros":1200}}"#,
            // Retargeted on another platform in the second half.
            if mix.of(i).1 < mix.exposures / 2 {
                "douyin"
            } else {
                "baidu"
            },
            i % 50,
            lead
        ),
        SourceKind::AdClick => format!(
            r#"{{"click_id":"clk-{i}","clicked_at":"{t}","platform":"wechat","device_id":"dev-{}","landing_url":"https://shop.example.com/lp?utm_source=wechat&utm_medium=cpc&utm_campaign=spring&ab=B"}}"#,
            lead
        ),
        SourceKind::Signup => format!(
            r#"{{"signup_id":"su-{i}","created_at":{},"user_id":"u-{}","device_id":"dev-{}","phone":"138{:08}","email":"user{i}@example.com","utm":{{"source":"wechat","medium":"cpc"}}}}"#,
            t / 1000,
            lead,
            lead,
            i % 100_000_000
        ),
        SourceKind::Trial => format!(
            r#"{{"trial_id":"tr-{i}","event":"trial_started","user_id":"u-{}","at":"{}","plan":"pro"}}"#,
            lead,
            // Local time of the collector's zone (Asia/Shanghai, UTC+8).
            (utc + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S")
        ),
        SourceKind::Call => format!(
            r#"{{"call_id":"call-{i}","lead_id":"u-{}","started_at":{t},"direction":"outbound","duration_sec":120,"outcome":"qualified","agent_id":"a-{}"}}"#,
            lead,
            i % 20
        ),
        SourceKind::Contract => format!(
            r#"{{"contract_id":"ct-{i}","lead_id":"u-{}","status":"signed","amount":"12800.00","currency":"CNY","updated_at":"{}"}}"#,
            lead,
            utc.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ),
        SourceKind::Order => format!(
            r#"{{"order_id":"ord-{i}","user_id":"u-{}","paid_at":{t},"amount_cents":19900,"currency":"CNY"}}"#,
            lead
        ),
    };
    (kind, body)
}

/// How long draining or catching up on `n` events may take: 30 minutes, or 2,000 events/s.
fn patience(n: u64) -> Duration {
    Duration::from_secs((n / 2_000).max(1_800))
}

/// User + system CPU seconds of this process so far (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime and stime, in clock ticks of 1/100 s
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let w = World::new("bench", 3).await;
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .expect("producer");
    let topics: Vec<String> = SourceKind::ALL.iter().map(|k| w.topic(*k)).collect();
    // An exposure-heavy mix: BENCH_EXPOSURES exposures (default 20) before the click, signup,
    // trial, call, contract and order of each lead.
    let mix = Mix {
        exposures: std::env::var("BENCH_EXPOSURES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    };
    // By default 1M events are 60 days of history (36 s between leads of 7 events), so the last
    // 30 days (`state.idle_after`) hold the same active leads whatever the history's length.
    let gap_ms: i64 = std::env::var("BENCH_LEAD_GAP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(36_000 * mix.per_lead() as i64 / 7);
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..n {
        let (kind, body) = payload(mix, i, event_time(mix, i, n, gap_ms));
        bytes += body.len();
        let topic = &topics[SourceKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("kind")];
        let mut rec = BaseRecord::<(), String>::to(topic).payload(&body);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    // Its librdkafka threads would otherwise poll on and count as collector CPU below.
    drop(p);
    println!(
        "produced {n} mixed events ({:.0} B avg, {} exposures per lead) in {:.1} s; {} leads, one every {:.0} s of event time: {:.0} days of history",
        bytes as f64 / n as f64,
        mix.exposures,
        started.elapsed().as_secs_f64(),
        mix.leads(n),
        gap_ms as f64 / 1000.0,
        (mix.leads(n) as f64 * gap_ms as f64) / 86_400_000.0
    );

    let cfg = w.collector_config();
    let mut cfg = cfg;
    cfg.batch.flush_interval_ms = 500;
    cfg.kafka
        .properties
        .0
        .insert("fetch.wait.max.ms".into(), "100".into());
    cfg.kafka
        .properties
        .0
        .insert("fetch.min.bytes".into(), "1000000".into());
    cfg.kafka
        .properties
        .0
        .insert("max.partition.fetch.bytes".into(), "10485760".into());
    for (k, v) in std::env::var("BENCH_KAFKA_PROPS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
    {
        cfg.kafka.properties.0.insert(k.into(), v.into());
    }
    if let Some(rows) = std::env::var("BENCH_MAX_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.batch.max_rows = rows;
    }
    let group = cfg.kafka.group_id.clone();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let c = spawn_collector(cfg);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = tokio::task::spawn_blocking({
            let (g, t, parts) = (group.clone(), topics.clone(), w.partitions);
            move || try_committed_vs_end(&g, &t, parts)
        })
        .await
        .expect("offsets");
        if t0.elapsed() > patience(n) {
            panic!("collector did not drain within {:?}", patience(n));
        }
        // The busy broker timed the poll out: ask again.
        let Ok(state) = state else { continue };
        if state.iter().all(|(_, _, c, e)| *c == *e) {
            break;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    stop_collector(c).await;
    let stored = query_u64(
        &clickhouse_url(),
        &w.database,
        "SELECT count() FROM lead_events_unique",
    )
    .await;
    println!("collector drained {n} events into ClickHouse in {elapsed:.1} s: {:.0} events/s, {cpu:.1} CPU-s ({:.1} µs CPU/event)", n as f64 / elapsed, cpu * 1e6 / n as f64);
    println!("lead_events_unique rows: {stored:?} (expected {n})");
    assert_eq!(stored, Some(n), "every event must be stored exactly once");

    // The aggregator was down while all of it arrived: it starts on an N-event backlog.
    let cfg = w.aggregator_config(&free_addr());
    let token = tokio_util::sync::CancellationToken::new();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let task = tokio::spawn(leadstream_aggregator::run(cfg.clone(), token.clone()));
    caught_up(&w, &cfg, n).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!("aggregator caught up on a {n}-event backlog (rebuild from ClickHouse + the normalized topic) in {elapsed:.1} s: {:.0} events/s, {cpu:.1} CPU-s", n as f64 / elapsed);
    token.cancel();
    task.await
        .expect("aggregator task")
        .expect("aggregator run");
    // The binary, started, killed with SIGKILL once it is current, started again: it loads its
    // checkpoints. Then the same with the checkpoints gone: it rebuilds from the whole history
    // in ClickHouse, as every restart did before checkpoints.
    let file = leadstream_tests::process::config_file(&cfg, "bench-aggregator");
    let mut agg = leadstream_tests::process::spawn_aggregator(&file);
    caught_up(&w, &cfg, n).await;
    agg.kill9();
    let (from_checkpoint, rss, mut agg) = restart(&w, &cfg, &file, n).await;
    // The last checkpoint this process wrote (the table may hold several checkpoints of one
    // version and partition until its merges run, so summing its rows overstates it).
    let bytes = labelled_sum(&cfg.api.listen, "leadstream_aggregator_checkpoint_bytes").await;
    let devices = labelled_sum(&cfg.api.listen, "leadstream_aggregator_devices_held").await;
    let events_held = labelled_sum(&cfg.api.listen, "leadstream_aggregator_events_held").await;
    let folded = labelled_sum(&cfg.api.listen, "leadstream_aggregator_folded_events_total").await;
    let history_reads =
        labelled_sum(&cfg.api.listen, "leadstream_aggregator_history_reads_total").await;
    let restore = restore_seconds(&cfg.api.listen).await;
    let held = labelled_sum(&cfg.api.listen, "leadstream_aggregator_leads_held").await;
    let buckets = labelled_sum(&cfg.api.listen, "leadstream_aggregator_rollup_buckets_held").await;
    let restores = labelled_sum(
        &cfg.api.listen,
        "leadstream_aggregator_checkpoint_restores_total",
    )
    .await;
    let rebuilds = labelled_sum(&cfg.api.listen, "leadstream_aggregator_rebuilds_total").await;
    println!("restart after SIGKILL, from checkpoints: ready and current in {from_checkpoint:.2} s, of which the last restore {restore:.2} s (the rest is the group handing the partitions over; {restores:.0} restores from checkpoints, {rebuilds:.0} from history, {history_reads:.0} history reads started); two checkpoints later {held:.0} leads, {devices:.0} devices, {events_held:.0} events ({folded:.0} folded since the start) and {buckets:.0} rollup buckets held, checkpoints {:.1} MB ({:.0} B per lead held), RSS {:.0} MB ({:.0} B per lead held)", bytes / 1e6, bytes / held.max(1.0), rss as f64 / 1e6, rss as f64 / held.max(1.0));
    agg.kill9();
    let evicted = query_u64(
        &clickhouse_url(),
        &w.database,
        "SELECT count() FROM aggregator_evicted FINAL",
    )
    .await
    .unwrap_or(0);
    println!(
        "keys evicted (leads idle for state.idle_after = {:?}, rollup buckets for state.rollup_idle_after = {:?}): {evicted}",
        cfg.state.idle_after, cfg.state.rollup_idle_after
    );
    for table in ["aggregator_checkpoints", "aggregator_evicted"] {
        let _ = clickhouse(&w.database)
            .query(&format!("TRUNCATE TABLE {table}"))
            .execute()
            .await;
    }
    // As every restart did before checkpoints and eviction: all history read, every lead held.
    let mut keep_all = cfg.clone();
    keep_all.state.idle_after = Duration::from_secs(100 * 365 * 86_400);
    keep_all.state.rollup_idle_after = keep_all.state.idle_after;
    let file = leadstream_tests::process::config_file(&keep_all, "bench-aggregator-keep-all");
    let (from_history, rss_all, mut agg) = restart(&w, &keep_all, &file, n).await;
    let rebuild = restore_seconds(&cfg.api.listen).await;
    let held_all = labelled_sum(&cfg.api.listen, "leadstream_aggregator_leads_held").await;
    let buckets_all =
        labelled_sum(&cfg.api.listen, "leadstream_aggregator_rollup_buckets_held").await;
    println!("restart after SIGKILL, checkpoints removed, nothing evicted (rebuild from history): ready and current in {from_history:.2} s, of which the restore {rebuild:.2} s; {held_all:.0} leads and {buckets_all:.0} rollup buckets held; RSS {:.0} MB; restore from checkpoints / from history: {:.3}; RSS bounded / keeping all: {:.3}", rss_all as f64 / 1e6, restore / rebuild.max(1e-6), rss as f64 / rss_all.max(1) as f64);
    agg.kill9();
    let rows = query_u64(
        &clickhouse_url(),
        &w.database,
        "SELECT count() FROM stage_transitions FINAL WHERE is_deleted = 0",
    )
    .await;
    let buckets = query_u64(
        &clickhouse_url(),
        &w.database,
        "SELECT (SELECT count() FROM funnel_cohort_minute FINAL WHERE is_deleted = 0) + \
         (SELECT count() FROM funnel_reach_minute FINAL WHERE is_deleted = 0) + \
         (SELECT count() FROM funnel_transition_minute FINAL WHERE is_deleted = 0)",
    )
    .await;
    println!("stage_transitions rows: {rows:?}, rollup buckets: {buckets:?}");
}

/// Waits until the aggregator at `cfg.api.listen` answers ready and its group's offsets reached
/// the end of both topics (within the [`patience`] for `n` events).
async fn caught_up(w: &World, cfg: &leadstream_aggregator::AggregatorConfig, n: u64) {
    let group = cfg.kafka.group_id.clone();
    let topics = vec![w.normalized_topic(), w.stitch_topic()];
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = leadstream_tests::process::readyz(&cfg.api.listen)
            .await
            .is_some_and(|(ready, _)| ready);
        if !ready {
            continue;
        }
        let state = tokio::task::spawn_blocking({
            let (g, t, parts) = (group.clone(), topics.clone(), w.partitions);
            move || try_committed_vs_end(&g, &t, parts)
        })
        .await
        .expect("offsets");
        if t0.elapsed() > patience(n) {
            panic!("aggregator did not catch up within {:?}", patience(n));
        }
        // The busy broker timed the poll out: ask again.
        let Ok(state) = state else { continue };
        if state.iter().all(|(_, _, c, e)| (*c).max(0) == *e) {
            return;
        }
    }
}

/// The last restore's duration, as the aggregator at `addr` reports it.
async fn restore_seconds(addr: &str) -> f64 {
    labelled_sum(addr, "leadstream_aggregator_restore_seconds").await
}

/// Starts the aggregator binary and waits until it is ready and current, then two checkpoints
/// more: (seconds until current, its RSS after those, the process).
async fn restart(
    w: &World,
    cfg: &leadstream_aggregator::AggregatorConfig,
    file: &std::path::Path,
    n: u64,
) -> (f64, u64, leadstream_tests::process::Running) {
    let t0 = Instant::now();
    let agg = leadstream_tests::process::spawn_aggregator(file);
    caught_up(w, cfg, n).await;
    let elapsed = t0.elapsed().as_secs_f64();
    // Two more checkpoints, so idle leads are evicted even where the group first handed this
    // member only some partitions (on tansu, until the killed member's session ends): a member
    // of several keeps everything, and the engine for all of them evicts at its checkpoints.
    let addr = &cfg.api.listen;
    let taken = labelled_sum(addr, "leadstream_aggregator_checkpoints_total").await;
    let t1 = Instant::now();
    while labelled_sum(addr, "leadstream_aggregator_checkpoints_total").await < taken + 2.0
        && t1.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", agg.id())).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (elapsed, rss_kb * 1024, agg)
}
