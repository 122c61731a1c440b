//! stripe channel (work in progress).
