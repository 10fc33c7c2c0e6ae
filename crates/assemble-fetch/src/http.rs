//! Downloads over HTTP(S), or from a `file://` mirror, their progress told
//! to a reporter.
//!
//! The network as the rest of the ecosystem (pip, uv, curl) sees it:
//! - trust: the system's store, or what `SSL_CERT_FILE` / `SSL_CERT_DIR`
//!   name instead (as OpenSSL reads them; `rustls-native-certs`), and the
//!   bundled Mozilla roots only where the system has none;
//! - proxies: `https_proxy`/`HTTPS_PROXY` for https URLs, `http_proxy`/
//!   `HTTP_PROXY` for http ones, else `all_proxy`/`ALL_PROXY`, bypassed for
//!   the hosts `NO_PROXY` lists (ureq's proxy support).
//!
//! A failure says why in a [`Failure`], from which the error's hint comes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::Error;

/// Why a download failed: what the hint is chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this status.
    Status(u16),
    /// The host name did not resolve.
    Dns,
    /// No connection (refused, unreachable, timed out).
    Connect,
    /// The server's certificate is not trusted, or TLS failed.
    Tls,
    /// The proxy refused or failed.
    Proxy,
    /// A `file://` URL names nothing readable.
    NoFile,
    /// The body was cut short, too large, or unreadable.
    Body,
    /// The URL or the proxy setting is malformed.
    Invalid,
}

/// Downloads `url` into `dest` (a new file). At most `max_bytes` are
/// accepted. A failed download leaves `dest` behind only inside the
/// caller's temporary folder, never in the cache.
pub fn download(
    url: &str,
    dest: &Path,
    max_bytes: u64,
    reporter: &dyn assemble_cache::Reporter,
) -> Result<(), Error> {
    if let Some(rest) = url.strip_prefix("file://") {
        return copy_file(url, &file_url_path(rest), dest, max_bytes, reporter);
    }
    let err = |failure, why: String| Error::Http {
        url: url.to_string(),
        why,
        failure,
    };
    let proxy = proxy_for(url, &|name| std::env::var(name).ok())
        .map_err(|(failure, why)| err(failure, why))?;
    let mut response = agent(proxy.as_ref().map(|p| p.proxy.clone()))
        .get(url)
        .call()
        .map_err(|e| match (classify(&e), &proxy) {
            ((Failure::Connect | Failure::Dns, why), Some(p)) => err(
                Failure::Proxy,
                format!("{why} (through the proxy {} from {})", p.value, p.variable),
            ),
            ((failure, why), _) => err(failure, why),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(err(
            Failure::Status(status.as_u16()),
            format!("HTTP {status}"),
        ));
    }
    let total = response.body().content_length();
    reporter.download(url, total);
    let reader = response
        .body_mut()
        .with_config()
        .limit(max_bytes.saturating_add(1))
        .reader();
    let result = read_body(reader, dest, max_bytes, total, reporter);
    reporter.download_done();
    result.map_err(|e| match e {
        Error::Http { why, failure, .. } => err(failure, why),
        e => e,
    })
}

/// The path a `file://` URL names (`file:///srv/mirror/x` or
/// `file://localhost/srv/mirror/x`), `%XX` escapes decoded.
fn file_url_path(rest: &str) -> PathBuf {
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// A `file://` download: the file copied as a body would be.
fn copy_file(
    url: &str,
    from: &Path,
    dest: &Path,
    max_bytes: u64,
    reporter: &dyn assemble_cache::Reporter,
) -> Result<(), Error> {
    let err = |failure, why: String| Error::Http {
        url: url.to_string(),
        why,
        failure,
    };
    let file = std::fs::File::open(from)
        .and_then(|f| f.metadata().map(|m| (f, m)))
        .map_err(|e| err(Failure::NoFile, format!("{}: {e}", from.display())))?;
    let (file, meta) = file;
    if !meta.is_file() {
        return Err(err(
            Failure::NoFile,
            format!("{} is not a regular file", from.display()),
        ));
    }
    reporter.download(url, Some(meta.len()));
    let result = read_body(file, dest, max_bytes, Some(meta.len()), reporter);
    reporter.download_done();
    result.map_err(|e| match e {
        Error::Http { why, failure, .. } => err(failure, why),
        e => e,
    })
}

/// A body into the new file `dest`: at most `max_bytes`, and all of
/// `total` when it was announced.
fn read_body(
    mut reader: impl Read,
    dest: &Path,
    max_bytes: u64,
    total: Option<u64>,
    reporter: &dyn assemble_cache::Reporter,
) -> Result<(), Error> {
    let err = |why: String| Error::Http {
        url: String::new(),
        why,
        failure: Failure::Body,
    };
    let mut out = fs_err::File::create(dest)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got: u64 = 0;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| err(format!("reading the body: {e}")))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > max_bytes {
            return Err(err(format!(
                "the download is larger than {max_bytes} bytes"
            )));
        }
        out.write_all(&buf[..n])?;
        reporter.downloaded(n as u64);
    }
    if let Some(n) = total
        && n != got
    {
        return Err(err(format!(
            "the connection closed after {got} of {n} bytes"
        )));
    }
    out.sync_all()?;
    Ok(())
}

