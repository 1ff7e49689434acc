//! A TCP proxy that can go silent: for tests of what a client does when the
//! network stops answering without closing anything (a failover to another
//! address, a partition, a host that vanished).
//!
//! [`SilentProxy::go_silent`] freezes every connection open at that moment
//! for good (no bytes either way, no FIN, no RST: the peer's kernel still
//! looks alive) and holds new connections unanswered;
//! [`SilentProxy::drop_replies`] lets requests through but freezes the
//! replies (a command runs in Redis, its answer never arrives);
//! [`SilentProxy::restore`] forwards new connections again. Frozen
//! connections stay frozen, like connections to a host that is gone.

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy on a free loopback port in front of `target`.
#[derive(Debug)]
pub struct SilentProxy {
    port: u16,
    state: watch::Sender<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Silent,
    RequestsOnly,
}

/// Every `go_silent` / `drop_replies` starts a new epoch; a connection
/// applies each new epoch's mode to itself once, for good.
#[derive(Debug, Clone, Copy)]
struct State {
    epoch: u64,
    mode: Mode,
}

impl SilentProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind proxy")?;
        let port = listener.local_addr()?.port();
        let (state, _) = watch::channel(State {
            epoch: 0,
            mode: Mode::Forward,
        });
        let rx = state.subscribe();
        let target = target.to_owned();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, target.clone(), rx.clone()));
            }
        });
        Ok(Self { port, state, accept })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `redis://` URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Freezes every open connection for good and holds new ones.
    pub fn go_silent(&self) {
        self.enter(Mode::Silent);
    }

    /// Requests still reach the server; replies on open connections are
    /// frozen for good, and new connections get none.
    pub fn drop_replies(&self) {
        self.enter(Mode::RequestsOnly);
    }

    /// Forwards new connections again (frozen ones stay frozen).
    pub fn restore(&self) {
        self.state.send_modify(|s| s.mode = Mode::Forward);
    }

    fn enter(&self, mode: Mode) {
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.mode = mode;
        });
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One client connection: forwards each direction while it is on; a
/// direction, once turned off, stays off (nothing read, nothing written).
/// The upstream connection stays open even when the client closes, so a
/// request already forwarded runs to its end.
async fn serve(client: TcpStream, target: String, mut state: watch::Receiver<State>) {
    let Ok(start) = state.wait_for(|s| s.mode != Mode::Silent).await.map(|s| *s) else {
        return;
    };
    let mut epoch = start.epoch;
    let Ok(upstream) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let mut requests_on = true;
    let mut replies_on = start.mode == Mode::Forward;
    let mut a = vec![0_u8; 16 * 1024];
    let mut b = vec![0_u8; 16 * 1024];
    loop {
        if !requests_on && !replies_on {
            // Frozen: keep every half open, never read or write again.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *state.borrow();
                if now.epoch != epoch {
                    epoch = now.epoch;
                    match now.mode {
                        Mode::Silent => (requests_on, replies_on) = (false, false),
                        Mode::RequestsOnly => replies_on = false,
                        Mode::Forward => {}
                    }
                }
            }
            n = client_read.read(&mut a), if requests_on => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if up_write.write_all(&a[..n]).await.is_err() { return },
            },
            n = up_read.read(&mut b), if replies_on => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client_write.write_all(&b[..n]).await.is_err() { return },
            },
        }
    }
}
