//! Real local nodes for tests: each helper spawns the node binary that
//! `./scripts/devnet install` put in the tool cache, on free loopback ports in
//! a temporary directory, waits until it answers, and kills it on drop.
//!
//! Children are spawned from one long-lived thread with `PR_SET_PDEATHSIG`,
//! so they die with the test process even when a test panics or a shared
//! node lives in a `static` that is never dropped.

mod anvil;
mod btcd;
pub mod http;
pub mod solana_tx;
mod validator;

use std::fs::File;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use anvil::{Anvil, TestToken};
pub use btcd::Btcd;
pub use validator::{LedgerCopy, SolanaValidator};

/// The command that installs every devnet tool; named in every "missing tool" error.
pub const INSTALL_COMMAND: &str = "./scripts/devnet install";

pub type Result<T, E = DevnetError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error(
        "`{tool}` not found (looked in {looked}); install the devnet tools with `{INSTALL_COMMAND}`"
    )]
    MissingTool { tool: String, looked: String },
    #[error("failed to start {name}: {source}")]
    Spawn { name: String, source: io::Error },
    #[error("{name} exited during startup ({status}); last log lines:\n{log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: String,
    },
    #[error("{name} did not answer within {secs} s; last log lines:\n{log}")]
    NotReady {
        name: String,
        secs: u64,
        log: String,
    },
    #[error("{0}")]
    Node(#[from] crate::Error),
    #[error("{0}")]
    Other(String),
}

/// Where `./scripts/devnet install` keeps tools: `$COFFER_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/coffer`, else `~/.cache/coffer`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COFFER_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("coffer")
}

/// Finds a tool in the devnet tool cache's `bin/`, then on `PATH`.
pub fn locate_tool(name: &str) -> Result<PathBuf> {
    let cached = tools_dir().join("bin").join(name);
    if is_executable(&cached) {
        return Ok(cached);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
    {
        return Ok(found);
    }
    Err(DevnetError::MissingTool {
        tool: name.to_owned(),
        looked: format!("{} and PATH", cached.display()),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A run of `width` consecutive ports free for both TCP and UDP.
pub fn free_port_range(width: u16) -> Option<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = u64::from(std::process::id()) ^ u64::from(nanos);
    (0..200u64).find_map(|attempt| {
        let base = 20_000
            + ((seed
                .wrapping_mul(2_654_435_761)
                .wrapping_add(attempt * 7_919))
                % 30_000) as u16;
        let all_free = (base..base + width).all(|port| {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        });
        all_free.then_some(base)
    })
}

/// Runs `cmd` to completion, as the tool `name`: its output, or an error
/// with what it printed when it fails.
pub fn run_tool(name: &str, cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().map_err(|source| DevnetError::Spawn {
        name: name.into(),
        source,
    })?;
    if !out.status.success() {
        return Err(DevnetError::Other(format!(
            "{name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out)
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that the kernel kills it when this process exits.
pub fn spawn_guarded(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits, so spawning
        // happens on a thread that lives as long as the process.
        let _ = std::thread::Builder::new()
            .name("devnet-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_parent_death_signal(&mut cmd));
                }
            });
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("devnet spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("devnet spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn spawn_with_parent_death_signal(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls async-signal-safe `prctl` between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A spawned node: its process, its data directory and its log file.
#[derive(Debug)]
pub struct NodeProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    // Declared last so the directory is removed after the process is killed.
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Spawns `cmd` in `dir`, which the process owns from then on, with
    /// stdout and stderr going to `<dir>/<name>.log`, and waits up to
    /// `timeout` until `probe` succeeds on a clone of `client`.
    pub async fn start<C, F, Fut, T, E>(
        name: &str,
        cmd: Command,
        dir: tempfile::TempDir,
        timeout: Duration,
        client: &C,
        probe: F,
    ) -> Result<Self>
    where
        C: Clone,
        F: Fn(C) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let mut process = Self::spawn(name, cmd, dir)?;
        process
            .wait_ready(timeout, || probe(client.clone()))
            .await?;
        Ok(process)
    }

    fn spawn(name: &str, mut cmd: Command, dir: tempfile::TempDir) -> Result<Self> {
        let log_path = dir.path().join(format!("{name}.log"));
        let spawn_err = |source| DevnetError::Spawn {
            name: name.to_owned(),
            source,
        };
        let log = File::create(&log_path).map_err(spawn_err)?;
        let log_err = log.try_clone().map_err(spawn_err)?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = spawn_guarded(cmd).map_err(spawn_err)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path,
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops every thread of the process (SIGSTOP) until the returned guard
    /// is dropped (SIGCONT). Returns once all threads are stopped, so its
    /// files hold still: what they show is what a crash right now would
    /// leave on disk.
    pub fn freeze(&self) -> Result<Frozen> {
        let pid = self.child.id();
        signal(pid, libc::SIGSTOP)?;
        let frozen = Frozen { pid };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            if Instant::now() >= deadline {
                return Err(DevnetError::Other(format!(
                    "{} did not stop within 10 s of SIGSTOP",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(frozen)
    }

    /// The last lines of the node's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` passes.
    async fn wait_ready<F, Fut, T, E>(&mut self, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(DevnetError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log_tail(),
                });
            }
            if probe().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DevnetError::NotReady {
                    name: self.name.clone(),
                    secs: timeout.as_secs(),
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the process and waits for it, so its ports are free afterwards.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process stopped by [`NodeProcess::freeze`]; dropping it resumes it.
#[must_use = "the process resumes when this is dropped"]
#[derive(Debug)]
pub struct Frozen {
    pid: u32,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = signal(self.pid, libc::SIGCONT);
    }
}

#[allow(unsafe_code)]
fn signal(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| DevnetError::Other(format!("pid {pid} out of range")))?;
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own
    // child, not yet reaped, so it cannot name another process.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(DevnetError::Other(format!(
            "signal {signal} to {pid}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Whether every thread of `pid` is in the stopped state (`T` in `/proc`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state == 'T' || state == 't')
        })
    })
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh temporary directory for one node's data.
pub fn node_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("coffer-{prefix}-"))
        .tempdir()
        .map_err(|source| DevnetError::Spawn {
            name: prefix.to_owned(),
            source,
        })
}
