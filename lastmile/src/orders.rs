//! Last-mile orders: the [`Order`] model, its validation (one function shared by the JSON API,
//! bulk upload and shop webhooks), its storage and the filtered, cursor-paginated listing.
//!
//! Storage (generic ledger records and indexes):
//! - `lm_order/{order_id}` → the order (JSON);
//! - `lm_orders` partition `{merchant}:{YYYYMMDD}` (UTC day of creation), sort key the order
//!   id (time-ordered) → the order again, so a list page is one scan with no lookups;
//! - `lm_order_days` partition `{merchant}`, sort key `YYYYMMDD` → days that have orders;
//! - `lm_order_ext/{merchant}:{namespace}:{external_id}` → order id, the duplicate check.
//!
//! Anything that changes an order writes [`order_write_ops`] so record and index stay equal.
//! Sessions, parcel states and payments are not here (see the session modules).

use crate::LastMile;
use crate::daily::{self, day};
use ipay_engine::clock::Timestamp;
use ipay_engine::engine::AmountInput;
use ipay_engine::error::{EngineError, EngineResult};
use ipay_engine::ids::MerchantId;
use ipay_engine::model::Event;
use ipay_engine::money::Money;
use ipay_engine::store::{WriteBatch, WriteOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

const ORDER: &str = "lm_order";
const ORDER_EXT: &str = "lm_order_ext";
const ORDERS_BY_DAY: &str = "lm_orders";
const ORDER_DAYS: &str = "lm_order_days";
/// Bounds on order content.
pub const MAX_ITEMS: usize = 100;
const MAX_TEXT: usize = 200;
const MAX_EXTERNAL_ID: usize = 100;
const MAX_QTY: u32 = 100_000;

pub use ipay_engine::ids::OrderId;

/// Where an order is in its life. Payment sessions and parcels move it forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Accepted, no payment session yet.
    Created,
    /// A payment session (18-digit reference) exists.
    SessionCreated,
    /// The consumer paid.
    Paid,
    /// The parcel was delivered.
    Delivered,
    /// Cancelled.
    Cancelled,
}

impl FromStr for OrderStatus {
    type Err = EngineError;
    fn from_str(s: &str) -> EngineResult<OrderStatus> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).map_err(|_| {
            EngineError::invalid(
                "parameter_invalid",
                "status",
                "status must be one of CREATED, SESSION_CREATED, PAID, DELIVERED, CANCELLED",
            )
        })
    }
}

/// A postal address. `country` is an ISO 3166-1 alpha-2 code, upper case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[schema(example = "NL")]
    pub country: String,
}

/// The person receiving the parcel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    pub address: Address,
}

/// One order line. `unit_price` is in minor units of the order's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    pub sku: String,
    pub name: String,
    pub qty: u32,
    pub unit_price: i64,
}

/// A stored order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    #[schema(value_type = String, example = "ord_01J7XZ1A2B3C4D5E6F7G8H9IKM")]
    pub id: OrderId,
    #[schema(value_type = String)]
    pub merchant_id: MerchantId,
    /// The shop's or file's own order number, when given (duplicates are refused).
    pub external_id: Option<String>,
    /// `api`, `csv`, `xlsx`, or the shop platform (`shopify`, `woocommerce`, …).
    pub source: String,
    pub status: OrderStatus,
    pub customer: Customer,
    pub items: Vec<OrderItem>,
    /// What the consumer pays on delivery.
    pub amount: Money,
    /// Carrier code, upper case (`DHL`, `POSTNL`, …).
    pub carrier_code: String,
    /// Whether the order is collected through IPAY.
    pub ipay_flag: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

/// `POST /api/orders` body (also what uploads and shop mappings produce).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    #[serde(default)]
    pub external_id: Option<String>,
    pub customer: Customer,
    /// Up to 100 lines; may be empty.
    #[serde(default)]
    pub items: Vec<OrderItem>,
    pub amount: AmountInput,
    pub carrier_code: String,
    /// Default `true`.
    #[serde(default)]
    pub ipay_flag: Option<bool>,
}

