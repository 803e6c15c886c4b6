//! Checkpoints in `aggregator_checkpoints` (README "Checkpoints"): each owned partition's state
//! in chunks, written after a flush; read back as the newest version whose chunks are all there,
//! with the rows written after it (see [`Stale`]).

use super::written_since;
use crate::engine::{CheckpointError, Engine, Ownership, Stale, CHECKPOINT_FORMAT};
use clickhouse::Client;
use leadstream_runtime::clickhouse::{Sink, SinkError};
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// A checkpoint row holds at most this much of a partition's state.
const CHUNK_BYTES: usize = 8 << 20;

#[derive(Debug, clickhouse::Row, Serialize)]
struct ChunkRow<'a> {
    partition: u32,
    chunk: u32,
    version: u64,
    chunks: u32,
    format: u32,
    offsets: &'a str,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

/// One partition's state as [`Engine::checkpoints`] made it, with the offsets it covers (for
/// people reading the table: the consumer group's committed offsets are the ones that count).
#[derive(Debug)]
pub struct Checkpoint {
    /// The partition.
    pub partition: u32,
    /// What it covers, e.g. `{"leads.normalized":1234,"leads.stitch":56}`.
    pub offsets: String,
    /// The state.
    pub data: Vec<u8>,
}

/// Writes `checkpoints` as of `version` (the version of the flush they follow), in one insert.
pub async fn write(sink: &Sink, checkpoints: &[Checkpoint], version: u64) -> Result<(), SinkError> {
    let mut rows = Vec::new();
    for c in checkpoints {
        // An empty state is still one chunk, so that "all chunks present" can hold.
        let chunks: Vec<&[u8]> = match c.data.is_empty() {
            true => vec![&[]],
            false => c.data.chunks(CHUNK_BYTES).collect(),
        };
        for (i, data) in chunks.iter().enumerate() {
            rows.push(ChunkRow {
                partition: c.partition,
                chunk: i as u32,
                version,
                chunks: chunks.len() as u32,
                format: CHECKPOINT_FORMAT,
                offsets: &c.offsets,
                data,
            });
        }
    }
    sink.insert::<ChunkRow<'static>>("aggregator_checkpoints", &rows)
        .await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Listed {
    partition: u32,
    version: u64,
    chunks: u32,
    present: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ChunkData {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The newest complete checkpoint of every partition in `partitions`, `(partition, version,
/// state)`; `None` when a partition has none.
pub async fn newest(
    client: &Client,
    partitions: &[u32],
) -> Result<Option<Vec<(u32, u64, Vec<u8>)>>, clickhouse::error::Error> {
    let listed = client
        .query(
            "SELECT partition, version, max(chunks) AS chunks, uniqExact(chunk) AS present \
             FROM aggregator_checkpoints WHERE partition IN ? AND format = ? \
             GROUP BY partition, version",
        )
        .bind(partitions)
        .bind(CHECKPOINT_FORMAT)
        .fetch_all::<Listed>()
        .await?;
    let mut newest: HashMap<u32, u64> = HashMap::default();
    for l in listed.iter().filter(|l| u64::from(l.chunks) == l.present) {
        let v = newest.entry(l.partition).or_default();
        *v = (*v).max(l.version);
    }
    let mut out = Vec::with_capacity(partitions.len());
    for &p in partitions {
        let Some(&version) = newest.get(&p) else {
            return Ok(None);
        };
        let chunks = client
            .query(
                "SELECT data FROM aggregator_checkpoints WHERE partition = ? AND version = ? \
                 ORDER BY chunk LIMIT 1 BY chunk",
            )
            .bind(p)
            .bind(version)
            .fetch_all::<ChunkData>()
            .await?;
        let data = chunks.into_iter().flat_map(|c| c.data).collect();
        out.push((p, version, data));
    }
    Ok(Some(out))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct StaleLead {
    funnel: String,
    lead_id: String,
    transitions: u16,
    version: u64,
}

/// The rows of the owned leads and buckets newer than their partition's checkpoint (`since`).
/// Read without `FINAL`: a tombstone written after the checkpoint counts as much as a row.
pub async fn stale(
    client: &Client,
    own: &Ownership,
    since: &HashMap<u32, u64>,
) -> Result<Stale, clickhouse::error::Error> {
    let oldest = since.values().copied().min().unwrap_or(0);
    let newer = |partition: u32, version: u64| since.get(&partition).is_some_and(|v| version > *v);
    let leads = client
        .query(
            "SELECT funnel, lead_id, toUInt16(max(n)) AS transitions, max(v) AS version FROM ( \
               SELECT funnel, lead_id, transitions AS n, version AS v FROM lead_funnels \
               WHERE version > ? \
               UNION ALL \
               SELECT funnel, lead_id, toUInt16(max(seq) + 1) AS n, max(version) AS v \
               FROM stage_transitions WHERE version > ? GROUP BY funnel, lead_id \
             ) GROUP BY funnel, lead_id",
        )
        .bind(oldest)
        .bind(oldest)
        .fetch_all::<StaleLead>()
        .await?;
    let mut stale = Stale::default();
    for l in leads {
        if own.owns(&l.lead_id) && newer(own.partition(&l.lead_id), l.version) {
            stale.leads.push((
                SmolStr::new(l.funnel),
                SmolStr::new(l.lead_id),
                l.transitions,
            ));
        }
    }
    let r = &mut stale.rollups;
    r.cohort_rollup = written_since(client, "funnel_cohort_minute", own, since).await?;
    r.reach_rollup = written_since(client, "funnel_reach_minute", own, since).await?;
    r.transition_rollup = written_since(client, "funnel_transition_minute", own, since).await?;
    Ok(stale)
}

/// What a checkpoint restore read.
pub struct Restored {
    /// The engine, as the checkpoints left it.
    pub engine: Engine,
    /// Rows written after them.
    pub stale: Stale,
    /// Bytes of state read.
    pub bytes: u64,
}

/// Why the checkpoints were not used.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// A partition has none whose chunks are all there.
    #[error("a partition has no complete checkpoint")]
    Missing,
    /// One was read and refused.
    #[error(transparent)]
    Refused(#[from] CheckpointError),
}

impl Unusable {
    /// Refused only because this member owns some partitions, not all: a restarted single
    /// instance is often handed its partitions in steps (the killed member's session has to
    /// expire first), and owning all of them it would load these checkpoints.
    pub fn until_all_owned(&self) -> bool {
        matches!(self, Self::Refused(CheckpointError::Evicted(_)))
    }
}

/// An engine for `own` from the newest checkpoints of its partitions: `Ok(Err(why))` when one
/// is missing or cannot be used (the caller rebuilds from history).
pub async fn restore(
    client: &Client,
    mut engine: Engine,
    config: u64,
) -> Result<Result<Restored, Unusable>, clickhouse::error::Error> {
    let own = engine.ownership().clone();
    let partitions: Vec<u32> = own.owned().collect();
    let Some(found) = newest(client, &partitions).await? else {
        return Ok(Err(Unusable::Missing));
    };
    let mut since = HashMap::default();
    let mut bytes = 0;
    for (p, version, data) in &found {
        if let Err(e) = engine.load_checkpoint(data, config) {
            return Ok(Err(e.into()));
        }
        since.insert(*p, *version);
        bytes += data.len() as u64;
    }
    drop(found);
    engine.restored();
    let stale = stale(client, &own, &since).await?;
    Ok(Ok(Restored {
        engine,
        stale,
        bytes,
    }))
}
