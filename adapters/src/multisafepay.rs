//! multisafepay channel (work in progress).
