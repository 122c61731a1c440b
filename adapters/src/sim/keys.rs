//! The simulator's identities: PSP-side keys (Alipay's and WeChat Pay's platform keys), the
//! one simulated merchant per channel with its keys and secrets, and the credential JSON an
//! engine needs to talk to the simulator as that merchant.
//!
//! Every key here is a throwaway made with `openssl genpkey` for the simulator and published in
//! this repository: never use them anywhere real.

use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::alipay::{AlipayPrivateKey, AlipayPublicKey};
use crate::wechat::{ApiV3Key, WechatPrivateKey, WechatPublicKey};

const ALIPAY_PLATFORM_PRIVATE: &str = include_str!("keys/alipay_platform_private.pem");
const ALIPAY_PLATFORM_PUBLIC: &str = include_str!("keys/alipay_platform_public.pem");
const ALIPAY_MERCHANT_PRIVATE: &str = include_str!("keys/alipay_merchant_private.pem");
const ALIPAY_MERCHANT_PUBLIC: &str = include_str!("keys/alipay_merchant_public.pem");
const WECHAT_PLATFORM_PRIVATE: &str = include_str!("keys/wechat_platform_private.pem");
const WECHAT_PLATFORM_PUBLIC: &str = include_str!("keys/wechat_platform_public.pem");
const WECHAT_MERCHANT_PRIVATE: &str = include_str!("keys/wechat_merchant_private.pem");
const WECHAT_MERCHANT_PUBLIC: &str = include_str!("keys/wechat_merchant_public.pem");

/// The simulated Alipay application id.
pub const ALIPAY_APP_ID: &str = "2021000000000001";
/// The simulated WeChat Pay merchant number.
pub const WECHAT_MCHID: &str = "1900000001";
/// The simulated WeChat AppID.
pub const WECHAT_APPID: &str = "wx00000000000000a1";
/// Serial of the simulated merchant API certificate.
pub const WECHAT_MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72SIM0001";
/// `Wechatpay-Serial` of the simulator's platform key (a WeChat Pay public-key id).
pub const WECHAT_PLATFORM_SERIAL: &str = "PUB_KEY_ID_0119000000012026SIM00000001";
/// The simulated APIv3 key (32 bytes).
pub const WECHAT_APIV3_KEY: &str = "ipaySimApiV3Key0123456789abcdefg";
/// The simulated Stripe secret key.
pub const STRIPE_SECRET_KEY: &str = "sk_test_ipaysim0123456789abcdefABCDEF";
/// The simulated Stripe webhook endpoint secret.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_ipaysim0123456789abcdefABCDEF0123";
/// The simulated MultiSafepay website API key.
pub const MULTISAFEPAY_API_KEY: &str = "ipaysim0123456789abcdefABCDEFghijklmn";
/// The simulated merchant's PromptPay id (a mobile number).
pub const PROMPTPAY_ID: &str = "0812345678";
/// The key the simulated bank signs PromptPay callbacks with.
pub const PROMPTPAY_BANK_SECRET: &str = "ipay-sim-bank-callback-secret-0123456789";

/// Parsed keys, loaded once per process.
pub(crate) struct SimKeys {
    pub alipay_platform: AlipayPrivateKey,
    pub alipay_merchant_public: AlipayPublicKey,
    pub wechat_platform: WechatPrivateKey,
    pub wechat_merchant_public: WechatPublicKey,
    pub wechat_apiv3: ApiV3Key,
}

/// The keys; they are compiled in and known to parse (a unit test checks it).
pub(crate) fn keys() -> &'static SimKeys {
    static KEYS: OnceLock<SimKeys> = OnceLock::new();
    KEYS.get_or_init(|| SimKeys {
        alipay_platform: AlipayPrivateKey::from_pem(ALIPAY_PLATFORM_PRIVATE)
            .expect("embedded simulator key parses"),
        alipay_merchant_public: AlipayPublicKey::from_pem(ALIPAY_MERCHANT_PUBLIC)
            .expect("embedded simulator key parses"),
        wechat_platform: WechatPrivateKey::from_pem(WECHAT_PLATFORM_PRIVATE)
            .expect("embedded simulator key parses"),
        wechat_merchant_public: WechatPublicKey::from_pem(WECHAT_MERCHANT_PUBLIC)
            .expect("embedded simulator key parses"),
        wechat_apiv3: ApiV3Key::new(WECHAT_APIV3_KEY.as_bytes())
            .expect("embedded APIv3 key is 32 bytes"),
    })
}

/// The credential JSON of the simulated merchant for `channel`, as `POST /v1/channels` takes
/// it; `None` for an unknown channel.
pub fn credentials(channel: &str) -> Option<Value> {
    Some(match channel {
        "alipay" => json!({
            "app_id": ALIPAY_APP_ID,
            "private_key_pem": ALIPAY_MERCHANT_PRIVATE,
            "alipay_public_key_pem": ALIPAY_PLATFORM_PUBLIC,
        }),
        "wechat" => json!({
            "mchid": WECHAT_MCHID,
            "appid": WECHAT_APPID,
            "serial_no": WECHAT_MERCHANT_SERIAL,
            "private_key_pem": WECHAT_MERCHANT_PRIVATE,
            "apiv3_key": WECHAT_APIV3_KEY,
            "platform_serial": WECHAT_PLATFORM_SERIAL,
            "platform_public_key_pem": WECHAT_PLATFORM_PUBLIC,
        }),
        "stripe" => json!({
            "secret_key": STRIPE_SECRET_KEY,
            "webhook_secret": STRIPE_WEBHOOK_SECRET,
        }),
        "multisafepay" => json!({ "api_key": MULTISAFEPAY_API_KEY }),
        "promptpay" => json!({
            "promptpay_id": PROMPTPAY_ID,
            "bank_callback_secret": PROMPTPAY_BANK_SECRET,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::CHANNELS;

    #[test]
    fn embedded_keys_parse_and_credentials_validate() {
        let _ = keys();
        for channel in CHANNELS {
            let creds = credentials(channel).expect("known channel");
            let factory = crate::factory::AdapterFactory::new(&Default::default()).unwrap();
            ipay_engine::channel::ChannelFactory::validate(&factory, channel, &creds)
                .unwrap_or_else(|e| panic!("{channel}: {e}"));
        }
        assert!(credentials("nope").is_none());
    }
}
