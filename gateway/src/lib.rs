//! IPAY Engine gateway: the HTTP API over the engine, and the `ipay` command line.
//!
//! Handlers are thin (extract → one engine call → map); errors become HTTP in one place
//! ([`error`]); the OpenAPI document is generated from the handlers ([`openapi`]).

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod pages;
pub mod ratelimit;
pub mod routes;
pub mod server;
