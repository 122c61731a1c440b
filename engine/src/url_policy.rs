//! Which URLs the engine accepts from merchants and calls: the one place that says what schemes
//! and hosts are allowed, and whether plain-http loopback URLs are (tests and local development).
//!
//! A [`UrlPolicy`] is a plain value built at start-up from configuration and handed to whoever
//! validates or calls URLs (manifest validation, webhook endpoints, the webhook dispatcher). It
//! does not fetch anything and holds no state; it is not about inbound request routing.

use crate::error::{EngineError, EngineResult};

/// Longest URL accepted anywhere a merchant gives one, characters.
pub const MAX_URL_LEN: usize = 2_048;

/// Hosts that count as loopback for [`UrlPolicy::allow_insecure_loopback`] (as `url` spells
/// them: IPv6 hosts keep their brackets).
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// What URLs webhooks may be sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Accept `http://127.0.0.1`, `http://localhost` and `http://[::1]` as webhook URLs. Off by
    /// default: webhooks are only ever sent over https.
    pub allow_insecure_loopback: bool,
}

impl UrlPolicy {
    /// The default policy: https only.
    pub fn https_only() -> UrlPolicy {
        UrlPolicy::default()
    }

    /// Whether webhooks may be sent to `url`: `https` with a host, or `http` to a loopback host
    /// when [`UrlPolicy::allow_insecure_loopback`] is on. The dispatcher asks before every send,
    /// so an endpoint stored under a laxer policy is never called under a stricter one.
    pub fn allows_webhook(&self, url: &str) -> bool {
        let Ok(u) = url::Url::parse(url) else {
            return false;
        };
        match u.scheme() {
            "https" => u.host_str().is_some(),
            "http" => {
                self.allow_insecure_loopback
                    && u.host_str().is_some_and(|h| LOOPBACK_HOSTS.contains(&h))
            }
            _ => false,
        }
    }

    /// Validates a webhook URL a merchant gave in `param` (a manifest's `endpoint`, an API
    /// endpoint's `url`): an absolute URL of bounded length that [`UrlPolicy::allows_webhook`].
    pub fn check_webhook_url(&self, url: &str, param: &'static str) -> EngineResult<()> {
        check_http_url(url, param)?;
        if self.allows_webhook(url) {
            return Ok(());
        }
        Err(EngineError::invalid(
            "parameter_invalid",
            param,
            format!("{param} must be an https URL (webhooks are never sent over plain http)"),
        ))
    }
}

/// Accepts absolute `http(s)` URLs with a host, of at most [`MAX_URL_LEN`] characters (URLs the
/// engine stores for others to call, such as a channel's `notify_url`).
pub fn check_http_url(url: &str, param: &'static str) -> EngineResult<()> {
    let bad = || {
        EngineError::invalid(
            "parameter_invalid",
            param,
            format!("{param} must be an absolute http(s) URL of at most {MAX_URL_LEN} characters"),
        )
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad());
    }
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_only_refuses_plain_http_even_to_loopback() {
        let p = UrlPolicy::https_only();
        assert!(p.allows_webhook("https://example.com/hook"));
        assert!(!p.allows_webhook("http://127.0.0.1:9000/hook"));
        assert!(!p.allows_webhook("ftp://example.com/x"));
        assert!(!p.allows_webhook("not a url"));
        let e = p
            .check_webhook_url("http://localhost/x", "endpoint")
            .unwrap_err();
        assert_eq!(e.param(), Some("endpoint"));
    }

    #[test]
    fn insecure_loopback_allows_plain_http_to_loopback_hosts_only() {
        let p = UrlPolicy {
            allow_insecure_loopback: true,
        };
        for ok in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]:8080/",
            "https://example.com/",
        ] {
            assert!(p.allows_webhook(ok), "{ok}");
            assert!(p.check_webhook_url(ok, "url").is_ok(), "{ok}");
        }
        assert!(!p.allows_webhook("http://example.com/hook"));
        assert!(!p.allows_webhook("http://10.0.0.1/hook"));
    }

    #[test]
    fn overlong_or_relative_urls_are_refused() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_http_url(&long, "u").is_err());
        assert!(check_http_url("/relative", "u").is_err());
        assert!(check_http_url("http://example.com/notify", "u").is_ok());
    }
}
