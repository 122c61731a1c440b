//! Redis hot-state backend (cluster mode; work in progress).
