//! Shop-platform webhooks. Being built.
