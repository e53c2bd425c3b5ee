//! A stand-in HTTP server (a scoreboard, say) for a service to call.

use std::net::SocketAddr;

use tokio::sync::oneshot;

/// A router served by [`serve`]; it stops serving when this drops.
#[derive(Debug)]
pub struct Served {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Served {
    /// `http://<addr>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves `router` on 127.0.0.1 at a random port, from a thread and runtime
/// of its own: a test's paused clock or busy runtime does not hold it up.
/// Stops when the [`Served`] drops; the thread is not joined (a graceful
/// shutdown waits for the clients' idle keep-alive connections).
pub fn serve(router: axum::Router) -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let addr = listener.local_addr().expect("the listener's address");
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the server");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Served { addr, _stop: stop }
}
