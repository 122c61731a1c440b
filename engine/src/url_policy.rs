//! Which URLs the engine accepts from merchants and calls, and which addresses it connects to:
//! the one outbound-request policy for URLs a merchant or platform supplied (webhook endpoints,
//! manifest `endpoint`s).
//!
//! A [`UrlPolicy`] is a plain value built at start-up from configuration and handed to whoever
//! validates or calls URLs (manifest validation, webhook endpoints, the webhook dispatcher). It
//! refuses, at creation, URLs with credentials and hosts that are (or spell) internal addresses:
//! loopback, private, link-local, carrier-grade NAT, unique-local, multicast, unspecified,
//! broadcast and reserved ranges, IPv6 forms embedding those, `localhost` names and cloud
//! metadata names. At delivery, [`GuardedResolver`] applies the same rule to every address a
//! name resolves to, so a name that later points inside (DNS rebinding) is refused before any
//! connection is made. An operator allow-list ([`AllowList`]) names hosts and networks that are
//! private on purpose. It does not fetch anything itself and is not about inbound routing.

use crate::error::{EngineError, EngineResult};
use futures::future::BoxFuture;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Longest URL accepted anywhere a merchant gives one, characters.
pub const MAX_URL_LEN: usize = 2_048;

/// Hosts that count as loopback for [`UrlPolicy::allow_insecure_loopback`] (as `url` spells
/// them: IPv6 hosts keep their brackets).
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// Host names of cloud instance-metadata services (they answer with credentials), refused
/// whatever they resolve to.
const METADATA_NAMES: [&str; 7] = [
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
    "metadata.tencentyun.com",
];

/// Hosts and networks an operator lets webhooks reach although they are private
/// (`[webhooks] allowed_private_hosts`): IP addresses, CIDR networks, or host names (matched
/// exactly, case-insensitively, without a trailing dot). Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Arc<[IpNet]>,
    names: Arc<[String]>,
}

impl AllowList {
    /// Parses the configured entries. An entry that is neither an address, a network nor a
    /// plausible host name is an error naming it, so a typo does not silently allow nothing.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        let mut names = Vec::new();
        for raw in entries {
            let e = raw.trim();
            if let Ok(net) = e.parse::<IpNet>() {
                nets.push(net);
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else if !e.is_empty()
                && !e.contains('/')
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                names.push(normalize_name(e));
            } else {
                return Err(format!(
                    "webhooks.allowed_private_hosts: {raw:?} is not an IP address, a CIDR network or a host name"
                ));
            }
        }
        Ok(AllowList {
            nets: nets.into(),
            names: names.into(),
        })
    }

    fn allows_name(&self, name: &str) -> bool {
        let n = normalize_name(name);
        self.names.contains(&n)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// What URLs webhooks may be sent to, and which addresses they may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Accept `http://127.0.0.1`, `http://localhost` and `http://[::1]` (and those hosts over
    /// https) as webhook URLs. Off by default: webhooks are only ever sent over https, and never
    /// to loopback.
    pub allow_insecure_loopback: bool,
    /// Hosts and networks that may be private on purpose.
    pub allowed_private_hosts: AllowList,
}

/// Why a URL or address is refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not an absolute `https` URL (or `http` to loopback when that is allowed).
    Scheme,
    /// The URL carries a user name or password.
    Credentials,
    /// The host (or an address it resolves to) is internal; the text says which kind.
    Host(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Scheme => f.write_str("not an https URL"),
            Refusal::Credentials => f.write_str("the URL carries credentials"),
            Refusal::Host(why) => f.write_str(why),
        }
    }
}

impl UrlPolicy {
    /// The default policy: https only, public hosts only.
    pub fn https_only() -> UrlPolicy {
        UrlPolicy::default()
    }

    /// Whether webhooks may be sent to `url` (see [`UrlPolicy::check_url`]). The dispatcher asks
    /// before every send, so an endpoint stored under a laxer policy is never called under a
    /// stricter one.
    pub fn allows_webhook(&self, url: &str) -> bool {
        self.check_url(url).is_ok()
    }

