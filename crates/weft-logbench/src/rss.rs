//! The broker's resident memory, sampled from /proc/PID/status while a run
//! is under way, and its disk writes from /proc/PID/io.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// VmRSS of `pid` in kB, or None when the process or the line is missing.
pub fn read_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.trim_start_matches("VmRSS:").split_whitespace().next()?.parse().ok()
}

/// `write_bytes` of /proc/PID/io: bytes of page cache the process (all its
/// threads) caused to be written to storage, counted when a page is
/// dirtied; None when unreadable (another user's process, or it is gone).
pub fn read_write_bytes(pid: u32) -> Option<u64> {
    parse_io_field(&std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?, "write_bytes")
}

fn parse_io_field(io: &str, field: &str) -> Option<u64> {
    io.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
}

/// Samples until stopped; reports the first sample and the peak.
pub struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<(Option<u64>, Option<u64>)>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let first = read_rss_kb(pid);
            let mut peak = first;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Some(kb) = read_rss_kb(pid) {
                    peak = Some(peak.map_or(kb, |p| p.max(kb)));
                }
            }
            if let Some(kb) = read_rss_kb(pid) {
                peak = Some(peak.map_or(kb, |p| p.max(kb)));
            }
            (first, peak)
        });
        Sampler { stop, task }
    }

    /// (RSS at start, peak RSS), in kB.
    pub async fn stop(self) -> (Option<u64>, Option<u64>) {
        let _ = self.stop.send(());
        self.task.await.unwrap_or((None, None))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let s = "Name:\tweft\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(s), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: lots kB\n"), None);
    }

    #[test]
    fn parses_io() {
        let io = "rchar: 10\nwchar: 20\nread_bytes: 0\nwrite_bytes: 8192\ncancelled_write_bytes: 4096\n";
        assert_eq!(parse_io_field(io, "write_bytes"), Some(8192));
        assert_eq!(parse_io_field(io, "cancelled_write_bytes"), Some(4096));
        assert_eq!(parse_io_field("x", "write_bytes"), None);
        assert!(read_write_bytes(std::process::id()).is_some());
    }

    #[tokio::test]
    async fn samples_this_process() {
        let s = Sampler::start(std::process::id(), Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (first, peak) = s.stop().await;
        assert!(first.unwrap() > 0);
        assert!(peak.unwrap() >= first.unwrap());
    }
}
