//! How busy the machine was while a point was measured, from `/proc`: the load
//! average, the CPU time other processes took, and the CPU frequency governor.
//!
//! On a shared 2-core machine one stall decides a figure, so every point records this
//! and the run warns, as hyperfine warns about outliers, when something else took a
//! meaningful share of the CPU ([`BUSY_SHARE`]).

use crate::core::clock::{self, MonoNs};
use crate::core::measure::{Figure, Measure};
use serde::{Deserialize, Serialize};

/// Other processes' share of the machine's CPU above which a point is flagged busy.
pub const BUSY_SHARE: f64 = 0.10;

/// CPU counters at one instant.
#[derive(Clone, Debug)]
pub struct CpuSample {
    at: MonoNs,
    /// Busy clock ticks of the whole machine (user, nice, system, irq, softirq, steal).
    busy_ticks: u64,
    /// Ticks stolen by the hypervisor (a noisy neighbour on a VM).
    steal_ticks: u64,
    /// Ticks of this process and its live descendants (engine children included).
    own_ticks: u64,
    loadavg_1m: Option<f64>,
}

/// The machine's load over one measured point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostLoad {
    /// Seconds the point was measured over.
    pub wall_s: f64,
    pub cpus: usize,
    /// CPU seconds this process (and its children) used.
    pub own_cpu_s: f64,
    /// CPU seconds everything else on the machine used.
    pub other_cpu_s: f64,
    /// `other_cpu_s / (wall_s × cpus)`: the share of the machine others took.
    pub other_share: f64,
    /// CPU seconds the hypervisor stole.
    pub steal_s: f64,
    pub loadavg_1m_start: Option<f64>,
    pub loadavg_1m_end: Option<f64>,
    /// `scaling_governor` of the CPUs, where the kernel shows it.
    pub governor: Option<String>,
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (+ cutime + cstime when `with_waited`) of one process, in ticks.
fn process_ticks(stat: &str, with_waited: bool) -> Option<(i32, u64)> {
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let ppid = f.get(1)?.parse().ok()?;
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let own = n(11) + n(12);
    Some((
        ppid,
        if with_waited {
            own + n(13) + n(14)
        } else {
            own
        },
    ))
}

/// Ticks of this process (with its reaped children) plus every live descendant.
fn own_tree_ticks() -> u64 {
    let me = std::process::id() as i32;
    let mut procs: Vec<(i32, i32, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((ppid, t)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| process_ticks(&s, pid == me))
            {
                procs.push((pid, ppid, t));
            }
        }
    }
    let mut tree = vec![me];
    let mut total = 0;
    // Breadth-first over the parent links: a handful of processes, a few passes.
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(pid, ppid, t) in &procs {
            if pid == parent {
                total += t;
            }
            if ppid == parent && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    total
}

/// `(busy, steal)` ticks of the whole machine from the first line of /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let f = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy = f(0) + f(1) + f(2) + f(5) + f(6) + f(7);
    (busy, f(7))
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The CPU frequency governor(s), e.g. `performance` or `powersave, performance`.
pub fn governor() -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/devices/system/cpu")
        .ok()?
        .flatten()
        .filter_map(|e| {
            std::fs::read_to_string(e.path().join("cpufreq/scaling_governor"))
                .ok()
                .map(|g| g.trim().to_string())
        })
        .collect();
    found.sort();
    found.dedup();
    (!found.is_empty()).then(|| found.join(", "))
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let (busy_ticks, steal_ticks) = machine_ticks();
        CpuSample {
            at: clock::now(),
            busy_ticks,
            steal_ticks,
            own_ticks: own_tree_ticks(),
            loadavg_1m: loadavg(),
        }
    }

    /// The load between `self` (start) and `end`.
    pub fn until(&self, end: &CpuSample) -> HostLoad {
        let hz = ticks_per_s();
        let wall_s = end.at.since(self.at) as f64 / 1e9;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let busy = end.busy_ticks.saturating_sub(self.busy_ticks) as f64 / hz;
        let own = end.own_ticks.saturating_sub(self.own_ticks) as f64 / hz;
        let other = (busy - own).max(0.0);
        HostLoad {
            wall_s,
            cpus,
            own_cpu_s: own,
            other_cpu_s: other,
            other_share: if wall_s > 0.0 {
                (other / (wall_s * cpus as f64)).min(1.0)
            } else {
                0.0
            },
            steal_s: end.steal_ticks.saturating_sub(self.steal_ticks) as f64 / hz,
            loadavg_1m_start: self.loadavg_1m,
            loadavg_1m_end: end.loadavg_1m,
            governor: governor(),
        }
    }
}

