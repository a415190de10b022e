//! Outbound connections of a clone, checked when they are made. A name is resolved once, every
//! answer is checked against the source policy, and the connection goes to exactly an address
//! that passed: a DNS answer that changes between a check and the connect (rebinding) cannot
//! reach an internal address.
//!
//! - https: libgit2 connects through a [`ConnectProxy`], an HTTP CONNECT proxy on 127.0.0.1 that
//!   the clone owns for its duration. Every connection libgit2 makes, including those after an
//!   HTTP redirect, goes through it, so a redirect to an internal host is refused too.
//! - git:// and ssh:// (libgit2 has no proxy support for them): [`pin_url`] rewrites the URL's
//!   host to the checked address before libgit2 sees it.
//!
//! The resolver is a trait so that tests can answer differently on each call.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use url::Url;

use super::policy::{is_internal, literal_ip, HostCheck, SourcePolicy};

/// Name resolution (the system resolver in the service; tests inject their own).
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// `getaddrinfo`, bounded by the system resolver's own timeouts (`resolv.conf`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Resolves `host` once and checks every address it resolves to; returns the addresses to
/// connect to. An address literal is checked without resolving. With private networks allowed
/// nothing is refused.
pub fn resolve_checked(
    host: &str,
    port: u16,
    policy: SourcePolicy,
    resolver: &dyn Resolver,
) -> Result<Vec<SocketAddr>, HostCheck> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    // The same reading of address literals as the submit-time check (`127.1`, `0x7f.1`, …).
    let addrs = match literal_ip(bare) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => resolver.resolve(bare, port).map_err(|e| {
            HostCheck::Unresolved(format!("could not resolve git host `{bare}`: {e}"))
        })?,
    };
    if addrs.is_empty() {
        return Err(HostCheck::Unresolved(format!(
            "git host `{bare}` has no addresses"
        )));
    }
    if !policy.allow_private_networks {
        if let Some(bad) = addrs.iter().find(|a| is_internal(a.ip())) {
            return Err(HostCheck::Refused(format!(
                "git host `{bare}` resolves to an internal address ({}); internal hosts are refused unless CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS=true",
                bad.ip()
            )));
        }
    }
    Ok(addrs)
}

/// `clone_url` with its host replaced by `ip` (user, port and path kept); for git:// and ssh://
/// URLs and scp-like `user@host:path`. libgit2 then connects to exactly that address.
pub fn pin_url(clone_url: &str, ip: IpAddr) -> Option<String> {
    if !clone_url.contains("://") {
        // scp-like: user@host:path
        let (userhost, path) = clone_url.split_once(':')?;
        let user = userhost.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        return Some(format!("{}{host}:{path}", user.unwrap_or_default()));
    }
    let mut url = Url::parse(clone_url).ok()?;
    url.set_ip_host(ip).ok()?;
    Some(url.to_string())
}

/// Time limits of the proxy.
#[derive(Debug, Clone, Copy)]
pub struct ProxyTimeouts {
    /// Reading the CONNECT request, and connecting to the checked address.
    pub handshake: Duration,
    /// Silence on a tunnel after which it is closed.
    pub idle: Duration,
}