/// Why one field of an order was refused: `field` is the parameter path
/// (`customer.address.country`); uploads turn it into a column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<FieldError> for EngineError {
    fn from(e: FieldError) -> EngineError {
        EngineError::invalid("parameter_invalid", e.field, e.reason)
    }
}

/// A validated order, ready to store.
#[derive(Debug, Clone)]
pub struct ValidOrder {
    external_id: Option<String>,
    customer: Customer,
    items: Vec<OrderItem>,
    amount: Money,
    carrier_code: String,
    ipay_flag: bool,
}

impl ValidOrder {
    /// The external id, if any.
    pub fn external_id(&self) -> Option<&str> {
        self.external_id.as_deref()
    }

    /// The amount.
    pub fn amount(&self) -> Money {
        self.amount
    }
}

fn text(field: &str, v: &str, required: bool) -> Result<Option<String>, FieldError> {
    let t = v.trim();
    if t.is_empty() {
        return if required {
            Err(FieldError::new(field, "is required"))
        } else {
            Ok(None)
        };
    }
    if t.chars().count() > MAX_TEXT {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(Some(t.to_string()))
}

fn required(field: &str, v: &str) -> Result<String, FieldError> {
    text(field, v, true).map(Option::unwrap_or_default)
}

fn optional(field: &str, v: Option<&str>) -> Result<Option<String>, FieldError> {
    text(field, v.unwrap_or(""), false)
}

/// Validates an order and puts it in canonical form (trimmed text, upper-case country and
/// carrier, lower-case email).
pub fn validate(input: OrderInput) -> Result<ValidOrder, FieldError> {
    let external_id = valid_external_id(input.external_id.as_deref())?;
    let c = &input.customer;
    let name = required("customer.name", &c.name)?;
    let email = valid_email(c.email.as_deref())?;
    let phone = valid_phone(c.phone.as_deref())?;
    let address = valid_address(&c.address)?;
    let amount =
        Money::from_parts(input.amount.value, input.amount.currency.trim()).map_err(|e| {
            let field = if matches!(e, ipay_engine::money::MoneyError::UnknownCurrency(_)) {
                "amount.currency"
            } else {
                "amount.value"
            };
            FieldError::new(field, e.to_string())
        })?;
    let items = valid_items(&input.items)?;
    let carrier_code = valid_carrier(&input.carrier_code)?;
    Ok(ValidOrder {
        external_id,
        customer: Customer {
            name,
            email,
            phone,
            address,
        },
        items,
        amount,
        carrier_code,
        ipay_flag: input.ipay_flag.unwrap_or(true),
    })
}

fn valid_external_id(e: Option<&str>) -> Result<Option<String>, FieldError> {
    match e.map(str::trim) {
        None | Some("") => Ok(None),
        Some(e) if e.chars().count() > MAX_EXTERNAL_ID || e.chars().any(char::is_control) => {
            Err(FieldError::new(
                "external_id",
                format!("must be at most {MAX_EXTERNAL_ID} printable characters"),
            ))
        }
        Some(e) => Ok(Some(e.to_string())),
    }
}

fn valid_email(e: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(e) = optional("customer.email", e)? else {
        return Ok(None);
    };
    let e = e.to_lowercase();
    let ok = e.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty() && d.contains('.') && !d.contains('@') && !d.ends_with('.')
    }) && !e.contains(char::is_whitespace);
    if !ok {
        return Err(FieldError::new(
            "customer.email",
            "must be an address like name@example.com",
        ));
    }
    Ok(Some(e))
}

fn valid_phone(p: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(p) = optional("customer.phone", p)? else {
        return Ok(None);
    };
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let ok = p
        .chars()
        .all(|ch| ch.is_ascii_digit() || " +-().".contains(ch))
        && (6..=20).contains(&digits);
    if !ok {
        return Err(FieldError::new(
            "customer.phone",
            "must be a phone number of 6 to 20 digits (+, spaces, dashes and brackets allowed)",
        ));
    }
    Ok(Some(p))
}

