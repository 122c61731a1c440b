//! Alipay as a `ChannelAdapter`: `alipay.trade.precreate` over HTTP (RSA2-signed form, signed
//! JSON answer carrying `qr_code`), and the async notify (RSA2 over the sorted form, verified
//! with the Alipay public key), answered with the literal `success`.
//!
//! Alipay notifies carry no signed timestamp and Alipay retries them for about 25 hours, so no
//! staleness window applies here; replays are caught by the engine's dedupe on `notify_id`.

use std::sync::Arc;

use async_trait::async_trait;
use ipay_engine::channel::{
    CallbackAck, CallbackError, CallbackNotice, CallbackOutcome, ChannelAdapter, ChannelError,
    ChannelPayment, ChannelPaymentRequest, ChannelRefund, ChannelRefundRequest, ChannelRefundState,
    InboundCallback, RefundReport,
};
use ipay_engine::clock::{Clock, Timestamp};
use ipay_engine::money::Currency;
use serde_json::Value;

use super::wire::{self, AlipayError, AlipayPrivateKey, AlipayPublicKey};
use crate::common::{Fields, form_value, intent_id, money, parse_decimal_2};
use crate::http::HttpClient;

/// Channel name.
pub const NAME: &str = "alipay";
/// Production base URL; the gateway is `{base}/gateway.do`.
pub const DEFAULT_BASE_URL: &str = "https://openapi.alipay.com";
/// Path of the gateway under the base URL.
pub const GATEWAY_PATH: &str = "/gateway.do";
const FIELDS: &[&str] = &["app_id", "private_key_pem", "alipay_public_key_pem"];

/// A merchant's Alipay credentials: `app_id`, `private_key_pem` (our application private key,
/// PEM or Alipay's bare base64, RSA ≥ 2048 bits) and `alipay_public_key_pem` (the Alipay public
/// key, PEM or bare base64).
#[derive(Clone)]
pub struct AlipayCredentials {
    /// The application id.
    pub app_id: String,
    private_key: AlipayPrivateKey,
    alipay_public_key: AlipayPublicKey,
}

impl std::fmt::Debug for AlipayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayCredentials")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

fn key_reason(e: &AlipayError) -> String {
    match e {
        AlipayError::KeyTooSmall { bits } => {
            format!("is a {bits}-bit RSA key; at least 2048 bits are required")
        }
        AlipayError::InvalidKey(why) => format!("does not parse: {why}"),
        _ => "does not parse".to_owned(),
    }
}

impl AlipayCredentials {
    /// Parses and checks the credential object.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::new(NAME, value, FIELDS)?;
        let app_id = f.req("app_id")?;
        if app_id.len() > 32 || !app_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(f.bad("app_id", "must be Alipay's numeric application id"));
        }
        let private_key = AlipayPrivateKey::parse(f.req("private_key_pem")?)
            .map_err(|e| f.bad("private_key_pem", key_reason(&e)))?;
        let alipay_public_key = AlipayPublicKey::parse(f.req("alipay_public_key_pem")?)
            .map_err(|e| f.bad("alipay_public_key_pem", key_reason(&e)))?;
        Ok(AlipayCredentials {
            app_id: app_id.to_owned(),
            private_key,
            alipay_public_key,
        })
    }
}

/// The Alipay adapter for one merchant.
pub struct AlipayAdapter {
    creds: AlipayCredentials,
    gateway_url: String,
    notify_url: String,
    client: HttpClient,
    clock: Arc<dyn Clock>,
}

impl AlipayAdapter {
    /// An adapter calling `{base_url}/gateway.do`, asking Alipay to notify `notify_url`.
    pub fn new(
        creds: AlipayCredentials,
        base_url: &str,
        notify_url: &str,
        client: HttpClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        AlipayAdapter {
            creds,
            gateway_url: format!("{}{GATEWAY_PATH}", base_url.trim_end_matches('/')),
            notify_url: notify_url.to_owned(),
            client,
            clock,
        }
    }
}

