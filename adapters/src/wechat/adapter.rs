//! WeChat Pay API v3 (Native) as a `ChannelAdapter`: `POST /v3/pay/transactions/native`
//! signed with `Authorization: WECHATPAY2-SHA256-RSA2048 …`, answer signature checked with the
//! platform public key, `code_url` back; callbacks verified from the `Wechatpay-*` headers and
//! their `resource` decrypted with the APIv3 key; answered `{"code":"SUCCESS"}`.
//!
//! Routing: the callback's order number is inside the encrypted resource, and WeChat Pay
//! forbids a query string in `notify_url`, so the adapter sends `notify_url` as
//! `{notify_url}/{intent id}`; the gateway passes the request path as received in
//! [`InboundCallback::path`] and `peek_intent` reads it back from there. After decryption the
//! order number must equal that path segment.

use std::sync::Arc;

use async_trait::async_trait;
use ipay_engine::channel::{
    CallbackAck, CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError,
    ChannelPayment, ChannelPaymentRequest, ChannelRefund, ChannelRefundRequest, ChannelRefundState,
    InboundCallback, RefundReport,
};
use ipay_engine::clock::{Clock, Timestamp};
use ipay_engine::ids::RefundId;
use ipay_engine::money::Currency;
use serde::Deserialize;
use serde_json::Value;

use super::wire::{
    self, ApiV3Key, MerchantSigner, PlatformKeys, SignedHeaders, TradeState, WechatError,
    WechatPrivateKey, WechatPublicKey,
};
use crate::common::{Fields, intent_from_path, intent_id, money};
use crate::http::HttpClient;

/// Channel name.
pub const NAME: &str = "wechat";
/// Production base URL.
pub const DEFAULT_BASE_URL: &str = wire::API_BASE_URL;
/// Accepted distance between a signed timestamp (answers and callbacks) and now.
pub const TOLERANCE_SECS: u64 = wire::DEFAULT_TOLERANCE_SECS;
const FIELDS: &[&str] = &[
    "mchid",
    "appid",
    "serial_no",
    "private_key_pem",
    "apiv3_key",
    "platform_serial",
    "platform_public_key_pem",
];

/// A merchant's WeChat Pay credentials: `mchid`, `appid`, `serial_no` (of the merchant API
/// certificate), `private_key_pem` (`apiclient_key.pem`, RSA ≥ 2048), `apiv3_key` (exactly 32
/// bytes), `platform_serial` (the `Wechatpay-Serial` of the platform key, a certificate serial
/// or `PUB_KEY_ID_…`) and `platform_public_key_pem` (the WeChat Pay public key).
#[derive(Clone)]
pub struct WechatCredentials {
    appid: String,
    signer: MerchantSigner,
    apiv3_key: ApiV3Key,
    platform_keys: PlatformKeys,
}

impl std::fmt::Debug for WechatCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatCredentials")
            .field("mchid", &self.signer.mchid())
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

fn key_reason(e: &WechatError) -> String {
    match e {
        WechatError::KeyTooSmall { bits } => {
            format!("is a {bits}-bit RSA key; at least 2048 bits are required")
        }
        WechatError::InvalidKey(why) => format!("does not parse: {why}"),
        _ => "does not parse".to_owned(),
    }
}

impl WechatCredentials {
    /// Parses and checks the credential object.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::new(NAME, value, FIELDS)?;
        let mchid = f.req("mchid")?;
        let appid = f.req("appid")?;
        if appid.len() > 32 || appid.chars().any(char::is_control) {
            return Err(f.bad("appid", "must be at most 32 printable characters"));
        }
        let key = WechatPrivateKey::parse(f.req("private_key_pem")?)
            .map_err(|e| f.bad("private_key_pem", key_reason(&e)))?;
        let signer = MerchantSigner::new(mchid, f.req("serial_no")?, key).map_err(|e| match e {
            WechatError::InvalidField { field, reason } => f.bad(field, reason),
            _ => f.bad("mchid", "is invalid"),
        })?;
        let apiv3 = f.req("apiv3_key")?;
        let apiv3_key = ApiV3Key::new(apiv3.as_bytes()).map_err(|_| {
            f.bad(
                "apiv3_key",
                format_args!("must be exactly 32 bytes, got {}", apiv3.len()),
            )
        })?;
        let platform_serial = f.req("platform_serial")?;
        if platform_serial.len() > 64 || !platform_serial.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(f.bad(
                "platform_serial",
                "must be 1 to 64 printable ASCII characters",
            ));
        }
        let platform_key = WechatPublicKey::parse(f.req("platform_public_key_pem")?)
            .map_err(|e| f.bad("platform_public_key_pem", key_reason(&e)))?;
        let mut platform_keys = PlatformKeys::new();
        platform_keys.insert(platform_serial, platform_key);
        Ok(WechatCredentials {
            appid: appid.to_owned(),
            signer,
            apiv3_key,
            platform_keys,
        })
    }
}