fn valid_address(a: &Address) -> Result<Address, FieldError> {
    let country = a.country.trim().to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FieldError::new(
            "customer.address.country",
            "must be an ISO 3166-1 alpha-2 country code such as NL or DE",
        ));
    }
    Ok(Address {
        line1: required("customer.address.line1", &a.line1)?,
        line2: optional("customer.address.line2", a.line2.as_deref())?,
        city: required("customer.address.city", &a.city)?,
        postal_code: required("customer.address.postal_code", &a.postal_code)?,
        region: optional("customer.address.region", a.region.as_deref())?,
        country,
    })
}

fn valid_items(input: &[OrderItem]) -> Result<Vec<OrderItem>, FieldError> {
    if input.len() > MAX_ITEMS {
        return Err(FieldError::new(
            "items",
            format!("at most {MAX_ITEMS} items per order"),
        ));
    }
    let mut items = Vec::with_capacity(input.len());
    for (i, it) in input.iter().enumerate() {
        let f = |n: &str| format!("items[{i}].{n}");
        if it.qty == 0 || it.qty > MAX_QTY {
            return Err(FieldError::new(
                &f("qty"),
                format!("must be between 1 and {MAX_QTY}"),
            ));
        }
        if it.unit_price < 0 || it.unit_price > ipay_engine::money::MAX_MINOR_UNITS {
            return Err(FieldError::new(
                &f("unit_price"),
                "must be a non-negative whole number of minor units",
            ));
        }
        items.push(OrderItem {
            sku: required(&f("sku"), &it.sku)?,
            name: required(&f("name"), &it.name)?,
            qty: it.qty,
            unit_price: it.unit_price,
        });
    }
    Ok(items)
}

fn valid_carrier(c: &str) -> Result<String, FieldError> {
    let carrier_code = c.trim().to_ascii_uppercase();
    if carrier_code.is_empty()
        || carrier_code.len() > 32
        || !carrier_code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(FieldError::new(
            "carrier_code",
            "must be 1 to 32 letters, digits, `_` or `-` (e.g. DHL, POSTNL)",
        ));
    }
    Ok(carrier_code)
}

/// The outcome of storing one order.
#[derive(Debug, Clone)]
pub enum Inserted {
    Created(Box<Order>),
    /// An order with the same external id exists (or came earlier in the same call).
    Duplicate {
        existing: Option<OrderId>,
    },
}

/// How far an order is from its payment when its shop sends an update: decides which fields
/// the update may change (see [`apply_shop_update`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpdateStage {
    /// No payment session: every mutable field may change.
    NoSession,
    /// A session exists but is not paid: its pay link and intent carry the amount, so amount
    /// and currency stay.
    SessionUnpaid,
    /// Paid (or delivered): amounts and status stay; contact, address and items still follow
    /// the shop (the parcel must reach the person).
    Paid,
}

/// What a shop update changed, and what it asked for but was kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UpdateResult {
    pub changed: Vec<&'static str>,
    pub kept: Vec<&'static str>,
}

/// Applies a shop's new version of an order (`orders/updated`, …) to the stored order, the
/// one place that decides which fields an update may touch at which [`UpdateStage`].
/// `cancelled`: the shop says the order is cancelled.
pub(crate) fn apply_shop_update(
    order: &mut Order,
    v: ValidOrder,
    cancelled: bool,
    stage: UpdateStage,
) -> UpdateResult {
    let mut r = UpdateResult::default();
    if order.customer != v.customer {
        order.customer = v.customer;
        r.changed.push("customer");
    }
    if order.items != v.items {
        order.items = v.items;
        r.changed.push("items");
    }
    if order.carrier_code != v.carrier_code {
        order.carrier_code = v.carrier_code;
        r.changed.push("carrier_code");
    }
    if order.amount != v.amount {
        if stage == UpdateStage::NoSession {
            order.amount = v.amount;
            r.changed.push("amount");
        } else {
            r.kept.push("amount");
        }
    }
    if order.ipay_flag != v.ipay_flag {
        if stage == UpdateStage::NoSession {
            order.ipay_flag = v.ipay_flag;
            r.changed.push("ipay_flag");
        } else {
            r.kept.push("ipay_flag");
        }
    }
    if cancelled && order.status != OrderStatus::Cancelled {
        if stage == UpdateStage::Paid
            || matches!(order.status, OrderStatus::Paid | OrderStatus::Delivered)
        {
            r.kept.push("status");
        } else {
            order.status = OrderStatus::Cancelled;
            r.changed.push("status");
        }
    }
    r
}

