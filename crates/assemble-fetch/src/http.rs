//! Downloads over HTTP(S), their progress told to a reporter.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Downloads `url` into `dest` (a new file). At most `max_bytes` are
/// accepted. A failed download leaves `dest` behind only inside the
/// caller's temporary folder, never in the cache.
pub fn download(
    url: &str,
    dest: &Path,
    max_bytes: u64,
    reporter: &dyn assemble_cache::Reporter,
) -> Result<(), Error> {
    let err = |why: String| Error::Http {
        url: url.to_string(),
        why,
    };
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent.get(url).call().map_err(|e| err(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(err(format!("HTTP {status}")));
    }
    let total = response.body().content_length();
    reporter.download(url, total);
    let result = read_body(&mut response, dest, max_bytes, total, reporter);
    reporter.download_done();
    result.map_err(|e| match e {
        Error::Http { why, .. } => err(why),
        e => e,
    })
}

/// The body of `response` into the new file `dest`: at most `max_bytes`,
/// and all of `total` when the server announced it.
fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    dest: &Path,
    max_bytes: u64,
    total: Option<u64>,
    reporter: &dyn assemble_cache::Reporter,
) -> Result<(), Error> {
    let err = |why: String| Error::Http {
        url: String::new(),
        why,
    };
    let mut reader = response
        .body_mut()
        .with_config()
        .limit(max_bytes.saturating_add(1))
        .reader();
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