/// The WeChat Pay adapter for one merchant.
pub struct WechatAdapter {
    creds: WechatCredentials,
    order_url: String,
    /// Path (with any base-URL prefix) that the request signature covers.
    order_path: String,
    /// Base URL plus [`wire::REFUNDS_PATH`], and its path (what refund signatures cover).
    refunds_url: String,
    refunds_path: String,
    notify_url: String,
    client: HttpClient,
    clock: Arc<dyn Clock>,
}

impl WechatAdapter {
    /// An adapter calling `{base_url}/v3/pay/transactions/native`; callbacks go to
    /// `{notify_url}/{intent id}`.
    pub fn new(
        creds: WechatCredentials,
        base_url: &str,
        notify_url: &str,
        client: HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let order_url = format!(
            "{}{}",
            base_url.trim_end_matches('/'),
            wire::NATIVE_ORDER_PATH
        );
        let parsed = url::Url::parse(&order_url)
            .map_err(|_| format!("wechat endpoint `{base_url}` is not a URL"))?;
        if notify_url.contains('?') {
            return Err("wechat notify_url must not carry a query string".into());
        }
        let refunds_url = format!("{}{}", base_url.trim_end_matches('/'), wire::REFUNDS_PATH);
        let refunds_path = url::Url::parse(&refunds_url)
            .map_err(|_| format!("wechat endpoint `{base_url}` is not a URL"))?
            .path()
            .to_owned();
        Ok(WechatAdapter {
            creds,
            refunds_url,
            refunds_path,
            order_path: parsed.path().to_owned(),
            order_url,
            notify_url: notify_url.trim_end_matches('/').to_owned(),
            client,
            clock,
        })
    }

    /// Checks the platform signature over `body` from the `Wechatpay-*` headers that `lookup`
    /// finds (an answer's or a callback's).
    fn verify_signed<'h>(
        &self,
        lookup: impl Fn(&'static str) -> Option<&'h str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), WechatError> {
        let signed = SignedHeaders::from_lookup(lookup)?;
        wire::verify_signature(
            &signed,
            body,
            &self.creds.platform_keys,
            now_secs,
            TOLERANCE_SECS,
        )
    }
}