impl AlipayAdapter {
    /// Sends a signed request to the gateway and reads the verified refund answer.
    async fn refund_call(
        &self,
        request: Result<wire::SignedRequest, AlipayError>,
        method: &str,
    ) -> Result<ChannelRefund, ChannelError> {
        let request = request.map_err(|e| ChannelError::Rejected(format!("alipay: {e}")))?;
        let answer = self
            .client
            .post(
                NAME,
                &self.gateway_url,
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded;charset=utf-8",
                )],
                request.to_form_body().into_bytes(),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(ChannelError::Rejected(format!(
                "alipay answered HTTP {}",
                answer.status
            )));
        }
        let parsed =
            wire::parse_refund_response(answer.text(NAME)?, method, &self.creds.alipay_public_key);
        let state = match parsed {
            Ok(wire::RefundAnswer::Refunded { trade_no }) => {
                return Ok(ChannelRefund {
                    state: ChannelRefundState::Succeeded,
                    psp_reference: trade_no,
                });
            }
            Ok(wire::RefundAnswer::Processing) => ChannelRefundState::Pending,
            Ok(wire::RefundAnswer::Unknown) => ChannelRefundState::NotFound,
            Err(AlipayError::Business {
                code,
                sub_code,
                sub_msg,
                ..
            }) if !is_transient(&code, &sub_code) => ChannelRefundState::Failed {
                reason: format!("alipay refused the refund: {sub_code} {sub_msg}"),
            },
            Err(e) => return Err(ChannelError::Unavailable(format!("alipay: {e}"))),
        };
        Ok(ChannelRefund {
            state,
            psp_reference: None,
        })
    }
}

/// Alipay business errors that mean "try again later" rather than "no".
fn is_transient(code: &str, sub_code: &str) -> bool {
    code == "20000" || sub_code.ends_with("SYSTEM_ERROR") || sub_code == "aop.ACQ.SYSTEM_ERROR"
}

