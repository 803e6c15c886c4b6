#!/bin/bash
# Runs once, when the ClickHouse container initialises its data directory: a read-only user for
# Grafana and the aggregator's API. readonly=2 reads and lets a query carry settings
# (max_execution_time), but writes nothing.
set -euo pipefail
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery --query "
  CREATE USER IF NOT EXISTS leadstream_reader IDENTIFIED WITH sha256_password BY '${CLICKHOUSE_READER_PASSWORD}'
    SETTINGS readonly = 2;
  GRANT SELECT ON leadstream.* TO leadstream_reader;
"