    /// Checks `url` without resolving it: `https` with a host (or `http` to a loopback host when
    /// [`UrlPolicy::allow_insecure_loopback`] is on), no credentials, and a host that is neither
    /// an internal address in any spelling the URL parser accepts (`2852039166`, `0xa9fea9fe`,
    /// `0251.0376.0251.0376`, `10.1`, `[::ffff:a9fe:a9fe]` are all IPv4 literals to it) nor a
    /// `localhost` or metadata name, unless the operator allow-list names it.
    pub fn check_url(&self, url: &str) -> Result<(), Refusal> {
        let u = url::Url::parse(url).map_err(|_| Refusal::Scheme)?;
        let Some(host_str) = u.host_str() else {
            return Err(Refusal::Scheme);
        };
        let loopback_host = LOOPBACK_HOSTS.contains(&host_str);
        match u.scheme() {
            "https" => {}
            "http" if self.allow_insecure_loopback && loopback_host => {}
            _ => return Err(Refusal::Scheme),
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(Refusal::Credentials);
        }
        if self.allow_insecure_loopback && loopback_host {
            return Ok(());
        }
        match u.host() {
            Some(url::Host::Domain(name)) => self.check_name(name),
            Some(url::Host::Ipv4(ip)) => self.check_address("", IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_address("", IpAddr::V6(ip)),
            None => Err(Refusal::Scheme),
        }
    }

    /// Refuses `localhost`, names under `.localhost` and metadata names (unless allow-listed).
    fn check_name(&self, name: &str) -> Result<(), Refusal> {
        if self.allowed_private_hosts.allows_name(name) {
            return Ok(());
        }
        let n = normalize_name(name);
        if n == "localhost" && self.allow_insecure_loopback {
            return Ok(());
        }
        if n == "localhost" || n.ends_with(".localhost") {
            return Err(Refusal::Host(format!("{n} is a loopback name")));
        }
        if METADATA_NAMES.contains(&n.as_str()) {
            return Err(Refusal::Host(format!("{n} is a cloud metadata service")));
        }
        Ok(())
    }

    /// Whether a connection to `ip`, reached through the name `host` (empty for an address
    /// literal), is allowed: public addresses always; internal ones only when the operator
    /// allow-list names the host or the address, or for loopback through `localhost` or a
    /// loopback literal when [`UrlPolicy::allow_insecure_loopback`] is on.
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let Some(kind) = internal_kind(ip) else {
            return Ok(());
        };
        if self.allowed_private_hosts.allows_ip(ip)
            || (!host.is_empty() && self.allowed_private_hosts.allows_name(host))
        {
            return Ok(());
        }
        let loopback_ok = self.allow_insecure_loopback
            && (host.is_empty() || normalize_name(host) == "localhost");
        // Only the plain loopback forms: dev mode is not a reason to accept `[::127.0.0.1]`.
        let plain_loopback = match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => v6.is_loopback(),
        };
        if plain_loopback && loopback_ok {
            return Ok(());
        }
        let ip = canonical(ip);
        Err(Refusal::Host(if host.is_empty() {
            format!("{ip} is a {kind} address")
        } else {
            format!("{host} resolves to {ip}, a {kind} address")
        }))
    }

    /// Validates a webhook URL a merchant gave in `param` (a manifest's `endpoint`, an API
    /// endpoint's `url`): an absolute URL of bounded length that [`UrlPolicy::check_url`]
    /// accepts. A wrong scheme is `parameter_invalid`; credentials or an internal host are
    /// `url_not_allowed`.
    pub fn check_webhook_url(&self, url: &str, param: &'static str) -> EngineResult<()> {
        check_http_url(url, param)?;
        match self.check_url(url) {
            Ok(()) => Ok(()),
            Err(Refusal::Scheme) => Err(EngineError::invalid(
                "parameter_invalid",
                param,
                format!("{param} must be an https URL (webhooks are never sent over plain http)"),
            )),
            Err(why) => Err(EngineError::invalid(
                "url_not_allowed",
                param,
                format!(
                    "{param} is not allowed: {why}. Webhooks go to public hosts only, without \
                     credentials in the URL; an operator can allow a private host with \
                     [webhooks] allowed_private_hosts"
                ),
            )),
        }
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

/// Lower case, without a trailing dot (`Localhost.` is `localhost`).
fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (so allow-list networks match both).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of internal address `ip` is, or `None` for a public one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, b, _) if b & 0xf0 == 16 => "private",
        (169, 254, _) => "link-local",
        (100, b, _) if b & 0xc0 == 64 => "carrier-grade NAT",
        (224..=239, _, _) => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        // IETF protocol assignments, documentation, benchmarking, and the old class E.
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (240..=255, _, _) => {
            "reserved"
        }
        (198, 18 | 19, _) => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    Some(match s[0] {
        // IPv4-compatible (deprecated): refused whatever it embeds.
        0 if s[1..6] == [0; 5] => v4_kind(embedded(s[6], s[7])).unwrap_or("reserved"),
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
        0x64 if s[1] == 0xff9b && s[2..6] == [0; 4] => v4_kind(embedded(s[6], s[7]))?,
        0x2002 => v4_kind(embedded(s[1], s[2]))?,
        0x2001 if s[1] == 0x0db8 => "reserved",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        // Site-local (fec0::/10, deprecated) is private addressing.
        x if x & 0xffc0 == 0xfec0 => "private",
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// The error a [`GuardedResolver`] fails with when no address of a name is allowed. The
/// dispatcher finds it in a send error's source chain and drops the delivery with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRefused(pub String);

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address not allowed: {}", self.0)
    }
}

