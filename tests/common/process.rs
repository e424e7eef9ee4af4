//! The real `tidings` binary as a child process with a data directory, for tests that kill it with SIGKILL and
//! start it again on the same directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{API_KEY, SECRET};

/// A `tidings serve` process (with `--data-dir`, or other arguments), stopped by its pid (SIGKILL) when dropped.
pub struct DataDirNode {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl DataDirNode {
    /// Starts a node on `listen` (port 0 for any) keeping its data in `dir`, with `extra` serve arguments.
    pub fn start(listen: &str, dir: &Path, extra: &[&std::ffi::OsStr]) -> DataDirNode {
        let mut args = vec![std::ffi::OsStr::new("--data-dir"), dir.as_os_str()];
        args.extend_from_slice(extra);
        DataDirNode::spawn(listen, &args)
    }

    /// Starts a node on `listen` with the serve arguments `args` (besides the test secret and API key).
    pub fn spawn(listen: &str, args: &[&std::ffi::OsStr]) -> DataDirNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["serve", "--listen", listen, "--jwt-secret", SECRET])
            .args(["--api-key", API_KEY])
            .args(args)
            .env_remove("TIDINGS_CONFIG")
            .env_remove("TIDINGS_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("tidings listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        DataDirNode { child, addr }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for DataDirNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