/// An agent with the trusted roots and `proxy`.
fn agent(proxy: Option<ureq::Proxy>) -> ureq::Agent {
    let tls = TlsConfig::builder().root_certs(roots().clone()).build();
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .tls_config(tls)
        .proxy(proxy)
        .build()
        .new_agent()
}

/// The roots of trust, read once: the system's store or what
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` name; the bundled roots where that holds
/// none.
fn roots() -> &'static RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let certs: Vec<Certificate<'static>> = found
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        if certs.is_empty() {
            RootCerts::WebPki
        } else {
            RootCerts::Specific(Arc::new(certs))
        }
    })
}

/// The variables a URL's proxy is read from, in order (curl's choice:
/// the scheme's own, lower case first, then `all_proxy`).
fn proxy_variables(url: &str) -> &'static [&'static str] {
    if url.starts_with("https://") {
        &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
    }
}

/// A proxy, and where it was set.
struct ChosenProxy {
    proxy: ureq::Proxy,
    variable: &'static str,
    value: String,
}

/// The proxy for `url` from the environment `var` reads: none when no
/// variable is set (or set empty) or `NO_PROXY` lists the host.
fn proxy_for(
    url: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ChosenProxy>, (Failure, String)> {
    let Some((name, value)) = proxy_variables(url)
        .iter()
        .find_map(|n| var(n).filter(|v| !v.is_empty()).map(|v| (*n, v)))
    else {
        return Ok(None);
    };
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| (Failure::Invalid, format!("{url}: {e}")))?;
    let host = uri.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let no_proxy = var("NO_PROXY")
        .or_else(|| var("no_proxy"))
        .unwrap_or_default();
    if no_proxy_lists(&no_proxy, host) {
        return Ok(None);
    }
    match ureq::Proxy::new(&value) {
        Ok(proxy) => Ok(Some(ChosenProxy {
            proxy,
            variable: name,
            value,
        })),
        Err(e) => Err((
            Failure::Invalid,
            format!("the proxy in {name} ({value}): {e}"),
        )),
    }
}

/// Whether `NO_PROXY` (a comma-separated list) lists `host`: `*`, the host
/// itself, or a domain it is in (`example.com` and `.example.com` both
/// cover `a.example.com`, as curl reads them).
fn no_proxy_lists(no_proxy: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|e| {
            let domain = e.trim_start_matches('*').trim_start_matches('.');
            e == "*" || host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// A ureq error as a [`Failure`] and its words.
fn classify(e: &ureq::Error) -> (Failure, String) {
    use ureq::Error as E;
    let failure = match e {
        E::HostNotFound => Failure::Dns,
        E::Io(io) if is_dns(io) => Failure::Dns,
        E::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => Failure::Tls,
        E::Io(_) | E::ConnectionFailed | E::Timeout(_) => Failure::Connect,
        E::Tls(_) | E::Rustls(_) | E::Pem(_) | E::TlsRequired => Failure::Tls,
        E::ConnectProxyFailed(_) | E::InvalidProxyUrl => Failure::Proxy,
        E::BadUri(_) | E::Http(_) => Failure::Invalid,
        _ => Failure::Body,
    };
    (failure, e.to_string())
}

/// The resolver's "failed to lookup address information" comes as an
/// uncategorised I/O error.
fn is_dns(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("lookup address") || text.contains("Name or service not known")
}

/// What to do about a failed download of `url`.
pub fn hint(url: &str, failure: Failure) -> Option<String> {
    let mirror = "set ASSEMBLE_GITHUB_URL to a mirror (https://, http:// or file://; docs/cli.md, Mirrors), put the source in vendor/ (`cargo xtask vendor` where the network is), or build with --offline from a cache that has it";
    let proxy = "behind a proxy, set HTTPS_PROXY (and NO_PROXY for hosts to reach directly)";
    Some(match failure {
        Failure::Dns => format!("the host of {url} does not resolve: {mirror}; {proxy}"),
        Failure::Connect => format!("no connection to the host of {url}: {mirror}; {proxy}"),
        Failure::Tls => "the server's certificate is not trusted: name the CA that signs it (a TLS-inspecting proxy's, a private mirror's) in SSL_CERT_FILE (or a folder of them in SSL_CERT_DIR), or add it to the system's store (update-ca-certificates)".to_string(),
        Failure::Proxy => "the proxy failed: check HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, or list the host in NO_PROXY to reach it directly".to_string(),
        Failure::Status(404) | Failure::NoFile => format!(
            "nothing at {url}: check the unit's tag or rev, and, with a mirror, its layout (docs/cli.md, Mirrors)"
        ),
        Failure::Status(_) => format!("the server refused {url}: {mirror}"),
        Failure::Invalid => "check the URL and the proxy variables".to_string(),
        Failure::Body => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_proxy_follows_the_scheme_and_no_proxy() {
        let vars = [
            ("HTTPS_PROXY", "http://127.0.0.1:3128"),
            ("NO_PROXY", "example.org,.internal"),
        ];
        let got = |url| proxy_for(url, &env(&vars)).unwrap().map(|p| p.proxy.port());
        assert_eq!(got("https://github.com/x"), Some(3128));
        assert_eq!(got("http://github.com/x"), None, "https_proxy is for https");
        assert_eq!(got("https://example.org/x"), None);
        assert_eq!(got("https://a.example.org:8443/x"), None);
        assert_eq!(got("https://mirror.internal/x"), None);
        assert_eq!(got("https://user@github.com/x"), Some(3128));
        let all = [("ALL_PROXY", "http://127.0.0.1:8080"), ("https_proxy", "")];
        assert_eq!(
            proxy_for("http://h/x", &env(&all))
                .unwrap()
                .map(|p| p.proxy.port()),
            Some(8080)
        );
        for list in ["*", "a.example, *"] {
            let star = [("https_proxy", "http://127.0.0.1:1"), ("no_proxy", list)];
            assert!(
                proxy_for("https://h/x", &env(&star)).unwrap().is_none(),
                "{list}"
            );
        }
        let bad = [("https_proxy", "::")];
        assert!(proxy_for("https://h/x", &env(&bad)).is_err());
    }

    #[test]
    fn file_urls_name_local_paths() {
        assert_eq!(
            file_url_path("/srv/m/a%20b.tar.gz"),
            Path::new("/srv/m/a b.tar.gz")
        );
        assert_eq!(file_url_path("localhost/srv/m"), Path::new("/srv/m"));
        assert_eq!(file_url_path("/100%"), Path::new("/100%"));
    }
}
