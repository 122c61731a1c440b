//! Opening a return (consumer with the session's pay token, or the merchant), what the
//! merchant and the consumer's portal see of it, the merchant's listing and rejection.

use super::{
    Change, MAX_HISTORY, Opener, RETURN_BY_SESSION, RETURN_BY_TOKEN, RETURNS, ReturnAction,
    ReturnCase, ReturnHistory, ReturnStatus, internal, new_return_id,
};
use crate::LastMile;
use crate::orders::CursorPagination;
use crate::sessions::{Actor, ParcelStatus, PaymentSession, SessionStatus};
use base64::Engine as _;
use ipay_engine::clock::Timestamp;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::{MerchantId, PaymentIntentId, RefundId};
use ipay_engine::store::{EntryRange, WriteOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ops::Bound;

/// `POST /api/returns/open` body. A consumer gives `session_token` (the pay token of the pay
/// link; no login); a merchant (JWT) gives `session_id`.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenReturnRequest {
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// Why, in the consumer's words (at most `max_reason_chars`).
    #[serde(default)]
    pub reason: Option<String>,
    /// Minor units to refund; default the whole amount paid.
    #[serde(default)]
    pub amount: Option<i64>,
}

impl std::fmt::Debug for OpenReturnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenReturnRequest")
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("session_id", &self.session_id)
            .field("amount", &self.amount)
            .finish()
    }
}

/// A return as its merchant (and operators) see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReturnView {
    #[schema(example = "ret_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: String,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    #[schema(value_type = String)]
    pub session_id: String,
    pub order_id: String,
    pub ipay_reference_18: String,
    pub status: ReturnStatus,
    pub opened_by: Opener,
    pub reason: Option<String>,
    pub amount: i64,
    pub currency: String,
    #[schema(value_type = String)]
    pub payment_intent: PaymentIntentId,
    pub sendcloud_parcel_id: Option<u64>,
    pub tracking_number: Option<String>,
    #[schema(value_type = Option<String>)]
    pub refund_id: Option<RefundId>,
    pub refund_failure: Option<String>,
    /// The consumer's return portal (share it with the consumer).
    pub portal_url: String,
    pub history: Vec<ReturnHistory>,
    pub livemode: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub received_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refunded_at: Option<Timestamp>,
}

/// What the consumer's return portal shows: nothing internal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReturnPortal {
    pub ipay_reference_display: String,
    pub merchant_name: Option<String>,
    pub status: ReturnStatus,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub tracking_number: Option<String>,
    /// Whether a return label can be downloaded (`POST /api/labels/create` with the token).
    pub label_ready: bool,
    pub history: Vec<ReturnHistory>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub refunded_at: Option<Timestamp>,
}

/// The answer to a consumer opening a return: the portal and its token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenedByConsumer {
    /// The return token (`GET /api/returns/{id}` with it); opening again answers it again.
    pub return_token: String,
    pub portal_url: String,
    pub portal: ReturnPortal,
}

/// Query of `GET /api/returns`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReturnListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only returns in this status (`opened`, `label_created`, …).
    pub status: Option<String>,
}

/// One page of returns, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReturnPage {
    pub data: Vec<ReturnView>,
    pub pagination: CursorPagination,
}

/// Return entries one listing examines at most before answering a partial page.
const LIST_SCAN_BUDGET: usize = 5_000;