/// The ops that (re)write an order's record and its index entry; include them in any batch
/// that changes an order.
pub fn order_write_ops(order: &Order) -> EngineResult<[WriteOp; 2]> {
    let json = serde_json::to_vec(order).map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok([
        WriteOp::PutRecord {
            kind: ORDER,
            key: order.id.to_string(),
            value: json.clone(),
        },
        WriteOp::PutEntry {
            index: ORDERS_BY_DAY,
            partition: day_partition(order.merchant_id, order.created.ms()),
            sort: order.id.to_string(),
            value: json,
        },
    ])
}

fn day_partition(merchant: MerchantId, ms: i64) -> String {
    format!("{merchant}:{}", day(ms))
}

fn ext_key(merchant: MerchantId, namespace: &str, external_id: &str) -> String {
    format!("{merchant}:{namespace}:{external_id}")
}

/// The HotState reservation guarding an external id's duplicate check.
pub(crate) fn ext_scope(merchant: MerchantId, namespace: &str, external_id: &str) -> String {
    format!(
        "lm:uniq:order:{}",
        ext_key(merchant, namespace, external_id)
    )
}

/// Query of `GET /api/orders`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrderListParams {
    /// 1 to 100, default 20.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// CREATED | SESSION_CREATED | PAID | DELIVERED | CANCELLED
    pub status: Option<String>,
    /// ISO 3166-1 alpha-2 code of the delivery address.
    pub country: Option<String>,
    pub carrier_code: Option<String>,
    /// `api`, `csv`, `xlsx`, `shopify`, …
    pub source: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (inclusive).
    pub created_after: Option<String>,
    /// RFC 3339 time or `YYYY-MM-DD` (exclusive).
    pub created_before: Option<String>,
}

/// One page of orders, newest first.
#[derive(Debug, Serialize)]
pub struct OrderPage {
    pub data: Vec<Order>,
    pub pagination: CursorPagination,
}

/// Keyset pagination.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CursorPagination {
    pub limit: usize,
    /// Pass as `cursor` for the next page; `null` when there is none.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

struct Filter {
    status: Option<OrderStatus>,
    country: Option<String>,
    carrier: Option<String>,
    source: Option<String>,
}

impl Filter {
    /// Reads a listing's filters, normalised as orders store them.
    fn of(p: &OrderListParams) -> EngineResult<Filter> {
        Ok(Filter {
            status: p.status.as_deref().map(str::parse).transpose()?,
            country: p.country.as_deref().map(|c| c.trim().to_ascii_uppercase()),
            carrier: p
                .carrier_code
                .as_deref()
                .map(|c| c.trim().to_ascii_uppercase()),
            source: p.source.as_deref().map(|s| s.trim().to_ascii_lowercase()),
        })
    }

    fn matches(&self, o: &Order) -> bool {
        self.status.is_none_or(|s| o.status == s)
            && self
                .country
                .as_deref()
                .is_none_or(|c| o.customer.address.country == c)
            && self.carrier.as_deref().is_none_or(|c| o.carrier_code == c)
            && self.source.as_deref().is_none_or(|s| o.source == s)
    }
}

/// A new order built from a validated one, created now.
fn new_order(merchant: MerchantId, source: &str, v: ValidOrder, now: Timestamp) -> Order {
    Order {
        id: OrderId::new_at(now.ms()),
        merchant_id: merchant,
        external_id: v.external_id,
        source: source.to_string(),
        status: OrderStatus::Created,
        customer: v.customer,
        items: v.items,
        amount: v.amount,
        carrier_code: v.carrier_code,
        ipay_flag: v.ipay_flag,
        created: now,
        updated: now,
    }
}

