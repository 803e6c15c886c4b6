"""Runs a real ClickHouse 26.9 server (the engine embedded in the chdb-core wheel) in the foreground.

Usage: python clickhouse_server.py --dir DATA_DIR --http-port 8123 --tcp-port 9000

Why this shape (see shared notes, dev-stack.md): chdb's public API cannot open listeners, but its
private `_chdb.query(sql, fmt, path=...)` runs clickhouse-local's full main once, which reads
./config.xml from the working directory. `SYSTEM START LISTEN` opens the HTTP and TCP servers and a
query that never ends keeps the process, and so the servers, alive until SIGTERM/SIGKILL.
Data in DATA_DIR survives restarts.
"""
import argparse
import os
import sys

CONFIG = """<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <users_config>users.xml</users_config>
  <query_log><database>system</database><table>query_log</table>
    <flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log>
  <logger><level>warning</level><console>1</console></logger>
</clickhouse>
"""

# async_insert=0 and lz4 network compression: ClickHouse 26 changed both defaults, and the Rust
# client expects the old ones. The collector also sets them per request, so production servers with
# 26.x defaults behave the same.
# `leadstream_reader` is a read-only user for the aggregator's API (api.clickhouse_user):
# readonly=2 reads and lets a query carry settings (max_execution_time), but writes nothing.
# clickhouse-local keeps no SQL-created users, so it is declared here.
USERS = """<clickhouse>
  <profiles>
    <default>
      <network_compression_method>lz4</network_compression_method>
      <async_insert>0</async_insert>
    </default>
    <reader>
      <network_compression_method>lz4</network_compression_method>
      <readonly>2</readonly>
    </reader>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>1</access_management>
    </default>
    <leadstream_reader>
      <password>reader-password</password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>reader</profile>
      <quota>default</quota>
    </leadstream_reader>
  </users>
  <quotas><default></default></quotas>
</clickhouse>
"""

KEEPALIVE = (
    "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
    "SELECT sleepEachRow(1) FROM numbers(1000000000) "
    "SETTINGS max_block_size=1, function_sleep_max_microseconds_per_block=0 FORMAT Null"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="data directory (created if missing)")
    p.add_argument("--http-port", type=int, default=8123)
    p.add_argument("--tcp-port", type=int, default=9000)
    a = p.parse_args()
    data_dir = os.path.abspath(a.dir)
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, "config.xml"), "w") as f:
        f.write(CONFIG.format(http_port=a.http_port, tcp_port=a.tcp_port))
    with open(os.path.join(data_dir, "users.xml"), "w") as f:
        f.write(USERS)
    os.chdir(data_dir)
    from chdb import _chdb  # imported late: it is heavy, and --help should not need it

    _chdb.query(KEEPALIVE, "TabSeparated", path=os.path.join(data_dir, "data"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
