//! A small HTTP/1.1 server on 127.0.0.1 for the fetch tests: real sockets,
//! real requests from the tool's HTTP client, files served from memory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
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

impl Server {
    pub fn start() -> Server {
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
                    if let Ok(conn) = conn {
                        hits.fetch_add(1, Ordering::SeqCst);
                        serve(conn, &routes);
                    }
                }
            })
        };
        Server {
            base: format!("http://{addr}"),
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

fn serve(mut conn: TcpStream, routes: &Mutex<BTreeMap<String, Reply>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
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