pub(super) fn portal_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl LastMile {
    /// The merchant's view of a return.
    pub fn return_view(&self, r: &ReturnCase) -> ReturnView {
        ReturnView {
            id: r.id.clone(),
            merchant_id: r.merchant_id,
            session_id: r.session_id.to_string(),
            order_id: r.order_id.clone(),
            ipay_reference_18: r.reference.to_string(),
            status: r.status,
            opened_by: r.opened_by,
            reason: r.reason.clone(),
            amount: r.amount,
            currency: r.currency.clone(),
            payment_intent: r.payment_intent,
            sendcloud_parcel_id: r.sendcloud_parcel_id,
            tracking_number: r.tracking_number.clone(),
            refund_id: r.refund_id,
            refund_failure: r.refund_failure.clone(),
            portal_url: self.portal_url(&r.portal_token),
            history: r.history.clone(),
            livemode: r.livemode,
            created: r.created,
            updated: r.updated,
            received_at: r.received_at,
            refunded_at: r.refunded_at,
        }
    }

    fn portal_url(&self, token: &str) -> String {
        format!(
            "{}/returns/{token}",
            self.ret_cfg().portal_base_url.trim_end_matches('/')
        )
    }

    async fn return_portal(&self, r: &ReturnCase) -> ReturnPortal {
        ReturnPortal {
            ipay_reference_display: r.reference.grouped(),
            merchant_name: self.merchant(r.merchant_id).await.ok().map(|m| m.name),
            status: r.status,
            amount: r.amount,
            currency: r.currency.clone(),
            reason: r.reason.clone(),
            tracking_number: r.tracking_number.clone(),
            label_ready: r.label_url.is_some(),
            history: r.history.clone(),
            refunded_at: r.refunded_at,
        }
    }

    /// A consumer opens a return with the pay token of a delivered parcel. Opening twice
    /// answers the open return (`false`).
    pub async fn open_return_consumer(
        &self,
        req: OpenReturnRequest,
    ) -> EngineResult<(OpenedByConsumer, bool)> {
        let token = req.session_token.as_deref().ok_or_else(|| {
            EngineError::invalid(
                "parameter_missing",
                "session_token",
                "give the pay token of the parcel's pay link (or log in as the merchant and give session_id)",
            )
        })?;
        let s = self.session_by_token(token).await?;
        let (r, created) = self.open_return(&s, &req, Opener::Consumer).await?;
        Ok((
            OpenedByConsumer {
                return_token: r.portal_token.clone(),
                portal_url: self.portal_url(&r.portal_token),
                portal: self.return_portal(&r).await,
            },
            created,
        ))
    }

    /// The merchant opens a return for one of its delivered parcels.
    pub async fn open_return_merchant(
        &self,
        merchant: MerchantId,
        req: OpenReturnRequest,
    ) -> EngineResult<(ReturnView, bool)> {
        let id = req.session_id.as_deref().ok_or_else(|| {
            EngineError::invalid(
                "parameter_missing",
                "session_id",
                "give the id of the delivered parcel's payment session",
            )
        })?;
        let s = self.session_for(Actor::Merchant(merchant), id).await?;
        let (r, created) = self.open_return(&s, &req, Opener::Merchant).await?;
        Ok((self.return_view(&r), created))
    }

    async fn open_return(
        &self,
        s: &PaymentSession,
        req: &OpenReturnRequest,
        by: Opener,
    ) -> EngineResult<(ReturnCase, bool)> {
        let (amount, reason) = self.check_open(s, req, by)?;
        let key = s.id.to_string();
        let scopes = vec![format!("lm:ret-session:{key}")];
        let guard = self.reserve_unique(scopes).await?;
        let out = async {
            if let Some(r) = self.ret_lookup(RETURN_BY_SESSION, &key).await? {
                return Ok((r, false));
            }
            let pi = s
                .paid_intent
                .ok_or_else(|| internal("released session without payment"))?;
            let now = self.engine.clock().now();
            let mut r = new_return(s, pi, amount, reason, by, now);
            let mut c = Change::new();
            for (kind, k) in [
                (RETURN_BY_TOKEN, portal_key(&r.portal_token)),
                (RETURN_BY_SESSION, key.clone()),
            ] {
                c.batch.push(WriteOp::PutRecord {
                    kind,
                    key: k,
                    value: r.id.clone().into_bytes(),
                });
            }
            let view = self.return_view(&r);
            c.event(&r, now, "return.opened", &view);
            self.ret_commit(&mut r, c).await?;
            Ok((r, true))
        }
        .await;
        guard.release(self).await;
        out
    }

    /// Whether the session's parcel may be returned now; the amount and reason to record.
    fn check_open(
        &self,
        s: &PaymentSession,
        req: &OpenReturnRequest,
        by: Opener,
    ) -> EngineResult<(i64, Option<String>)> {
        let Some(delivered) = s.delivered_at.filter(|_| {
            s.status == SessionStatus::Released && s.parcel_status == ParcelStatus::Delivered
        }) else {
            return Err(EngineError::Conflict {
                code: "parcel_not_delivered",
                message: "only a paid, delivered parcel can be returned".into(),
            });
        };
        let window_ms = self.ret_cfg().window_days.max(1).saturating_mul(86_400_000);
        let now = self.engine.clock().now();
        if by == Opener::Consumer && now.ms() > delivered.ms().saturating_add(window_ms) {
            return Err(EngineError::Conflict {
                code: "return_window_closed",
                message: format!(
                    "returns can be opened up to {} days after delivery; ask the merchant",
                    self.ret_cfg().window_days
                ),
            });
        }
        let amount = req.amount.unwrap_or(s.amount);
        if amount <= 0 || amount > s.amount {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "amount",
                format!("amount must be between 1 and {} (what was paid)", s.amount),
            ));
        }
        let reason = req
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > self.ret_cfg().max_reason_chars) {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "reason",
                format!(
                    "reason is limited to {} characters",
                    self.ret_cfg().max_reason_chars
                ),
            ));
        }
        Ok((amount, reason.map(str::to_string)))
    }

    /// The return behind a portal token (404 otherwise), its pending refund checked.
    pub(super) async fn return_by_token(&self, token: &str) -> EngineResult<ReturnCase> {
        let nf = || EngineError::not_found("return", "(token)");
        if token.len() > 100 {
            return Err(nf());
        }
        let r = self
            .ret_lookup(RETURN_BY_TOKEN, &portal_key(token))
            .await?
            .ok_or_else(nf)?;
        self.settle_refund(r).await
    }

    /// A return the merchant (or an operator) may see (404 otherwise), its refund checked.
    pub async fn return_for(&self, who: Actor, id: &str) -> EngineResult<ReturnCase> {
        let r = self.return_visible(who, id).await?;
        self.settle_refund(r).await
    }

    /// A return the merchant (or an operator) may see (404 otherwise), as stored.
    pub(super) async fn return_visible(&self, who: Actor, id: &str) -> EngineResult<ReturnCase> {
        let nf = || EngineError::not_found("return", id);
        if !id.starts_with("ret_") || id.len() > 40 {
            return Err(nf());
        }
        let r = self.ret_load(id).await?.ok_or_else(nf)?;
        if let Actor::Merchant(m) = who
            && m != r.merchant_id
        {
            return Err(nf());
        }
        Ok(r)
    }

    /// The consumer's return portal.
    pub async fn return_portal_view(&self, token: &str) -> EngineResult<ReturnPortal> {
        let r = self.return_by_token(token).await?;
        Ok(self.return_portal(&r).await)
    }

    /// The merchant rejects a return (not once the refund was started).
    pub async fn reject_return(&self, who: Actor, id: &str) -> EngineResult<ReturnView> {
        let r = self.return_for(who, id).await?;
        let (r, ()) = self
            .ret_mutate(&r.id, async |r, c| {
                let now = self.engine.clock().now();
                r.apply(ReturnAction::Reject, now, "merchant".into())?;
                c.touch();
                Ok(())
            })
            .await?;
        Ok(self.return_view(&r))
    }

    /// A merchant's returns, newest first, optionally of one status; keyset-paginated.
    pub async fn list_returns(
        &self,
        merchant: MerchantId,
        p: &ReturnListParams,
    ) -> EngineResult<ReturnPage> {
        let limit = p.limit.unwrap_or(20);
        if limit == 0 || limit > 100 {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "limit",
                "limit must be between 1 and 100",
            ));
        }
        let status = match p.status.as_deref() {
            None => None,
            Some(v) => Some(ReturnStatus::parse(v).ok_or_else(|| {
                EngineError::invalid(
                    "parameter_invalid",
                    "status",
                    "status must be one of opened, label_created, in_transit, received, \
                     refund_pending, refunded, refund_failed, rejected",
                )
            })?),
        };
        if p.cursor
            .as_deref()
            .is_some_and(|c| !c.starts_with("ret_") || c.len() > 40)
        {
            return Err(EngineError::invalid(
                "parameter_invalid",
                "cursor",
                "cursor must be the next_cursor of a previous page",
            ));
        }
        self.scan_returns(merchant, limit, status, p.cursor.clone())
            .await
    }

    async fn scan_returns(
        &self,
        merchant: MerchantId,
        limit: usize,
        status: Option<ReturnStatus>,
        mut upper: Option<String>,
    ) -> EngineResult<ReturnPage> {
        let mut data = Vec::with_capacity(limit);
        let mut examined = 0;
        let mut exhausted = false;
        while data.len() < limit && examined < LIST_SCAN_BUDGET {
            let range = EntryRange {
                start: Bound::Unbounded,
                end: upper.clone().map_or(Bound::Unbounded, Bound::Excluded),
                limit: 200,
                descending: true,
            };
            let rows = self
                .engine
                .ledger()
                .scan_entries(RETURNS, &merchant.to_string(), &range)
                .await?;
            exhausted = rows.len() < 200;
            for (sort, value) in rows {
                examined += 1;
                upper = Some(sort);
                let r: ReturnCase = serde_json::from_slice(&value).map_err(internal)?;
                if status.is_none_or(|s| s == r.status) {
                    data.push(self.return_view(&r));
                    if data.len() == limit {
                        break;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        let has_more = !(exhausted && data.len() < limit) && upper.is_some();
        Ok(ReturnPage {
            data,
            pagination: CursorPagination {
                limit,
                next_cursor: if has_more { upper } else { None },
                has_more,
            },
        })
    }
}

/// A new return of a delivered session: `opened`, nothing else yet.
fn new_return(
    s: &PaymentSession,
    pi: PaymentIntentId,
    amount: i64,
    reason: Option<String>,
    by: Opener,
    now: Timestamp,
) -> ReturnCase {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let note = match by {
        Opener::Consumer => "consumer",
        Opener::Merchant => "merchant",
    };
    let mut history = Vec::with_capacity(MAX_HISTORY.min(8));
    history.push(ReturnHistory {
        at: now,
        status: ReturnStatus::Opened,
        note: note.into(),
    });
    ReturnCase {
        id: new_return_id(now.ms()),
        merchant_id: s.merchant_id,
        livemode: s.livemode,
        session_id: s.id,
        order_id: s.order_id.clone(),
        reference: s.reference,
        portal_token: token,
        status: ReturnStatus::Opened,
        opened_by: by,
        reason,
        amount,
        currency: s.currency.clone(),
        payment_intent: pi,
        sendcloud_parcel_id: None,
        tracking_number: None,
        label_url: None,
        refund_id: None,
        refund_attempts: 0,
        refund_failure: None,
        history,
        created: now,
        updated: now,
        received_at: None,
        refunded_at: None,
    }
}
