//! Versioned ClickHouse DDL, embedded so every service applies the same files at start.
//!
//! A migration runs once: `schema_migrations` records it, and a start applies only what is not
//! recorded (a backfill copying a table must not run again at every start). Every statement is
//! idempotent all the same (`IF NOT EXISTS`, backfills into tables that collapse copies by
//! key), so two services starting together, or a start interrupted half-way, are harmless.

/// Single server or a cluster with Replicated*/Distributed tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// One ClickHouse server (the default; the local stack).
    Single,
    /// A ClickHouse cluster; tables are `*_local` Replicated tables behind Distributed ones.
    Cluster,
}

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, from the file name.
    pub version: u32,
    /// Name, from the file name.
    pub name: &'static str,
    sql: &'static str,
}

const SINGLE: &[Migration] = &[
    Migration {
        version: 1,
        name: "lead_events",
        sql: include_str!("../migrations/single/0001_lead_events.sql"),
    },
    Migration {
        version: 2,
        name: "ingest_errors",
        sql: include_str!("../migrations/single/0002_ingest_errors.sql"),
    },
    Migration {
        version: 3,
        name: "stage_transitions",
        sql: include_str!("../migrations/single/0003_stage_transitions.sql"),
    },
    Migration {
        version: 4,
        name: "lead_funnels",
        sql: include_str!("../migrations/single/0004_lead_funnels.sql"),
    },
    Migration {
        version: 5,
        name: "late_events",
        sql: include_str!("../migrations/single/0005_late_events.sql"),
    },
    Migration {
        version: 6,
        name: "lead_events_device_index",
        sql: include_str!("../migrations/single/0006_lead_events_device_index.sql"),
    },
    Migration {
        version: 7,
        name: "funnel_rollups",
        sql: include_str!("../migrations/single/0007_funnel_rollups.sql"),
    },
    Migration {
        version: 8,
        name: "dashboard_sources",
        sql: include_str!("../migrations/single/0008_dashboard_sources.sql"),
    },
    Migration {
        version: 9,
        name: "copies_and_epochs",
        sql: include_str!("../migrations/single/0009_copies_and_epochs.sql"),
    },
    Migration {
        version: 10,
        name: "aggregator_checkpoints",
        sql: include_str!("../migrations/single/0010_aggregator_checkpoints.sql"),
    },
    Migration {
        version: 11,
        name: "aggregator_evicted",
        sql: include_str!("../migrations/single/0011_aggregator_evicted.sql"),
    },
];

const CLUSTER: &[Migration] = &[
    Migration {
        version: 1,
        name: "lead_events",
        sql: include_str!("../migrations/cluster/0001_lead_events.sql"),
    },
    Migration {
        version: 2,
        name: "ingest_errors",
        sql: include_str!("../migrations/cluster/0002_ingest_errors.sql"),
    },
    Migration {
        version: 3,
        name: "stage_transitions",
        sql: include_str!("../migrations/cluster/0003_stage_transitions.sql"),
    },
    Migration {
        version: 4,
        name: "lead_funnels",
        sql: include_str!("../migrations/cluster/0004_lead_funnels.sql"),
    },
    Migration {
        version: 5,
        name: "late_events",
        sql: include_str!("../migrations/cluster/0005_late_events.sql"),
    },
    Migration {
        version: 6,
        name: "lead_events_device_index",
        sql: include_str!("../migrations/cluster/0006_lead_events_device_index.sql"),
    },
    Migration {
        version: 7,
        name: "funnel_rollups",
        sql: include_str!("../migrations/cluster/0007_funnel_rollups.sql"),
    },
    Migration {
        version: 8,
        name: "dashboard_sources",
        sql: include_str!("../migrations/cluster/0008_dashboard_sources.sql"),
    },
    Migration {
        version: 9,
        name: "copies_and_epochs",
        sql: include_str!("../migrations/cluster/0009_copies_and_epochs.sql"),
    },
    Migration {
        version: 10,
        name: "aggregator_checkpoints",
        sql: include_str!("../migrations/cluster/0010_aggregator_checkpoints.sql"),
    },
    Migration {
        version: 11,
        name: "aggregator_evicted",
        sql: include_str!("../migrations/cluster/0011_aggregator_evicted.sql"),
    },
];

/// The migrations for a topology, in order.
pub fn migrations(topology: Topology) -> &'static [Migration] {
    match topology {
        Topology::Single => SINGLE,
        Topology::Cluster => CLUSTER,
    }
}

/// DDL of the bookkeeping table, created before any migration runs.
pub fn bookkeeping_ddl(topology: Topology, cluster: &str) -> String {
    match topology {
        Topology::Single => "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, \
             applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
            .to_string(),
        Topology::Cluster => format!(
            "CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER '{cluster}' (version UInt32, name String, \
             applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplicatedReplacingMergeTree(\
             '/clickhouse/tables/{{shard}}/{{database}}/schema_migrations', '{{replica}}') ORDER BY version"
        ),
    }
}

impl Migration {
    /// The file's statements, with `${CLUSTER}` replaced; comments and blank lines are dropped.
    pub fn statements(&self, cluster: &str) -> Vec<String> {
        let body: String = self
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        body.split(";\n")
            .map(|s| {
                s.trim()
                    .trim_end_matches(';')
                    .trim()
                    .replace("${CLUSTER}", cluster)
            })
            .filter(|s| !s.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_into_create_statements() {
        for topo in [Topology::Single, Topology::Cluster] {
            let ms = migrations(topo);
            assert!(ms.windows(2).all(|w| w[0].version < w[1].version));
            for m in ms {
                let st = m.statements("main");
                assert!(!st.is_empty());
                for s in &st {
                    assert!(
                        s.starts_with("CREATE ")
                            || s.starts_with("ALTER TABLE ")
                            || s.starts_with("INSERT INTO "),
                        "{s}"
                    );
                    assert!(!s.contains("${CLUSTER}"));
                    // A backfill is idempotent when its table replaces copies by key.
                    assert!(
                        s.contains("IF NOT EXISTS")
                            || s.starts_with("INSERT INTO lead_events_by_minute\n")
                            || s.starts_with("INSERT INTO lead_event_copies\n"),
                        "every statement must be idempotent: {s}"
                    );
                }
            }
        }
        assert_eq!(migrations(Topology::Single)[0].statements("x").len(), 2);
        assert_eq!(migrations(Topology::Cluster)[0].statements("x").len(), 3);
    }

    #[test]
    fn cluster_variant_has_the_same_columns() {
        let cols = |sql: &str| -> Vec<String> {
            sql.lines()
                .filter(|l| l.starts_with("    ") && !l.trim().starts_with("--"))
                .map(|l| l.trim().to_string())
                .collect()
        };
        for (s, c) in SINGLE.iter().zip(CLUSTER) {
            assert_eq!(cols(s.sql), cols(c.sql), "{}", s.name);
        }
    }
}