impl Default for ProxyTimeouts {
    fn default() -> Self {
        ProxyTimeouts {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// Why the proxy did not open a tunnel (the last such reason is kept for the clone's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The policy refuses the target (permanent).
    Refused(String),
    /// The name did not resolve (possibly transient).
    Unresolved(String),
    /// No checked address accepted the connection (possibly transient).
    Unreachable(String),
}

/// Largest CONNECT request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Tunnels open at once through one clone's proxy.
const MAX_TUNNELS: usize = 8;

/// A per-clone HTTP CONNECT proxy on 127.0.0.1 that checks each target when it connects.
/// Dropping it stops it and closes every tunnel.
pub struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    policy: SourcePolicy,
    resolver: Arc<dyn Resolver>,
    timeouts: ProxyTimeouts,
    stop: AtomicBool,
    tunnels: AtomicUsize,
    /// The sockets of each open connection (by connection number), to shut them down when
    /// the clone ends.
    sockets: Mutex<HashMap<u64, Vec<TcpStream>>>,
    next_connection: AtomicU64,
    last_denial: Mutex<Option<Denial>>,
}

impl ConnectProxy {
    /// Listens on a random port of 127.0.0.1 (only CONNECT is served).
    pub fn start(
        policy: SourcePolicy,
        resolver: Arc<dyn Resolver>,
        timeouts: ProxyTimeouts,
    ) -> io::Result<ConnectProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            policy,
            resolver,
            timeouts,
            stop: AtomicBool::new(false),
            tunnels: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            last_denial: Mutex::new(None),
        });
        let accept_shared = shared.clone();
        let accept = std::thread::Builder::new()
            .name("clone-proxy".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(ConnectProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The proxy URL for libgit2.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The last reason a tunnel was not opened since the previous call, if any.
    pub fn take_denial(&self) -> Option<Denial> {
        self.shared.last_denial.lock().unwrap().take()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, then close every socket so tunnel threads end.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
        for (_, sockets) in self.shared.sockets.lock().unwrap().drain() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if !stream.peer_addr().is_ok_and(|p| p.ip().is_loopback()) {
            continue;
        }
        if shared.tunnels.fetch_add(1, Ordering::SeqCst) >= MAX_TUNNELS {
            shared.tunnels.fetch_sub(1, Ordering::SeqCst);
            let mut stream = stream;
            let _ = respond(&mut stream, "503 Service Unavailable");
            continue;
        }
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        shared.register(id, &stream);
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("clone-proxy-conn".into())
            .spawn(move || {
                let mut stream = stream;
                serve(id, &mut stream, &conn_shared);
                let _ = stream.shutdown(Shutdown::Both);
                conn_shared.sockets.lock().unwrap().remove(&id);
                conn_shared.tunnels.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.sockets.lock().unwrap().remove(&id);
            shared.tunnels.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Shared {
    /// Keeps a handle on `socket` so that dropping the proxy can shut it down.
    fn register(&self, id: u64, socket: &TcpStream) {
        if let Ok(copy) = socket.try_clone() {
            self.sockets
                .lock()
                .unwrap()
                .entry(id)
                .or_default()
                .push(copy);
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str) -> io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// One client connection: read the CONNECT request, check, connect, then relay bytes.
fn serve(id: u64, client: &mut TcpStream, shared: &Shared) {
    let deny = |client: &mut TcpStream, status: &str, denial: Denial| {
        *shared.last_denial.lock().unwrap() = Some(denial);
        let _ = respond(client, status);
    };
    let _ = client.set_read_timeout(Some(shared.timeouts.handshake));
    let _ = client.set_write_timeout(Some(shared.timeouts.handshake));
    let Some((head, early)) = read_head(client) else {
        let _ = respond(client, "400 Bad Request");
        return;
    };
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        // libgit2 sends a plain http:// request (e.g. after a redirect from https to http)
        // to the proxy as an absolute-form request; it is never forwarded.
        deny(
            client,
            "405 Method Not Allowed",
            Denial::Refused("the git server redirected to a plain http:// URL, which is refused; use an https URL that does not redirect to http".into()),
        );
        return;
    }
    let Some((host, port)) = parse_authority(target) else {
        let _ = respond(client, "400 Bad Request");
        return;
    };
    let addrs = match resolve_checked(&host, port, shared.policy, shared.resolver.as_ref()) {
        Ok(addrs) => addrs,
        Err(HostCheck::Refused(message)) => {
            deny(client, "403 Forbidden", Denial::Refused(message));
            return;
        }
        Err(HostCheck::Unresolved(message)) => {
            deny(client, "502 Bad Gateway", Denial::Unresolved(message));
            return;
        }
    };
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let mut last_error = None;
    let mut upstream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, shared.timeouts.handshake) {
            Ok(s) => {
                upstream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(mut upstream) = upstream else {
        let message = format!(
            "could not connect to git host `{host}` port {port}: {}",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        );
        deny(client, "504 Gateway Timeout", Denial::Unreachable(message));
        return;
    };
    shared.register(id, &upstream);
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .and_then(|_| upstream.write_all(&early))
        .is_err()
    {
        return;
    }
    let Ok(client) = client.try_clone() else {
        return;
    };
    relay(client, upstream, shared.timeouts.idle);
}

/// Reads up to the end of the request head; returns it and any bytes read after it.
fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buf[..end].to_vec()).ok()?;
            return Some((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return None;
        }
    }
}

/// `host:port` or `[v6]:port`.
fn parse_authority(target: &str) -> Option<(String, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

/// Copies bytes both ways until either side closes or stays silent for `idle`.
fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) {
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(Some(idle));
        let _ = s.set_write_timeout(Some(idle));
    }
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let forward = std::thread::Builder::new()
        .name("clone-proxy-up".into())
        .spawn(move || {
            let _ = io::copy(&mut client_r, &mut upstream_w);
            let _ = upstream_w.shutdown(Shutdown::Write);
        });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let _ = io::copy(&mut upstream_r, &mut client_w);
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = upstream_r.shutdown(Shutdown::Both);
    if let Ok(handle) = forward {
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    const STRICT: SourcePolicy = SourcePolicy::STRICT;
    const OPEN: SourcePolicy = SourcePolicy::OPEN;

    /// Answers from a script, one answer per call, and counts the calls.
    struct ScriptedResolver {
        answers: Mutex<VecDeque<Vec<SocketAddr>>>,
        calls: AtomicUsize,
    }

    impl ScriptedResolver {
        fn new(answers: Vec<Vec<SocketAddr>>) -> Arc<ScriptedResolver> {
            Arc::new(ScriptedResolver {
                answers: Mutex::new(answers.into()),
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Resolver for ScriptedResolver {
        fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .ok_or_else(|| io::Error::other("no more answers"))
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Sends a CONNECT through the proxy; returns the status line and the open stream.
    fn connect_through(proxy: &ConnectProxy, target: &str) -> (String, TcpStream) {
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        (text.lines().next().unwrap_or("").to_string(), s)
    }

    /// A loopback listener that records whether anything connected to it.
    fn watched_listener() -> (SocketAddr, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let touched = Arc::new(AtomicBool::new(false));
        let flag = touched.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                flag.store(true, Ordering::SeqCst);
                // Echo, so tunnels can be checked end to end.
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        (local, touched)
    }

    #[test]
    fn connect_to_a_name_resolving_to_loopback_is_refused() {
        let (target, touched) = watched_listener();
        let resolver = ScriptedResolver::new(vec![vec![target]]);
        let proxy =
            ConnectProxy::start(STRICT, resolver.clone(), ProxyTimeouts::default()).unwrap();
        let (status, _s) = connect_through(&proxy, &format!("git.example.com:{}", target.port()));
        assert!(status.contains(" 403 "), "{status}");
        match proxy.take_denial() {
            Some(Denial::Refused(m)) => {
                assert!(m.contains("CERTUS_ASSURANCE_ALLOW_PRIVATE_NETWORKS"), "{m}");
                assert!(m.contains("127.0.0.1"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!touched.load(Ordering::SeqCst));
        // An address literal is checked the same way, without the resolver.
        let (status, _s) = connect_through(&proxy, &format!("[::1]:{}", target.port()));
        assert!(status.contains(" 403 "), "{status}");
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_rebinding_answer_after_a_public_one_is_refused_at_connect_time() {
        let (target, touched) = watched_listener();
        // First answer public (what a check before the clone would see), then loopback.
        let resolver = ScriptedResolver::new(vec![vec![addr("93.184.216.34:443")], vec![target]]);
        let first = resolve_checked("rebind.example", 443, STRICT, resolver.as_ref()).unwrap();
        assert_eq!(first, vec![addr("93.184.216.34:443")]);
        let proxy =
            ConnectProxy::start(STRICT, resolver.clone(), ProxyTimeouts::default()).unwrap();
        let (status, _s) = connect_through(&proxy, &format!("rebind.example:{}", target.port()));
        assert!(status.contains(" 403 "), "{status}");
        assert!(
            !touched.load(Ordering::SeqCst),
            "the proxy connected to loopback"
        );
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_tunnel_goes_to_exactly_the_checked_address() {
        let (target, touched) = watched_listener();
        // One answer only: a second resolution would fail, so the proxy must reuse the first.
        let resolver = ScriptedResolver::new(vec![vec![target]]);
        let proxy = ConnectProxy::start(OPEN, resolver.clone(), ProxyTimeouts::default()).unwrap();
        let (status, mut s) = connect_through(&proxy, &format!("git.internal:{}", target.port()));
        assert!(status.contains(" 200 "), "{status}");
        s.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        assert!(touched.load(Ordering::SeqCst));
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
        // Dropping the proxy closes the tunnel.
        drop(proxy);
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
    }

    #[test]
    fn only_connect_is_served_and_bad_requests_get_400() {
        let resolver = ScriptedResolver::new(vec![]);
        let proxy = ConnectProxy::start(OPEN, resolver.clone(), ProxyTimeouts::default()).unwrap();
        for request in [
            "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
        ] {
            let mut s = TcpStream::connect(proxy.addr()).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 405") || answer.starts_with("HTTP/1.1 400"),
                "{request:?}: {answer}"
            );
        }
        assert!(matches!(proxy.take_denial(), Some(Denial::Refused(m)) if m.contains("http://")));
        // An endless head is cut off.
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        // Exactly one byte over the limit: the proxy reads it all, so its close is clean.
        let _ = s.write_all(&vec![b'a'; MAX_HEAD_BYTES + 1]);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 0);
        assert!(proxy.url().starts_with("http://127.0.0.1:"));
    }

    #[test]
    fn unresolved_names_are_reported_as_transient() {
        let resolver = ScriptedResolver::new(vec![]);
        let proxy = ConnectProxy::start(STRICT, resolver, ProxyTimeouts::default()).unwrap();
        let (status, _s) = connect_through(&proxy, "nowhere.example:443");
        assert!(status.contains(" 502 "), "{status}");
        assert!(matches!(proxy.take_denial(), Some(Denial::Unresolved(_))));
    }

    #[test]
    fn any_internal_answer_refuses_the_host() {
        let resolver =
            ScriptedResolver::new(vec![vec![addr("93.184.216.34:443"), addr("10.0.0.5:443")]]);
        match resolve_checked("mixed.example", 443, STRICT, resolver.as_ref()) {
            Err(HostCheck::Refused(m)) => assert!(m.contains("10.0.0.5"), "{m}"),
            other => panic!("{other:?}"),
        }
        let resolver = ScriptedResolver::new(vec![vec![addr("10.0.0.5:443")]]);
        assert!(resolve_checked("git.internal", 443, OPEN, resolver.as_ref()).is_ok());
    }

    #[test]
    fn pinned_urls_keep_user_port_and_path() {
        let v4: IpAddr = "93.184.216.34".parse().unwrap();
        let v6: IpAddr = "2606:2800::1".parse().unwrap();
        assert_eq!(
            pin_url("git://git.example.com:9418/org/repo.git", v4).unwrap(),
            "git://93.184.216.34:9418/org/repo.git"
        );
        assert_eq!(
            pin_url("ssh://git@git.example.com/org/repo.git", v6).unwrap(),
            "ssh://git@[2606:2800::1]/org/repo.git"
        );
        assert_eq!(
            pin_url("git@github.com:org/repo.git", v4).unwrap(),
            "git@93.184.216.34:org/repo.git"
        );
        assert_eq!(
            pin_url("git@github.com:org/repo.git", v6).unwrap(),
            "git@[2606:2800::1]:org/repo.git"
        );
    }
}