impl std::error::Error for AddressRefused {}

/// The [`AddressRefused`] somewhere in `e`'s source chain, if any.
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a AddressRefused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<AddressRefused>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// Turns a host name into addresses (the port is filled in by the caller).
pub trait Lookup: Send + Sync + 'static {
    /// The addresses `host` resolves to.
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// A fixed name → addresses table (tests, and pinning names without DNS); unknown names fail.
#[derive(Debug, Clone, Default)]
pub struct StaticLookup(pub HashMap<String, Vec<IpAddr>>);

impl Lookup for StaticLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found = self.0.get(&normalize_name(&host)).cloned();
        Box::pin(async move {
            found.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host}: unknown name"),
                )
            })
        })
    }
}

/// A DNS resolver for the outbound HTTP client that keeps only the addresses the policy allows
/// and fails with [`AddressRefused`] when none is left. Because the client connects only to
/// what this returns, the check is on the address actually connected to: a name that resolved
/// to a public address at creation and to an internal one now is refused now.
pub struct GuardedResolver {
    policy: UrlPolicy,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    /// A resolver filtering `lookup`'s answers through `policy`.
    pub fn new(policy: UrlPolicy, lookup: Arc<dyn Lookup>) -> GuardedResolver {
        GuardedResolver { policy, lookup }
    }

    /// The allowed addresses of `host` (port 0), or why there are none.
    pub async fn resolve_allowed(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        if let Err(why) = self.policy.check_name(host) {
            return Err(Box::new(AddressRefused(why.to_string())));
        }
        let addrs = self.lookup.lookup(host.to_string()).await?;
        let mut first_refusal = None;
        let mut allowed = Vec::with_capacity(addrs.len());
        for ip in addrs {
            match self.policy.check_address(host, ip) {
                Ok(()) => allowed.push(SocketAddr::new(ip, 0)),
                Err(why) => {
                    tracing::warn!(host, %ip, reason = %why, "webhook address refused");
                    first_refusal.get_or_insert(why);
                }
            }
        }
        if allowed.is_empty() {
            let why = first_refusal.map_or_else(
                || format!("{host} resolves to no address"),
                |r| r.to_string(),
            );
            return Err(Box::new(AddressRefused(why)));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = GuardedResolver {
            policy: self.policy.clone(),
            lookup: self.lookup.clone(),
        };
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this.resolve_allowed(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_policy() -> UrlPolicy {
        UrlPolicy {
            allow_insecure_loopback: true,
            ..UrlPolicy::default()
        }
    }

    fn allow(entries: &[&str]) -> UrlPolicy {
        let e: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        UrlPolicy {
            allow_insecure_loopback: false,
            allowed_private_hosts: AllowList::parse(&e).unwrap(),
        }
    }

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
        let p = loopback_policy();
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
        assert!(!p.allows_webhook("https://10.0.0.1/hook"));
        assert!(!p.allows_webhook("https://a.localhost/hook"));
    }

    #[test]
    fn overlong_or_relative_urls_are_refused() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_http_url(&long, "u").is_err());
        assert!(check_http_url("/relative", "u").is_err());
        assert!(check_http_url("http://example.com/notify", "u").is_ok());
    }

