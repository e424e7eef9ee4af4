//! What the bench needs from the operating system: its own CPU time and peak RSS (from `/proc/self`), the
//! open-files limit, wall-clock microseconds, and client sockets bound to a chosen loopback source address.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpSocket, TcpStream};

/// Microseconds since the Unix epoch: the clock both the publisher's `t` and the receive time use.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// CPU time (user + system) and peak resident set of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    /// Peak resident set size (`VmHWM`) in KiB.
    pub peak_rss_kib: u64,
}

impl Usage {
    /// Reads this process's usage from `/proc/self`; zeros where it cannot be read.
    pub fn now() -> Usage {
        Usage {
            cpu_s: cpu_seconds(),
            peak_rss_kib: status_kib("VmHWM"),
        }
    }
}

/// User + system CPU seconds of this process, from fields 14 and 15 of `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    process_cpu_seconds("self").unwrap_or(0.0)
}

/// User + system CPU seconds of process `pid` (or `self`), from fields 14 and 15 of `/proc/<pid>/stat`;
/// `None` when it cannot be read (no such process).
pub fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis start at field 3.
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 {
        per_second as f64
    } else {
        100.0
    };
    Some((ticks(11) + ticks(12)) / per_second)
}

/// A `kB` field of `/proc/self/status`, 0 when absent.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub use crate::process::raise_open_files_limit;

/// Number of CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The `n`-th loopback source address, 127.0.0.1 + n (wrapping inside 127.0.0.0/8).
pub fn loopback_source(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 1)) + n % 0x00FF_FFFE)
}

/// Opens a TCP connection to `addr`, from `source` when given (IPv4 only), with `TCP_NODELAY`.
///
/// A bound source uses `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the port at connect time per
/// (source, destination) pair: each source address then has the whole ephemeral port range to itself.
pub async fn connect_from(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            bind_address_no_port(&socket)?;
            socket.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux); elsewhere binding a source address just takes a port early.
fn bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let on: libc::c_int = 1;
        // SAFETY: the fd is a live socket owned by `socket`; the option value is a c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_proc() {
        let usage = Usage::now();
        assert!(usage.peak_rss_kib > 0);
        assert!(usage.cpu_s >= 0.0);
    }

    #[test]
    fn loopback_sources() {
        assert_eq!(loopback_source(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(loopback_source(3), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(loopback_source(255), Ipv4Addr::new(127, 0, 1, 0));
    }
}
