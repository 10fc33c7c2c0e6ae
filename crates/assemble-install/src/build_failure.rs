//! A distribution that failed to build from its sdist, said as what to do:
//! which distribution, and, where the build log shows a missing tool that
//! a system library's development package provides, that package.

/// A build from an sdist that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBuild {
    /// `pycurl==7.49.0`, as the installer names it.
    pub dist: String,
    /// The program the build looked for and did not find, when the log
    /// says so, and the Debian package that provides it.
    pub missing: Option<(&'static str, &'static str)>,
    /// The log's last lines.
    pub tail: String,
}

/// Programs a build runs to find a system library, and the Debian
/// package each comes in.
const TOOLS: &[(&str, &str)] = &[
    ("curl-config", "libcurl4-openssl-dev"),
    ("krb5-config", "libkrb5-dev"),
    ("pg_config", "libpq-dev"),
    ("xmlsec1-config", "libxmlsec1-dev"),
    ("xml2-config", "libxml2-dev"),
    ("xslt-config", "libxslt1-dev"),
    ("mysql_config", "default-libmysqlclient-dev"),
    ("mariadb_config", "libmariadb-dev"),
    ("pkg-config", "pkgconf"),
    ("gcc", "gcc"),
    ("cc", "gcc"),
];

impl std::fmt::Display for SourceBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "building {} from its sdist failed", self.dist)?;
        if let Some((tool, package)) = self.missing {
            write!(
                f,
                ": it needs `{tool}`, which is not on PATH; install the Debian package {package} (apt-get install {package})"
            )?;
        }
        Ok(())
    }
}

/// The failed source build an installer's log tells of, if it does: uv's
/// ``Failed to build `NAME==VERSION` `` (or pip's `Failed to build NAME`).
pub fn from_log(log: &str) -> Option<SourceBuild> {
    let dist = log.lines().find_map(|l| {
        let rest = l.split("Failed to build ").nth(1)?;
        let name = rest.trim().trim_matches('`').trim_end_matches(['`', '.']);
        (!name.is_empty()).then(|| {
            name.split_whitespace()
                .next()
                .unwrap_or(name)
                .trim_matches('`')
                .to_string()
        })
    })?;
    let missing = TOOLS.iter().copied().find(|(tool, _)| {
        log.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            let named = [
                format!("'{tool}'"),
                format!("`{tool}`"),
                format!("{tool}: not found"),
                format!("{tool}: command not found"),
                format!("run {tool}"),
            ];
            named.iter().any(|n| l.contains(n.as_str()))
                && (l.contains("no such file")
                    || l.contains("not found")
                    || l.contains("could not run"))
        })
    });
    let lines: Vec<&str> = log.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Some(SourceBuild {
        dist,
        missing,
        tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvs_log_names_the_distribution_and_the_missing_tool() {
        let log = "Resolved 19 packages in 9ms\n   Building pycurl==7.49.0\n  × Failed to build `pycurl==7.49.0`\n  ├─▶ The build backend returned an error\n      ConfigurationError: Could not run curl-config: [Errno 2] No such file or\n      directory: 'curl-config'\n";
        let b = from_log(log).unwrap();
        assert_eq!(b.dist, "pycurl==7.49.0");
        assert_eq!(b.missing, Some(("curl-config", "libcurl4-openssl-dev")));
        assert!(
            b.to_string()
                .contains("apt-get install libcurl4-openssl-dev"),
            "{b}"
        );
        let pg = "  × Failed to build `psycopg-c==3.3.9`\n      Error: pg_config executable not found.\n      /bin/sh: 1: pg_config: not found\n";
        assert_eq!(
            from_log(pg).unwrap().missing,
            Some(("pg_config", "libpq-dev"))
        );
        assert_eq!(from_log("error: no such thing"), None);
    }
}
