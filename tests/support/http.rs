//! A small HTTP/1.1 server on 127.0.0.1 for the fetch tests: real sockets,
//! real requests from the tool's HTTP client, files served from memory;
//! over TLS with a certificate from an [`Authority`] made by the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How a path is answered.
#[derive(Clone)]
pub enum Reply {
    Ok(Vec<u8>),
    /// Announces the full length, sends only the first `sent` bytes, closes.
    Truncated {
        body: Vec<u8>,
        sent: usize,
    },
}

pub struct Server {
    pub base: String,
    routes: Arc<Mutex<BTreeMap<String, Reply>>>,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

/// A certificate authority made by a test, and a certificate it signed
/// for 127.0.0.1 and localhost.
pub struct Authority {
    /// The CA's certificate, PEM: what `SSL_CERT_FILE` names to trust it.
    pub ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl Authority {
    pub fn new() -> Authority {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "assemble test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params")
            .signed_by(&key, &issuer)
            .expect("server certificate");
        let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        Authority {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }
}

impl Server {
    pub fn start() -> Server {
        Server::listen(None)
    }

    /// Serves https://127.0.0.1:PORT with `authority`'s certificate.
    pub fn start_tls(authority: &Authority) -> Server {
        Server::listen(Some(authority.server.clone()))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let routes: Arc<Mutex<BTreeMap<String, Reply>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, hits, stop) = (routes.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    hits.fetch_add(1, Ordering::SeqCst);
                    match &tls {
                        None => serve(conn, &routes),
                        Some(config) => {
                            let Ok(session) = rustls::ServerConnection::new(config.clone()) else {
                                continue;
                            };
                            serve(rustls::StreamOwned::new(session, conn), &routes)
                        }
                    }
                }
            })
        };
        Server {
            base: format!("{scheme}://{addr}"),
            routes,
            hits,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), reply);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting; later requests are refused by the kernel.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(mut conn: impl Read + Write, routes: &Mutex<BTreeMap<String, Reply>>) {
    let path = {
        let mut reader = BufReader::new(&mut conn);
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => break,
                Ok(_) if h == "\r\n" || h == "\n" => break,
                Ok(_) => {}
            }
        }
        line.split_whitespace().nth(1).unwrap_or("/").to_string()
    };
    let reply = routes.lock().expect("routes").get(&path).cloned();
    let _ = match reply {
        Some(Reply::Ok(body)) => write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|_| conn.write_all(&body)),
        Some(Reply::Truncated { body, sent }) => write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|_| conn.write_all(&body[..sent])),
        None => conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ),
    };
    let _ = conn.flush();
}
