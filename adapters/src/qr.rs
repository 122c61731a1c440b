//! qr channel (work in progress).