/// Reads a listing's page size: 1 to 100, default 20.
fn list_limit(limit: Option<usize>) -> EngineResult<usize> {
    let limit = limit.unwrap_or(20);
    if limit == 0 || limit > 100 {
        return Err(EngineError::invalid(
            "parameter_invalid",
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    Ok(limit)
}

/// Reads a listing's cursor: the last order id of the previous page.
fn list_cursor(cursor: Option<&str>) -> EngineResult<Option<OrderId>> {
    cursor
        .map(|c| {
            OrderId::parse(c).map_err(|_| {
                EngineError::invalid(
                    "parameter_invalid",
                    "cursor",
                    "cursor must be the next_cursor of a previous page",
                )
            })
        })
        .transpose()
}

/// The exclusive upper bound on listed ids: the cursor or `created_before`, whichever is lower.
fn upper_id(cursor: Option<OrderId>, before: Option<i64>) -> Option<String> {
    let mut upper: Option<String> = before.map(|ms| OrderId::min_at(ms).to_string());
    if let Some(c) = cursor {
        let c = c.to_string();
        upper = Some(match upper {
            Some(u) if u < c => u,
            _ => c,
        });
    }
    upper
}

fn time_param(name: &str, v: Option<&str>) -> EngineResult<Option<i64>> {
    v.map(|s| {
        Timestamp::parse_flexible(s).map(|t| t.ms()).ok_or_else(|| {
            EngineError::invalid(
                "parameter_invalid",
                name.to_string(),
                format!("{name} must be an RFC 3339 time or YYYY-MM-DD"),
            )
        })
    })
    .transpose()
}

impl LastMile {
    /// Validates and stores one order (`POST /api/orders`).
    pub async fn create_order(
        &self,
        merchant: MerchantId,
        input: OrderInput,
        source: &str,
    ) -> EngineResult<Order> {
        let valid = validate(input)?;
        let ext = valid.external_id.clone();
        let out = self
            .insert_orders(merchant, source, "manual", vec![valid], &|_| vec![])
            .await?;
        match out.into_iter().next() {
            Some(Inserted::Created(o)) => Ok(*o),
            Some(Inserted::Duplicate { existing }) => Err(EngineError::Conflict {
                code: "order_duplicate",
                message: format!(
                    "an order with external_id `{}` exists{}",
                    ext.unwrap_or_default(),
                    existing.map(|e| format!(" ({e})")).unwrap_or_default()
                ),
            }),
            None => Err(EngineError::Internal("no insert outcome".into())),
        }
    }

    /// A merchant's order; another merchant's order is "not found".
    pub async fn get_order(&self, merchant: MerchantId, order_id: &str) -> EngineResult<Order> {
        let nf = || EngineError::not_found("order", order_id);
        let id = OrderId::parse(order_id).map_err(|_| nf())?;
        let raw = self
            .engine
            .ledger()
            .get_record(ORDER, &id.to_string())
            .await?
            .ok_or_else(nf)?;
        let order: Order =
            serde_json::from_slice(&raw).map_err(|e| EngineError::Internal(e.to_string()))?;
        if order.merchant_id != merchant {
            return Err(nf());
        }
        Ok(order)
    }

    /// Finds the order a merchant stored under an external id in `namespace` (`manual` for
    /// API and uploads, the provider name for shop webhooks).
    pub async fn find_order_by_external_id(
        &self,
        merchant: MerchantId,
        namespace: &str,
        external_id: &str,
    ) -> EngineResult<Option<OrderId>> {
        let raw = self
            .engine
            .ledger()
            .get_record(ORDER_EXT, &ext_key(merchant, namespace, external_id))
            .await?;
        Ok(raw.and_then(|r| OrderId::parse(&String::from_utf8_lossy(&r)).ok()))
    }

    /// Stores validated orders in one batch with their `order.created` events (each with its
    /// stream-index entry; published to live streams after the commit), skipping those whose
    /// external id (in `namespace`) exists. The ops `extra` returns join the same batch; it is
    /// given the id of the first order (created, or the existing duplicate).
    ///
    /// The external ids are reserved in HotState from the duplicate check until the commit, so
    /// two requests on any nodes cannot both store the same id.
    pub(crate) async fn insert_orders(
        &self,
        merchant: MerchantId,
        source: &str,
        namespace: &str,
        orders: Vec<ValidOrder>,
        extra: &(dyn Fn(Option<OrderId>) -> Vec<WriteOp> + Sync),
    ) -> EngineResult<Vec<Inserted>> {
        let scopes: BTreeSet<String> = orders
            .iter()
            .filter_map(|v| v.external_id.as_deref())
            .map(|ext| ext_scope(merchant, namespace, ext))
            .collect();
        let keys = self.reserve_unique(scopes.into_iter().collect()).await?;
        let out = self
            .insert_orders_reserved(merchant, source, namespace, orders, extra)
            .await;
        keys.release(self).await;
        let (out, events) = out?;
        crate::stream::publish(self.engine.hot().as_ref(), &events).await;
        Ok(out)
    }

    async fn insert_orders_reserved(
        &self,
        merchant: MerchantId,
        source: &str,
        namespace: &str,
        orders: Vec<ValidOrder>,
        extra: &(dyn Fn(Option<OrderId>) -> Vec<WriteOp> + Sync),
    ) -> EngineResult<(Vec<Inserted>, Vec<Event>)> {
        let now = self.engine.clock().now();
        let mut batch = WriteBatch {
            ops: Vec::with_capacity(orders.len() * 6 + 4),
        };
        let livemode = self.merchant_livemode(merchant).await?;
        let mut seen = HashSet::new();
        let mut days = BTreeSet::new();
        let mut out = Vec::with_capacity(orders.len());
        let mut events = Vec::with_capacity(orders.len());
        for v in orders {
            let ext = v.external_id.as_deref();
            if let Some(dup) = self
                .duplicate_of(merchant, namespace, ext, &mut seen)
                .await?
            {
                out.push(dup);
                continue;
            }
            let order = new_order(merchant, source, v, now);
            let event = self.push_created(&mut batch, namespace, &order, now, livemode)?;
            days.insert(day(now.ms()));
            events.push(event);
            out.push(Inserted::Created(Box::new(order)));
        }
        for d in days {
            batch.push(WriteOp::PutEntry {
                index: ORDER_DAYS,
                partition: merchant.to_string(),
                sort: d,
                value: vec![],
            });
        }
        let first = out.first().and_then(|o| match o {
            Inserted::Created(o) => Some(o.id),
            Inserted::Duplicate { existing } => *existing,
        });
        batch.ops.extend(extra(first));
        if !batch.ops.is_empty() {
            self.engine.ledger().submit(batch).await?;
        }
        Ok((out, events))
    }

    /// Whether an order with external id `ext` is a duplicate: earlier in the same call
    /// (`seen`) or already stored in `namespace`.
    async fn duplicate_of(
        &self,
        merchant: MerchantId,
        namespace: &str,
        ext: Option<&str>,
        seen: &mut HashSet<String>,
    ) -> EngineResult<Option<Inserted>> {
        let Some(ext) = ext else {
            return Ok(None);
        };
        if !seen.insert(ext.to_string()) {
            return Ok(Some(Inserted::Duplicate { existing: None }));
        }
        let existing = self
            .find_order_by_external_id(merchant, namespace, ext)
            .await?;
        Ok(existing.map(|existing| Inserted::Duplicate {
            existing: Some(existing),
        }))
    }

    /// Adds a new order's writes to `batch`: the order, its external-id record, and its
    /// `order.created` event with the event's stream-index entry; returns the event.
    fn push_created(
        &self,
        batch: &mut WriteBatch,
        namespace: &str,
        order: &Order,
        now: Timestamp,
        livemode: bool,
    ) -> EngineResult<Event> {
        let merchant = order.merchant_id;
        batch.ops.extend(order_write_ops(order)?);
        if let Some(ext) = order.external_id.as_deref() {
            batch.push(WriteOp::PutRecord {
                kind: ORDER_EXT,
                key: ext_key(merchant, namespace, ext),
                value: order.id.to_string().into_bytes(),
            });
        }
        let event = Event::new(
            merchant,
            livemode,
            "order.created",
            now,
            order.id.to_string(),
            order,
        );
        batch.push(crate::stream::index_op(&event));
        batch.push(WriteOp::PutEvent(event.clone()));
        Ok(event)
    }

    /// A merchant's orders, newest first, filtered; keyset-paginated. A page may hold fewer
    /// than `limit` orders while `has_more` is true when the scan budget ran out (filters that
    /// match rarely); follow `next_cursor`.
    pub async fn list_orders(
        &self,
        merchant: MerchantId,
        p: &OrderListParams,
    ) -> EngineResult<OrderPage> {
        let limit = list_limit(p.limit)?;
        let cursor = list_cursor(p.cursor.as_deref())?;
        let filter = Filter::of(p)?;
        let after = time_param("created_after", p.created_after.as_deref())?;
        let before = time_param("created_before", p.created_before.as_deref())?;
        let upper = upper_id(cursor, before);
        let lower: Option<String> = after.map(|ms| OrderId::min_at(ms).to_string());
        let last_day = upper
            .as_deref()
            .and_then(|s| OrderId::parse(s).ok())
            .map(|id| day(id.timestamp_ms()));
        let owner = merchant.to_string();
        let page = daily::newest_first(
            self.engine.ledger().as_ref(),
            daily::DailyScan {
                days_index: ORDER_DAYS,
                items_index: ORDERS_BY_DAY,
                owner: &owner,
                lower,
                upper,
                first_day: after.map(day),
                last_day,
                limit,
                budget: self.cfg.list_scan_budget,
            },
            |value| {
                let o: Order = serde_json::from_slice(value)
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                Ok(filter.matches(&o).then_some(o))
            },
            |o| o.id.to_string(),
        )
        .await?;
        Ok(OrderPage {
            data: page.data,
            pagination: CursorPagination {
                limit,
                next_cursor: page.next_cursor,
                has_more: page.has_more,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(line1: &str, value: i64) -> OrderInput {
        serde_json::from_value(serde_json::json!({
            "external_id": "S-1",
            "customer": {"name": "Anna", "address": {"line1": line1, "city": "Utrecht",
                "postal_code": "3511 AA", "country": "NL"}},
            "items": [{"sku": "A", "name": "A", "qty": 1, "unit_price": value}],
            "amount": {"value": value, "currency": "EUR"},
            "carrier_code": "DHL"
        }))
        .unwrap()
    }

    fn stored(status: OrderStatus) -> Order {
        let v = validate(input("Oudegracht 1", 1_000)).unwrap();
        Order {
            id: OrderId::new_at(0),
            merchant_id: MerchantId::new_at(0),
            external_id: v.external_id,
            source: "shopify".into(),
            status,
            customer: v.customer,
            items: v.items,
            amount: v.amount,
            carrier_code: v.carrier_code,
            ipay_flag: v.ipay_flag,
            created: Timestamp(0),
            updated: Timestamp(0),
        }
    }

    #[test]
    fn shop_updates_change_amounts_only_before_a_session_and_never_a_paid_status() {
        let upd = || validate(input("Neude 2", 2_000)).unwrap();
        let mut o = stored(OrderStatus::Created);
        let r = apply_shop_update(&mut o, upd(), true, UpdateStage::NoSession);
        assert_eq!(r.changed, ["customer", "items", "amount", "status"]);
        assert!(r.kept.is_empty());
        assert_eq!((o.amount.value, o.status), (2_000, OrderStatus::Cancelled));

        let mut o = stored(OrderStatus::SessionCreated);
        let r = apply_shop_update(&mut o, upd(), false, UpdateStage::SessionUnpaid);
        assert_eq!(r.changed, ["customer", "items"]);
        assert_eq!(r.kept, ["amount"]);
        assert_eq!(o.amount.value, 1_000);

        let mut o = stored(OrderStatus::Paid);
        let r = apply_shop_update(&mut o, upd(), true, UpdateStage::Paid);
        assert_eq!(r.kept, ["amount", "status"]);
        assert_eq!((o.amount.value, o.status), (1_000, OrderStatus::Paid));
        assert_eq!(o.customer.address.line1, "Neude 2");

        let mut o = stored(OrderStatus::Created);
        let same = validate(input("Oudegracht 1", 1_000)).unwrap();
        let r = apply_shop_update(&mut o, same, false, UpdateStage::NoSession);
        assert_eq!(
            r,
            UpdateResult::default(),
            "an identical update changes nothing"
        );
    }
}
