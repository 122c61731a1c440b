//! WeChat Pay's AES-256-GCM `resource`: the input is the plaintext, encrypted with the
//! APIv3 key so the transaction parser behind the decryption sees it; also the input as a
//! resource JSON, decrypted as received.
#![no_main]

use ipay_adapters::wechat::{ApiV3Key, EncryptedResource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ApiV3Key::new(b"0123456789abcdef0123456789abcdef").expect("32-byte key");
    if let Ok(plain) = std::str::from_utf8(data)
        && let Ok(res) = key.encrypt_resource(plain, "0123456789ab", "transaction", "transaction")
    {
        assert_eq!(key.decrypt_resource(&res).ok().as_deref(), Some(plain));
        let _ = key.decrypt_transaction(&res);
    }
    if let Ok(res) = serde_json::from_slice::<EncryptedResource>(data) {
        let _ = key.decrypt_transaction(&res);
    }
});
