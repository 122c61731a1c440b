//! The load-test target: parsing of `--target` URLs and the rule that this
//! tool only ever talks to the local machine (loopback addresses).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hyper::Uri;
use hyper::header::HeaderValue;

use crate::error::{Error, Result};

/// A validated loopback HTTP target.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    host_header: HeaderValue,
    base_path: String,
}

impl Target {
    /// Parses `http://HOST[:PORT][/BASE]` and refuses anything that is not a
    /// loopback address (`127.0.0.0/8`, `::1` or `localhost`).
    ///
    /// `localhost` is mapped to `127.0.0.1` without a DNS lookup, so a
    /// tampered resolver cannot send the load elsewhere.
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::new(format!("invalid target URL `{url}`: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(Error::new(format!(
                    "target `{url}`: only http:// is supported, not {other}://"
                )));
            }
            None => {
                return Err(Error::new(format!(
                    "target `{url}` must be an absolute http:// URL"
                )));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::new(format!("target `{url}` has no host")))?;
        if authority.as_str().contains('@') {
            return Err(Error::new(format!(
                "target `{url}`: credentials in the URL are not supported"
            )));
        }
        if uri.query().is_some() {
            return Err(Error::new(format!(
                "target `{url}` must not have a query string"
            )));
        }
        let host = authority.host();
        let ip = loopback_ip(host).ok_or_else(|| {
            Error::new(format!(
                "target `{url}` is not a loopback address; this tool only load-tests \
                 127.0.0.0/8, [::1] or localhost"
            ))
        })?;
        let port = uri.port_u16().unwrap_or(80);
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|e| Error::new(format!("target `{url}`: invalid host: {e}")))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            url: url.to_string(),
            addr: SocketAddr::new(ip, port),
            host_header,
            base_path,
        })
    }

    /// The URL as given on the command line.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The socket address connections are opened to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value sent in the `Host` header of every request.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// Joins the target's base path (if any) with `path`, which must start
    /// with `/`.
    pub fn join(&self, path: &str) -> Result<Uri> {
        if !path.starts_with('/') {
            return Err(Error::new(format!("path `{path}` must start with `/`")));
        }
        let full = format!("{}{}", self.base_path, path);
        full.parse()
            .map_err(|e| Error::new(format!("invalid request path `{full}`: {e}")))
    }
}

/// Returns the loopback IP for `host` (as found in a URL authority, IPv6 in
/// brackets), or `None` when the host is not loopback.
pub fn loopback_ip(host: &str) -> Option<IpAddr> {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = bare.parse().ok()?;
    let ip = ip.to_canonical();
    ip.is_loopback().then_some(ip)
}

/// Returns an error unless `addr` is a loopback socket address.
pub fn require_loopback(addr: SocketAddr) -> Result<()> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{addr} is not a loopback address; only 127.0.0.0/8 or [::1] are allowed"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_targets() {
        let t = Target::parse("http://127.0.0.1:8080").expect("127.0.0.1");
        assert_eq!(t.addr(), "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.host_header(), "127.0.0.1:8080");

        let t = Target::parse("http://localhost:9000/").expect("localhost");
        assert_eq!(t.addr(), "127.0.0.1:9000".parse().expect("addr"));

        let t = Target::parse("http://[::1]:7000").expect("[::1]");
        assert_eq!(t.addr(), "[::1]:7000".parse().expect("addr"));

        let t = Target::parse("http://127.8.9.10").expect("127/8");
        assert_eq!(t.addr().port(), 80);

        let t = Target::parse("http://127.0.0.1:1/base/").expect("base path");
        assert_eq!(
            t.join("/v1/payment-intents").expect("join"),
            "/base/v1/payment-intents"
        );
    }

    #[test]
    fn refuses_other_targets() {
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "http://example.com:80",
            "http://192.168.1.1",
            "http://0.0.0.0:80",
            "http://[::]:80",
            "http://[2001:db8::1]:80",
            "http://localhost.example.com",
            "http://user@127.0.0.1:80",
            "https://127.0.0.1:443",
            "127.0.0.1:8080",
            "http://127.0.0.1:80/?a=b",
            "not a url",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "`{bad}` should be refused");
        }
    }

    #[test]
    fn listen_addresses_must_be_loopback() {
        assert!(require_loopback("127.0.0.1:0".parse().expect("addr")).is_ok());
        assert!(require_loopback("[::1]:0".parse().expect("addr")).is_ok());
        assert!(require_loopback("0.0.0.0:0".parse().expect("addr")).is_err());
        assert!(require_loopback("10.0.0.1:80".parse().expect("addr")).is_err());
    }
}