impl HostLoad {
    pub fn is_busy(&self) -> bool {
        self.other_share > BUSY_SHARE
    }
}

impl Measure for HostLoad {
    const NAME: &'static str = "host_load";
    const DEFINITION: &'static str = "the machine while the point was measured, from /proc: \
        other_cpu_share = CPU time of every process outside the harness and its engine \
        children / (wall time × CPUs) (percent); steal = CPU time the hypervisor took (s); \
        load average (1 min) at the start and end; the CPU frequency governor where visible. \
        A point is flagged busy when others took more than 10 % of the machine";

    fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("other_cpu_share_pct", Some(self.other_share * 100.0), "%")
                .column("others CPU%", 0),
            Figure::new("other_cpu_s", Some(self.other_cpu_s), "s"),
            Figure::new("own_cpu_s", Some(self.own_cpu_s), "s"),
            Figure::new("steal_s", Some(self.steal_s), "s"),
            Figure::new("loadavg_1m_start", self.loadavg_1m_start, ""),
            Figure::new("loadavg_1m_end", self.loadavg_1m_end, ""),
        ]
    }

    fn warning(&self) -> Option<String> {
        self.is_busy().then(|| {
            format!(
                "other processes took {:.0} % of the machine's CPU (load average {})",
                self.other_share * 100.0,
                self.loadavg_1m_end
                    .map_or_else(|| "unknown".into(), |l| format!("{l:.2}"))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let stat = "42 (my (odd) proc) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 3 4 20 0 1 0";
        assert_eq!(process_ticks(stat, false), Some((7, 300)));
        assert_eq!(process_ticks(stat, true), Some((7, 307)));
        assert_eq!(process_ticks("garbage", false), None);
    }

    /// A shell loop of `n` iterations with no process of its own (arithmetic only).
    fn spin(n: u64) -> String {
        format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done")
    }

    #[test]
    fn a_busy_child_counts_as_own_and_a_stranger_as_other() {
        // Our own spinning child is ours.
        let start = CpuSample::now();
        let mut child = std::process::Command::new("sh")
            .args(["-c", &spin(300_000)])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mid = CpuSample::now();
        let _ = child.wait();
        let load = start.until(&mid);
        assert!(load.wall_s >= 0.29, "{load:?}");
        assert!(load.own_cpu_s > 0.1, "the child's CPU is ours: {load:?}");
        assert!(load.loadavg_1m_end.is_some());

        // A process outside our tree (its shell exits at once, so it is re-parented
        // away), spinning meanwhile: others' CPU. Other tests of this binary run in its
        // threads, so `own` is not asserted small.
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("( {} ) > /dev/null 2>&1 & echo $!", spin(50_000_000)),
            ])
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let ticks = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| process_ticks(&s, false))
                .map_or(0, |(_, t)| t)
        };
        let (start, t0) = (CpuSample::now(), ticks());
        std::thread::sleep(std::time::Duration::from_millis(400));
        let (end, t1) = (CpuSample::now(), ticks());
        // SAFETY: kill has no memory effects; the pid is the stranger just started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let load = start.until(&end);
        let stranger_s = t1.saturating_sub(t0) as f64 / ticks_per_s();
        assert!(stranger_s > 0.1, "the stranger did not run: {stranger_s} s");
        assert!(
            load.other_cpu_s >= stranger_s - 0.05,
            "the stranger's {stranger_s} s are not in others' CPU: {load:?}"
        );
        let share = load.other_cpu_s / (load.wall_s * load.cpus as f64);
        assert!(
            (load.other_share - share.min(1.0)).abs() < 1e-12,
            "{load:?}"
        );
    }
}