    /// The list and the odd spellings the URL parser turns into addresses.
    const REFUSED: [&str; 27] = [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/",
        "https://[::1]/",
        "https://localhost/",
        "https://0.0.0.0/",
        "https://[::ffff:169.254.169.254]/",
        "https://2852039166/",
        "https://0xa9fea9fe/",
        "https://metadata.google.internal/",
        "https://0251.0376.0251.0376/",
        "https://10.1/",
        "https://127.1/",
        "https://172.16.5.4/",
        "https://192.168.1.1/",
        "https://100.64.0.1/",
        "https://[fe80::1]/",
        "https://[fd00::1]/",
        "https://224.0.0.1/",
        "https://[ff02::1]/",
        "https://[::]/",
        "https://255.255.255.255/",
        "https://[::127.0.0.1]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://a.b.localhost/",
        "https://METADATA.google.internal./",
        "https://user:pass@example.com/",
        "https://user@example.com/",
    ];

    #[test]
    fn internal_hosts_and_credentials_are_refused_with_url_not_allowed() {
        for p in [UrlPolicy::https_only(), loopback_policy()] {
            for url in REFUSED {
                // Loopback literals (`127.1` is 127.0.0.1) and `localhost` stay allowed in dev
                // mode.
                if p.allow_insecure_loopback
                    && ["https://[::1]/", "https://localhost/", "https://127.1/"].contains(&url)
                {
                    continue;
                }
                let Err(e) = p.check_webhook_url(url, "url") else {
                    panic!(
                        "{url} was accepted (loopback mode {})",
                        p.allow_insecure_loopback
                    );
                };
                assert_eq!(e.code(), "url_not_allowed", "{url}");
                assert_eq!(e.param(), Some("url"), "{url}");
            }
        }
    }

    #[test]
    fn public_hosts_pass() {
        let p = UrlPolicy::https_only();
        for url in [
            "https://example.com/hook",
            "https://93.184.216.34/",
            "https://[2606:4700::1111]/",
            "https://8.8.8.8:8443/x",
            "https://metadata.example.com/",
        ] {
            assert!(p.check_webhook_url(url, "url").is_ok(), "{url}");
        }
    }

    #[test]
    fn ipv4_classes_are_classified() {
        let k = |s: &str| internal_kind(s.parse().unwrap());
        assert_eq!(k("127.0.0.1"), Some("loopback"));
        assert_eq!(k("127.255.0.9"), Some("loopback"));
        assert_eq!(k("10.200.0.1"), Some("private"));
        assert_eq!(k("172.16.0.1"), Some("private"));
        assert_eq!(k("172.31.255.255"), Some("private"));
        assert_eq!(k("172.32.0.1"), None);
        assert_eq!(k("192.168.0.1"), Some("private"));
        assert_eq!(k("169.254.169.254"), Some("link-local"));
        assert_eq!(k("100.64.0.1"), Some("carrier-grade NAT"));
        assert_eq!(k("100.127.255.255"), Some("carrier-grade NAT"));
        assert_eq!(k("100.128.0.1"), None);
        assert_eq!(k("0.0.0.0"), Some("unspecified"));
        assert_eq!(k("239.1.1.1"), Some("multicast"));
        assert_eq!(k("255.255.255.255"), Some("broadcast"));
        assert_eq!(k("240.0.0.1"), Some("reserved"));
        assert_eq!(k("198.18.0.1"), Some("reserved"));
        assert_eq!(k("8.8.8.8"), None);
        assert_eq!(k("1.1.1.1"), None);
    }

