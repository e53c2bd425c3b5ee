//! Dependencies a test can break: a Postgres server and a Redis server of
//! the test's own (restarting the machine's would break every other test
//! running beside it), and a network partition in front of either.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::procs::free_port;

/// Waits until something accepts TCP connections on `port`.
fn wait_listening(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A Postgres server of its own (Debian's binaries, a cluster in a
/// temporary directory, trust authentication on 127.0.0.1), stopped when
/// dropped. Started as the `postgres` user when the test runs as root
/// (Postgres refuses to run as root).
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's postgresql (scripts/setup.sh installs it)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|p| p.join("pg_ctl").is_file())
            .max()
            .expect("no /usr/lib/postgresql/*/bin/pg_ctl");
        let root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
            .unwrap()
            .trim()
            == "0";
        let dir = tempfile::tempdir().unwrap();
        if root {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let pg = Self {
            port: free_port(),
            bin,
            data: dir.path().join("data"),
            as_postgres: root,
            _dir: dir,
        };
        pg.ctl(&["initdb", "-s", "-o", "-A trust -U postgres --no-sync"]);
        pg.start_server();
        pg
    }

    /// `pg_ctl -D <data> <args>`, as the `postgres` user when needed.
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        cmd.arg("-D")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn ctl(&self, args: &[&str]) {
        run(&mut self.pg_ctl(args));
    }

    fn start_server(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        let log = self.data.with_file_name("postgres.log");
        self.ctl(&["start", "-w", "-o", &opts, "-l", log.to_str().unwrap()]);
    }

    pub fn url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }

    /// Stops the server (fast: open connections are ended) and starts it
    /// again on the same port and data.
    pub fn restart(&self) {
        self.ctl(&["stop", "-w", "-m", "fast"]);
        self.start_server();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]).output();
    }
}

/// A Redis server of its own (Debian's `redis-server`, no persistence),
/// killed when dropped.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start(dir: &Path) -> Self {
        let mut r = Self {
            port: free_port(),
            dir: dir.to_owned(),
            child: None,
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("Debian's redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        wait_listening(self.port, Duration::from_secs(10), "redis-server");
    }

    /// SIGKILLs the server (what it held is gone: no persistence) and starts
    /// a new one on the same port.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP forwarder that can partition its clients from the server: while
/// cut, bytes in flight are held (open connections stall, new connections
/// are accepted and then hang), as when a network drops packets rather than
/// refusing them; when healed, everything held flows on.
pub struct Partition {
    pub port: u16,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, open) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let open = open.clone();
                tokio::spawn(async move {
                    let _ = open.clone().wait_for(|cut| !cut).await;
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, open.clone()), pipe(sr, cw, open));
                });
            }
        });
        Self { port, cut, task }
    }

    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if open.wait_for(|cut| !cut).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