impl WechatAdapter {
    /// A signed request to the refunds API (`POST` with a body, or a `GET` query), its answer's
    /// signature checked, read as a refund.
    async fn refund_call(
        &self,
        method: &str,
        suffix: &str,
        body: String,
    ) -> Result<ChannelRefund, ChannelError> {
        let now_secs = self.clock.now().ms().div_euclid(1000);
        let nonce = wire::generate_nonce();
        let path = format!("{}{suffix}", self.refunds_path);
        let authorization = self
            .creds
            .signer
            .authorization_header(method, &path, now_secs, &nonce, &body)
            .map_err(|e| ChannelError::Rejected(format!("wechat: {e}")))?;
        let url = format!("{}{suffix}", self.refunds_url);
        let headers = [
            ("authorization", authorization.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("user-agent", "ipay-adapters"),
        ];
        let answer = if method == "GET" {
            self.client.get(NAME, &url, &headers).await?
        } else {
            self.client
                .post(NAME, &url, &headers, body.into_bytes())
                .await?
        };
        if !(200..300).contains(&answer.status) {
            let err: Option<ApiErrorBody> = serde_json::from_slice(&answer.body).ok();
            let code = err
                .as_ref()
                .and_then(|e| e.code.clone())
                .unwrap_or_default();
            let message = err.and_then(|e| e.message).unwrap_or_default();
            let text = format!("wechat answered HTTP {}: {code} {message}", answer.status);
            let state = match code.as_str() {
                "RESOURCE_NOT_EXISTS" => ChannelRefundState::NotFound,
                "SYSTEM_ERROR" | "FREQUENCY_LIMITED" => {
                    return Err(ChannelError::Unavailable(text));
                }
                _ if answer.status == 429 => return Err(ChannelError::Unavailable(text)),
                _ => ChannelRefundState::Failed { reason: text },
            };
            return Ok(ChannelRefund {
                state,
                psp_reference: None,
            });
        }
        self.verify_signed(|name| answer.header(name), &answer.body, now_secs)
            .map_err(|e| ChannelError::Unavailable(format!("wechat answer not trusted: {e}")))?;
        let refund = wire::parse_refund(answer.text(NAME)?)
            .map_err(|e| ChannelError::Unavailable(format!("wechat: {e}")))?;
        Ok(ChannelRefund {
            state: refund_state(refund.status),
            psp_reference: refund.refund_id,
        })
    }

    /// What a verified `REFUND.*` notification reports.
    fn refund_notice(
        &self,
        cb: &InboundCallback,
        notification: wire::CallbackNotification,
    ) -> Result<CallbackNotice, CallbackError> {
        let refund = self
            .creds
            .apiv3_key
            .decrypt_refund(&notification.resource)
            .map_err(|e| match e {
                WechatError::DecryptionFailed => {
                    CallbackError::SignatureMismatch("wechat resource does not decrypt".into())
                }
                other => CallbackError::Malformed(format!("wechat refund resource: {other}")),
            })?;
        if refund
            .mchid
            .as_deref()
            .is_some_and(|m| m != self.creds.signer.mchid())
        {
            return Err(CallbackError::Malformed(
                "`mchid` is not this merchant's".into(),
            ));
        }
        let trade = refund.out_trade_no.clone().unwrap_or_default();
        if intent_from_path(&cb.path).is_some_and(|routed| routed != trade) {
            return Err(CallbackError::Malformed(
                "the order number does not match the callback path".into(),
            ));
        }
        let refund_id = RefundId::parse(&refund.out_refund_no)
            .map_err(|_| CallbackError::Malformed("`out_refund_no` is not a refund id".into()))?;
        Ok(CallbackNotice {
            notification_id: notification.id,
            intent_id: intent_id("out_trade_no", &trade)?,
            outcome: CallbackOutcome::Refund(RefundReport::Own {
                refund_id,
                state: refund_state(refund.status),
                psp_reference: refund.refund_id,
            }),
        })
    }
}

/// WeChat Pay's refund status as the engine's refund state.
fn refund_state(status: wire::RefundStatus) -> ChannelRefundState {
    match status {
        wire::RefundStatus::Success => ChannelRefundState::Succeeded,
        wire::RefundStatus::Closed => ChannelRefundState::Failed {
            reason: "wechat refund closed".into(),
        },
        wire::RefundStatus::Abnormal => ChannelRefundState::Failed {
            reason: "wechat refund abnormal: the payer's account could not take it back".into(),
        },
        wire::RefundStatus::Processing | wire::RefundStatus::Unknown => ChannelRefundState::Pending,
    }
}

#[derive(Deserialize)]
struct ApiErrorBody {
    code: Option<String>,
    message: Option<String>,
}

#[async_trait]
impl ChannelAdapter for WechatAdapter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn supports_currency(&self, currency: Currency) -> bool {
        currency.code() == "CNY"
    }

    fn allows_livemode(&self) -> bool {
        true
    }

    async fn create_payment(
        &self,
        req: &ChannelPaymentRequest,
    ) -> Result<ChannelPayment, ChannelError> {
        let out_trade_no = req.intent_id.to_string();
        let notify_url = format!("{}/{out_trade_no}", self.notify_url);
        let description = format!("Payment {out_trade_no}");
        let body = wire::native_order_body(&wire::NativeOrder {
            appid: &self.creds.appid,
            mchid: self.creds.signer.mchid(),
            description: &description,
            out_trade_no: &out_trade_no,
            notify_url: &notify_url,
            amount: req.amount,
            expires_at: Some(req.expires_at),
        })
        .map_err(|e| ChannelError::Rejected(format!("wechat: {e}")))?;
        let now_secs = self.clock.now().ms().div_euclid(1000);
        let nonce = wire::generate_nonce();
        let authorization = self
            .creds
            .signer
            .authorization_header("POST", &self.order_path, now_secs, &nonce, &body)
            .map_err(|e| ChannelError::Rejected(format!("wechat: {e}")))?;
        let answer = self
            .client
            .post(
                NAME,
                &self.order_url,
                &[
                    ("authorization", &authorization),
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                    ("user-agent", "ipay-adapters"),
                ],
                body.into_bytes(),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            let err: Option<ApiErrorBody> = serde_json::from_slice(&answer.body).ok();
            let code = err
                .as_ref()
                .and_then(|e| e.code.clone())
                .unwrap_or_default();
            let message = err.and_then(|e| e.message).unwrap_or_default();
            let text = format!("wechat answered HTTP {}: {code} {message}", answer.status);
            return Err(
                if answer.status == 429 || code == "SYSTEM_ERROR" || code == "FREQUENCY_LIMITED" {
                    ChannelError::Unavailable(text)
                } else {
                    ChannelError::Rejected(text)
                },
            );
        }
        // A 2xx answer without a valid platform signature is to be treated as forged.
        self.verify_signed(|name| answer.header(name), &answer.body, now_secs)
            .map_err(|e| ChannelError::Unavailable(format!("wechat answer not trusted: {e}")))?;
        let code_url = wire::parse_native_response(answer.text(NAME)?)
            .map_err(|e| ChannelError::Unavailable(format!("wechat: {e}")))?;
        Ok(ChannelPayment {
            qr_code: code_url,
            channel_reference: None,
        })
    }

