//! Downloads over HTTP(S), with a progress bar on a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Downloads `url` into `dest` (a new file). At most `max_bytes` are
/// accepted. A failed download leaves `dest` behind only inside the
/// caller's temporary folder, never in the cache.
pub fn download(url: &str, dest: &Path, max_bytes: u64, progress_bar: bool) -> Result<(), Error> {
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
    let bar = if progress_bar && std::io::stderr().is_terminal() {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::no_length(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12.cyan.bold} {bytes}/{total_bytes} {binary_bytes_per_sec} {wide_bar}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("Downloading");
        bar
    } else {
        indicatif::ProgressBar::hidden()
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
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
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