#[async_trait]
impl ChannelAdapter for AlipayAdapter {
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
        let subject = format!("Payment {out_trade_no}");
        let order = wire::PrecreateOrder {
            out_trade_no: &out_trade_no,
            amount: req.amount,
            subject: &subject,
            expires_at: Some(req.expires_at),
        };
        let request = wire::build_precreate_request(
            &self.creds.app_id,
            &self.notify_url,
            &order,
            self.clock.now(),
            &self.creds.private_key,
        )
        .map_err(|e| ChannelError::Rejected(format!("alipay: {e}")))?;
        let answer = self
            .client
            .post(
                NAME,
                &self.gateway_url,
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded;charset=utf-8",
                )],
                request.to_form_body().into_bytes(),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(ChannelError::Rejected(format!(
                "alipay answered HTTP {}",
                answer.status
            )));
        }
        let parsed =
            wire::parse_precreate_response(answer.text(NAME)?, &self.creds.alipay_public_key)
                .map_err(|e| match e {
                    AlipayError::Business {
                        ref code,
                        ref sub_code,
                        ..
                    } if !is_transient(code, sub_code) => ChannelError::Rejected(format!("{e}")),
                    other => ChannelError::Unavailable(format!("alipay: {other}")),
                })?;
        if parsed.out_trade_no != out_trade_no {
            return Err(ChannelError::Unavailable(
                "alipay answered for another out_trade_no".into(),
            ));
        }
        Ok(ChannelPayment {
            qr_code: parsed.qr_code,
            channel_reference: None,
        })
    }

    async fn refund(&self, req: &ChannelRefundRequest) -> Result<ChannelRefund, ChannelError> {
        let out_trade_no = req.intent_id.to_string();
        let out_request_no = req.refund_id.to_string();
        let order = wire::RefundOrder {
            out_trade_no: &out_trade_no,
            out_request_no: &out_request_no,
            amount: req.amount,
            reason: req.reason.as_deref(),
        };
        let request = wire::build_refund_request(
            &self.creds.app_id,
            &order,
            self.clock.now(),
            &self.creds.private_key,
        );
        self.refund_call(request, wire::REFUND_METHOD).await
    }

    async fn refund_status(
        &self,
        req: &ChannelRefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let request = wire::build_refund_query_request(
            &self.creds.app_id,
            &req.intent_id.to_string(),
            &req.refund_id.to_string(),
            self.clock.now(),
            &self.creds.private_key,
        );
        self.refund_call(request, wire::REFUND_QUERY_METHOD).await
    }

    fn verify_callback(
        &self,
        cb: &InboundCallback,
        _now: Timestamp,
    ) -> Result<CallbackNotice, CallbackError> {
        let body = std::str::from_utf8(&cb.body)
            .map_err(|_| CallbackError::Malformed("notify body is not UTF-8".into()))?;
        let params =
            wire::parse_form(body).map_err(|e| CallbackError::Malformed(format!("{e}")))?;
        wire::verify_notify(&params, &self.creds.alipay_public_key).map_err(|e| match e {
            AlipayError::DuplicateParam(_) => CallbackError::Malformed(format!("{e}")),
            other => CallbackError::SignatureMismatch(format!("alipay notify: {other}")),
        })?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let need = |name: &'static str| {
            get(name).ok_or_else(|| CallbackError::Malformed(format!("`{name}` is missing")))
        };
        if need("app_id")? != self.creds.app_id {
            return Err(CallbackError::Malformed(
                "`app_id` is not this merchant's".into(),
            ));
        }
        let notification_id = need("notify_id")?.to_owned();
        let intent = intent_id("out_trade_no", need("out_trade_no")?)?;
        // A refund (ours or one made in Alipay's merchant portal) is notified with the trade's
        // running `refund_fee`.
        if let Some(report) = refund_report(get("refund_fee"), get("out_biz_no"))? {
            return Ok(CallbackNotice {
                notification_id,
                intent_id: intent,
                outcome: report,
            });
        }
        let outcome = match need("trade_status")? {
            "TRADE_SUCCESS" | "TRADE_FINISHED" => {
                let fen = parse_decimal_2(need("total_amount")?)
                    .ok_or_else(|| CallbackError::Malformed("`total_amount` is invalid".into()))?;
                CallbackOutcome::Paid {
                    amount: money(fen, "CNY")?,
                    channel_reference: get("trade_no").map(str::to_owned),
                    payer: get("buyer_id").map(str::to_owned),
                }
            }
            "TRADE_CLOSED" => CallbackOutcome::Failed {
                reason: "alipay trade closed (unpaid and expired, or fully refunded)".into(),
            },
            _ => CallbackOutcome::Ignored,
        };
        Ok(CallbackNotice {
            notification_id,
            intent_id: intent,
            outcome,
        })
    }

    fn callback_ack(&self) -> CallbackAck {
        CallbackAck {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: wire::NOTIFY_SUCCESS.into(),
        }
    }
}

/// The refund report of a notify that carries `refund_fee`, if it does.
fn refund_report(
    refund_fee: Option<&str>,
    out_biz_no: Option<&str>,
) -> Result<Option<CallbackOutcome>, CallbackError> {
    let Some(refund_fee) = refund_fee else {
        return Ok(None);
    };
    let fen = parse_decimal_2(refund_fee)
        .ok_or_else(|| CallbackError::Malformed("`refund_fee` is invalid".into()))?;
    Ok(Some(CallbackOutcome::Refund(RefundReport::Total {
        refunded: money(fen, "CNY")?,
        psp_reference: out_biz_no.map(str::to_owned),
    })))
}

/// The intent an Alipay notify names (`out_trade_no`), read without verifying.
pub fn peek_intent(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    form_value(body, "out_trade_no").map(str::to_owned)
}
