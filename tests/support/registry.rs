//! A real OCI registry on loopback for the image tests: Debian's
//! docker-registry (the CNCF distribution server), started in the
//! foreground on a port the kernel picks, its storage in the test's folder,
//! its access log read to see which blobs were uploaded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Its storage.
    data: std::path::PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    child: Child,
}

impl Registry {
    /// Starts docker-registry with its storage in `dir/data`; ready when it
    /// says where it listens.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "")
    }

    /// As [`Registry::start`], taking only `user` with `password` (basic
    /// auth from an htpasswd file that Debian's htpasswd writes).
    pub fn start_with_login(dir: &Path, user: &str, password: &str) -> Registry {
        fs_err::create_dir_all(dir).expect("registry folder");
        let file = dir.join("htpasswd");
        let line = super::stdout_ok(Command::new("htpasswd").args(["-Bbn", user, password]));
        fs_err::write(&file, line).expect("htpasswd file");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            file.display()
        );
        Registry::start_with(dir, &auth)
    }

    fn start_with(dir: &Path, auth: &str) -> Registry {
        let data = dir.join("data");
        fs_err::create_dir_all(&data).expect("registry storage");
        let conf = dir.join("config.yml");
        fs_err::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n{auth}",
                data.display()
            ),
        )
        .expect("registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let host = loop {
            let line = lines
                .next()
                .expect("docker-registry ended before it listened")
                .expect("its log");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest
                    .split(['"', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // The rest of the log, kept for `requests`.
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep.lock().expect("log").push(line);
            }
        });
        Registry {
            host,
            data,
            log,
            child,
        }
    }

    /// The body of `GET path` (`/v2/_catalog`), asking for `accept`.
    pub fn get(&self, path: &str, accept: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.host).expect("connect to the registry");
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: {accept}\r\n\r\n",
            self.host
        )
        .expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "GET {path}: {head}"
        );
        body.to_string()
    }

    /// Flips one byte in the middle of the blob `digest` in the storage.
    pub fn flip_blob(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        let stored = self
            .data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes = fs_err::read(&stored).expect("the stored blob");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs_err::write(&stored, bytes).expect("write the stored blob");
    }

    /// The requests completed so far with `method` whose path holds
    /// `path` (`POST`, `/blobs/uploads/`).
    pub fn requests(&self, method: &str, path: &str) -> Vec<String> {
        let method = format!("http.request.method={method} ");
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("response completed") && l.contains(&method) && l.contains(path))
            .cloned()
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
