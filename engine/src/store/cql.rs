//! ScyllaDB / Cassandra ledger backend (cluster mode; work in progress).
