//! A TCP proxy that can go silent: for tests of what a client does when the
//! network stops answering without closing anything (a failover to another
//! address, a partition, a host that vanished).
//!
//! [`SilentProxy::go_silent`] freezes every connection open at that moment
//! for good (no bytes either way, no FIN, no RST: the peer's kernel still
//! looks alive) and holds new connections unanswered; [`SilentProxy::restore`]
//! forwards new connections again. The frozen ones stay frozen, like
//! connections to a host that is gone.

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy on a free loopback port in front of `target`.
#[derive(Debug)]
pub struct SilentProxy {
    port: u16,
    /// A connection forwards while the epoch it started in is current;
    /// `go_silent` starts a new one.
    state: watch::Sender<State>,
    accept: JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    epoch: u64,
    silent: bool,
}

impl SilentProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("bind proxy")?;
        let port = listener.local_addr()?.port();
        let (state, _) = watch::channel(State {
            epoch: 0,
            silent: false,
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
        self.state.send_modify(|s| {
            s.epoch += 1;
            s.silent = true;
        });
    }

    /// Forwards new connections again (frozen ones stay frozen).
    pub fn restore(&self) {
        self.state.send_modify(|s| s.silent = false);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One client connection: waits while the proxy is silent, then forwards
/// until the proxy goes silent, then holds both sockets open and idle.
async fn serve(client: TcpStream, target: String, mut state: watch::Receiver<State>) {
    let Ok(current) = state.wait_for(|s| !s.silent).await.map(|s| *s) else {
        return;
    };
    let epoch = current.epoch;
    let Ok(upstream) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let silenced = async {
        let _ = state.wait_for(|s| s.epoch != epoch).await;
    };
    let forward = async {
        let mut a = [0_u8; 16 * 1024];
        let mut b = [0_u8; 16 * 1024];
        loop {
            tokio::select! {
                n = client_read.read(&mut a) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if up_write.write_all(&a[..n]).await.is_err() { return },
                },
                n = up_read.read(&mut b) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if client_write.write_all(&b[..n]).await.is_err() { return },
                },
            }
        }
    };
    tokio::select! {
        () = forward => {}
        () = silenced => {
            // Frozen: keep every half open, never read or write again.
            std::future::pending::<()>().await;
        }
    }
}
