//! wechat channel (work in progress).
