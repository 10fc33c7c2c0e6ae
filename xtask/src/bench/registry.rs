//! The shared cache's rows: Debian's docker-registry started on loopback
//! (storage under the bench's folder), filled once by a cold build, then
//! a cold build that takes the bytecode from it, in turns with the cold
//! build that compiles it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

/// A docker-registry this bench started; stopped when dropped.
pub(crate) struct LocalRegistry {
    /// `127.0.0.1:PORT/bench/cache`.
    pub(crate) repository: String,
    child: Child,
}

impl LocalRegistry {
    /// Starts docker-registry with its storage in `dir` (made anew), on a
    /// port the kernel picks; `None` when it is not installed.
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Option<LocalRegistry>> {
        let Some(program) = assemble_fs::find_program("docker-registry") else {
            return Ok(None);
        };
        super::fresh(dir)?;
        fs_err::create_dir_all(dir.join("data"))?;
        let config = dir.join("config.yml");
        fs_err::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.join("data").display()
            ),
        )?;
        let mut child = Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting docker-registry")?;
        let stderr = child.stderr.take().context("docker-registry's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let host = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                bail!("docker-registry ended before it listened");
            };
            if let Some(rest) = line?.split("listening on ").nth(1) {
                break rest
                    .split(['"', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Its later lines, read so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Ok(Some(LocalRegistry {
            repository: format!("{host}/bench/cache"),
            child,
        }))
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
