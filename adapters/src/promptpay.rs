//! promptpay channel (work in progress).
