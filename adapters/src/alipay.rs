//! alipay channel (work in progress).
