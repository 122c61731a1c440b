//! bol.com Retailer API v10: a token from the client-credentials grant (`POST /token`, HTTP
//! Basic `client_id:client_secret`), then `GET /retailer/orders` (list, one page of up to 50
//! order ids with their placing time) and `GET /retailer/orders/{orderId}` (the order with its
//! shipment address) with `Accept: application/vnd.retailer.v10+json`. bol.com is pull-only: it
//! sends no order webhooks. Amounts are EUR decimals.

use super::{
    Credentials, MarketClient, MarketError, MarketItem, MarketOrder, json_body, minor, opt_text,
    text, transport,
};
use base64::Engine as _;

/// The media type of Retailer API v10 requests and answers.
pub const MEDIA_TYPE: &str = "application/vnd.retailer.v10+json";
const NAME: &str = "bol.com";

/// The `Authorization` header of a token request.
pub fn basic_auth(client_id: &str, client_secret: &str) -> String {
    let raw = format!("{client_id}:{client_secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// An access token for these client credentials (401/400 from bol.com: refused).
pub async fn token(c: &MarketClient, creds: &Credentials) -> Result<String, MarketError> {
    let url = format!("{}?grant_type=client_credentials", c.urls().bol_token_url);
    let auth = basic_auth(&creds.key, creds.secret.expose());
    let r = c
        .http()
        .post(
            NAME,
            &url,
            &[("Authorization", &auth), ("Accept", "application/json")],
            Vec::new(),
        )
        .await
        .map_err(|e| transport(NAME, e))?;
    if matches!(r.status, 400 | 401 | 403) {
        return Err(MarketError::Refused(
            "bol.com refused the client id or client secret (token request answered \
             HTTP 401); create client credentials under Settings > API settings"
                .into(),
        ));
    }
    let v = json_body(NAME, &r)?;
    let token = text(&v, "/access_token");
    if r.status != 200 || token.is_empty() {
        return Err(MarketError::Unavailable(format!(
            "bol.com token endpoint answered HTTP {} without an access_token",
            r.status
        )));
    }
    Ok(token)
}

async fn get(c: &MarketClient, token: &str, path: &str) -> Result<serde_json::Value, MarketError> {
    let url = format!("{}{path}", c.urls().bol_api_url);
    let auth = format!("Bearer {token}");
    let r = c
        .http()
        .get(
            NAME,
            &url,
            &[("Authorization", &auth), ("Accept", MEDIA_TYPE)],
        )
        .await
        .map_err(|e| transport(NAME, e))?;
    if matches!(r.status, 401 | 403) {
        return Err(MarketError::Refused(format!(
            "bol.com refused the access token (HTTP {})",
            r.status
        )));
    }
    let v = json_body(NAME, &r)?;
    if r.status != 200 {
        return Err(MarketError::Unavailable(format!(
            "bol.com answered HTTP {} to {path}",
            r.status
        )));
    }
    Ok(v)
}

/// Orders placed at or after `since_ms`, oldest first, at most `limit`: the list pages are
/// read first (they carry the placing time), then each new order's details.
pub async fn recent_orders(
    c: &MarketClient,
    creds: &Credentials,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<MarketOrder>, MarketError> {
    let token = token(c, creds).await?;
    let mut wanted: Vec<(i64, String)> = Vec::new();
    for page in 1..=super::MAX_PAGES {
        let v = get(
            c,
            &token,
            &format!("/retailer/orders?fulfilment-method=FBR&status=ALL&page={page}"),
        )
        .await?;
        let list = v["orders"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            break;
        }
        for o in &list {
            let at = placed_ms(&text(o, "/orderPlacedDateTime"));
            let id = text(o, "/orderId");
            if at >= since_ms && !id.is_empty() {
                wanted.push((at, id));
            }
        }
    }
    wanted.sort();
    wanted.truncate(limit);
    let mut out = Vec::with_capacity(wanted.len());
    for (_, id) in wanted {
        let v = get(c, &token, &format!("/retailer/orders/{id}")).await?;
        out.push(map_order(&v));
    }
    Ok(out)
}

/// `orderPlacedDateTime` (ISO 8601 with offset) in ms; 0 when unreadable.
fn placed_ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .unwrap_or(0)
}

/// A Retailer API v10 order (detail form) as a [`MarketOrder`].
pub fn map_order(v: &serde_json::Value) -> MarketOrder {
    let s = |p: &str| text(v, &format!("/shipmentDetails/{p}"));
    let street = [s("streetName"), s("houseNumber"), s("houseNumberExtension")]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let items: Vec<MarketItem> = v["orderItems"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|i| MarketItem {
            sku: text(i, "/product/ean"),
            name: text(i, "/product/title"),
            qty: i["quantity"].as_u64().unwrap_or(0).min(u32::MAX as u64) as u32,
            unit_price: minor(i, "/unitPrice", "EUR"),
        })
        .collect();
    let amount = items
        .iter()
        .map(|i| i.unit_price.saturating_mul(i64::from(i.qty)))
        .fold(0i64, i64::saturating_add);
    MarketOrder {
        id: text(v, "/orderId"),
        placed_at_ms: placed_ms(&text(v, "/orderPlacedDateTime")),
        name: format!("{} {}", s("firstName"), s("surname"))
            .trim()
            .to_string(),
        email: opt_text(v, "/shipmentDetails/email"),
        phone: opt_text(v, "/shipmentDetails/deliveryPhoneNumber"),
        line1: street,
        line2: opt_text(v, "/shipmentDetails/extraAddressInformation"),
        city: s("city"),
        postal_code: s("zipCode"),
        country: s("countryCode"),
        items,
        amount,
        currency: "EUR".into(),
        carrier: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc7617() {
        // RFC 7617 section 2's example credentials.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn a_v10_order_maps_with_its_address_and_amount() {
        let v = serde_json::json!({
            "orderId": "A2K8290LP8",
            "orderPlacedDateTime": "2026-12-01T10:00:00+01:00",
            "shipmentDetails": {"firstName": "Anna", "surname": "de Vries", "streetName": "Kerkstraat",
                "houseNumber": "12", "houseNumberExtension": "B", "zipCode": "1017 GC",
                "city": "Amsterdam", "countryCode": "NL", "email": "anna@example.nl"},
            "orderItems": [{"orderItemId": "1", "quantity": 2, "unitPrice": 12.49,
                "product": {"ean": "8712345678906", "title": "Mok"}}]
        });
        let o = map_order(&v);
        assert_eq!(o.id, "A2K8290LP8");
        assert_eq!(o.placed_at_ms, 1_796_115_600_000);
        assert_eq!(o.line1, "Kerkstraat 12 B");
        assert_eq!(o.amount, 2_498);
        assert_eq!(o.items[0].unit_price, 1_249);
    }
}
