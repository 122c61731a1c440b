//! `ipay-loadtest`: an open-loop HTTP/1.1 load generator that talks to IPAY
//! Engine exactly like a client does, plus a trivial "ceiling" server to
//! compare against. It only ever connects to loopback addresses.
//!
//! The generic machinery lives in [`driver`] (connections, scheduling,
//! statistics) and [`report`]; scenarios in [`scenarios`] only build
//! requests. [`replay`] is different: it drives whole parcel lifecycles
//! (order, payment, PSP callback, webhooks, delivery) and accounts for each.

#![warn(missing_docs)]

pub mod callbacks;
pub mod ceiling;
pub mod cli;
pub mod driver;
pub mod duration;
pub mod error;
pub mod replay;
pub mod report;
pub mod scenarios;
pub mod target;

#[cfg(test)]
mod tests;
