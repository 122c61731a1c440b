//! Criterion benchmarks of IPAY Engine hot paths live in `benches/`; run them with
//! `cargo bench -p ipay-benches`. Results and commands are recorded in `docs/performance.md`.