    async fn refund(&self, req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        let out_trade_no = req.intent_id.to_string();
        let out_refund_no = req.refund_id.to_string();
        let notify_url = format!("{}/{out_trade_no}", self.notify_url);
        let body = wire::refund_body(&wire::RefundRequest {
            out_trade_no: &out_trade_no,
            out_refund_no: &out_refund_no,
            reason: req.reason.as_deref(),
            notify_url: &notify_url,
            refund: req.amount,
            total: req.captured,
        })
        .map_err(|e| ChannelError::Rejected(format!("wechat: {e}")))?;
        self.refund_call("POST", "", body).await
    }

    async fn refund_status(
        &self,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        self.refund_call("GET", &format!("/{}", req.refund_id), String::new())
            .await
    }

    fn verify_callback(
        &self,
        cb: &InboundCallback,
        now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let body = &cb.body[..];
        self.verify_signed(|name| cb.header(name), body, now.ms().div_euclid(1000))
            .map_err(|e| match e {
                WechatError::TimestampOutOfTolerance { .. } => {
                    CallbackError::Stale(format!("wechat callback: {e}"))
                }
                WechatError::MissingHeader(_) | WechatError::InvalidTimestamp => {
                    CallbackError::Malformed(format!("wechat callback: {e}"))
                }
                other => CallbackError::SignatureMismatch(format!("wechat callback: {other}")),
            })?;
        let text = std::str::from_utf8(body)
            .map_err(|_| CallbackError::Malformed("callback body is not UTF-8".into()))?;
        let notification =
            wire::parse_callback(text).map_err(|e| CallbackError::Malformed(format!("{e}")))?;
        if notification.event_type.starts_with("REFUND.") {
            return self.refund_notice(cb, notification);
        }
        let transaction = self
            .creds
            .apiv3_key
            .decrypt_transaction(&notification.resource)
            .map_err(|e| match e {
                WechatError::DecryptionFailed => {
                    CallbackError::SignatureMismatch("wechat resource does not decrypt".into())
                }
                other => CallbackError::Malformed(format!("wechat resource: {other}")),
            })?;
        if transaction
            .mchid
            .as_deref()
            .is_some_and(|m| m != self.creds.signer.mchid())
        {
            return Err(CallbackError::Malformed(
                "`mchid` is not this merchant's".into(),
            ));
        }
        if let Some(routed) = intent_from_path(&cb.path)
            && routed != transaction.out_trade_no
        {
            return Err(CallbackError::Malformed(
                "the order number does not match the callback path".into(),
            ));
        }
        let intent = intent_id("out_trade_no", &transaction.out_trade_no)?;
        let outcome = match transaction.trade_state {
            TradeState::Success => CallbackOutcome::Paid {
                amount: money(transaction.amount.total, &transaction.amount.currency)?,
                channel_reference: transaction.transaction_id,
                payer: transaction.payer.and_then(|p| p.openid),
            },
            TradeState::Closed | TradeState::Payerror | TradeState::Revoked => {
                CallbackOutcome::Failed {
                    reason: format!(
                        "wechat trade state {:?}: {}",
                        transaction.trade_state,
                        transaction.trade_state_desc.unwrap_or_default()
                    ),
                }
            }
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id: notification.id,
            intent_id: intent,
            outcome,
        })
    }

    fn callback_ack(&self) -> CallbackAck {
        CallbackAck {
            status: 200,
            content_type: "application/json",
            body: "{\"code\":\"SUCCESS\"}".into(),
        }
    }
}

/// The intent a WeChat Pay callback is about: the last segment of the callback path (see the
/// module docs), since the body names it only inside the encrypted resource.
pub fn peek_intent(cb: &InboundCallback) -> Option<String> {
    intent_from_path(&cb.path).map(str::to_owned)
}