    #[test]
    fn ipv6_classes_and_embedded_ipv4_are_classified() {
        let k = |s: &str| internal_kind(s.parse().unwrap());
        assert_eq!(k("::1"), Some("loopback"));
        assert_eq!(k("::"), Some("unspecified"));
        assert_eq!(k("fe80::1"), Some("link-local"));
        assert_eq!(k("febf::1"), Some("link-local"));
        assert_eq!(k("fc00::1"), Some("unique-local"));
        assert_eq!(k("fdff::1"), Some("unique-local"));
        assert_eq!(k("ff05::2"), Some("multicast"));
        assert_eq!(k("::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(k("::ffff:10.0.0.1"), Some("private"));
        assert_eq!(k("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(k("::ffff:8.8.8.8"), None);
        assert_eq!(k("::10.0.0.1"), Some("private"));
        assert_eq!(k("::8.8.8.8"), Some("reserved"));
        assert_eq!(k("64:ff9b::a9fe:a9fe"), Some("link-local"));
        assert_eq!(k("64:ff9b::808:808"), None);
        assert_eq!(k("2002:a00:1::"), Some("private"));
        assert_eq!(k("2001:db8::1"), Some("reserved"));
        assert_eq!(k("2606:4700::1111"), None);
    }

    #[test]
    fn the_allow_list_admits_named_hosts_and_networks_only() {
        let p = allow(&["10.20.0.0/16", "192.168.1.5", "hooks.corp.internal"]);
        assert!(p.check_webhook_url("https://10.20.3.4/", "url").is_ok());
        assert!(
            p.check_webhook_url("https://[::ffff:10.20.3.4]/", "url")
                .is_ok()
        );
        assert!(p.check_webhook_url("https://192.168.1.5/", "url").is_ok());
        assert!(
            p.check_webhook_url("https://HOOKS.corp.internal./", "url")
                .is_ok()
        );
        assert!(p.check_webhook_url("https://10.21.0.1/", "url").is_err());
        assert!(p.check_webhook_url("https://192.168.1.6/", "url").is_err());
        let ip = "10.9.9.9".parse().unwrap();
        assert!(p.check_address("hooks.corp.internal", ip).is_ok());
        assert!(p.check_address("other.example", ip).is_err());
        assert!(AllowList::parse(&["10.0.0.0/33".to_string()]).is_err());
        assert!(AllowList::parse(&["http://x".to_string()]).is_err());
    }

    fn table(entries: &[(&str, &str)]) -> Arc<dyn Lookup> {
        let mut m: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in entries {
            m.entry(name.to_string())
                .or_default()
                .push(ip.parse().unwrap());
        }
        Arc::new(StaticLookup(m))
    }

    #[tokio::test]
    async fn the_resolver_keeps_allowed_addresses_and_refuses_names_that_resolve_inside() {
        let lookup = table(&[
            ("public.example", "93.184.216.34"),
            ("rebind.example", "169.254.169.254"),
            ("mixed.example", "10.0.0.1"),
            ("mixed.example", "93.184.216.35"),
            ("localhost", "127.0.0.1"),
        ]);
        let r = GuardedResolver::new(UrlPolicy::https_only(), lookup.clone());
        assert_eq!(r.resolve_allowed("public.example").await.unwrap().len(), 1);
        let mixed = r.resolve_allowed("mixed.example").await.unwrap();
        assert_eq!(
            mixed,
            vec!["93.184.216.35:0".parse::<SocketAddr>().unwrap()]
        );
        let e = r.resolve_allowed("rebind.example").await.unwrap_err();
        let refused = e.downcast_ref::<AddressRefused>().unwrap();
        assert!(refused.0.contains("link-local"), "{refused}");
        assert!(r.resolve_allowed("localhost").await.is_err());
        assert!(r.resolve_allowed("metadata.google.internal").await.is_err());

        // Dev mode allows loopback through `localhost` only, not through any other name.
        let dev = GuardedResolver::new(
            loopback_policy(),
            table(&[("localhost", "127.0.0.1"), ("evil.example", "127.0.0.1")]),
        );
        assert!(dev.resolve_allowed("localhost").await.is_ok());
        assert!(dev.resolve_allowed("evil.example").await.is_err());
    }

    #[tokio::test]
    async fn a_client_with_the_resolver_never_connects_to_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(
                UrlPolicy::https_only(),
                table(&[("rebind.example", "127.0.0.1")]),
            )))
            .build()
            .unwrap();
        let err = client
            .post(format!("http://rebind.example:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        let refused = refusal_in(&err).expect("the refusal is in the error chain");
        assert!(refused.0.contains("loopback"), "{refused}");
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was made");
    }
}
