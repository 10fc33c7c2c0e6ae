//! A real HTTP proxy on loopback for the network tests: Debian's
//! tinyproxy, started in the foreground with a config of the test's own,
//! its log read to see what went through it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Tinyproxy {
    pub url: String,
    log: PathBuf,
    child: Child,
}

impl Tinyproxy {
    /// Starts tinyproxy on a free loopback port, its files in `dir`.
    /// Another process may take the port between our probe and its bind:
    /// then tinyproxy exits, and the next port is tried.
    pub fn start(dir: &Path) -> Tinyproxy {
        fs_err::create_dir_all(dir).expect("proxy folder");
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = dir.join("tinyproxy.log");
            let _ = fs_err::remove_file(&log);
            let conf = dir.join("tinyproxy.conf");
            fs_err::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\nMaxClients 20\nAllow 127.0.0.1\n",
                    log.display()
                ),
            )
            .expect("proxy config");
            let mut child = Command::new("tinyproxy")
                .args(["-d", "-c"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tinyproxy (Debian package tinyproxy)");
            // Ready when it accepts; gone when its bind failed.
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Tinyproxy {
                        url: format!("http://127.0.0.1:{port}"),
                        log,
                        child,
                    };
                }
                if child.try_wait().expect("tinyproxy's status").is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        panic!("tinyproxy did not start on any of 20 ports");
    }

    /// The requests it logged (`CONNECT 127.0.0.1:PORT HTTP/1.1`, ...).
    pub fn requests(&self) -> Vec<String> {
        fs_err::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").map(|(_, r)| r.to_string()))
            .filter(|r| r.contains(" HTTP/"))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
