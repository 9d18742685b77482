//! cgroup cpu and memory limits for native containers, v1 (one hierarchy per controller) and v2
//! (unified). Plain file operations; the container's supervisor joins the cgroups itself by writing
//! its pid to each `cgroup.procs` before starting the task, so every process of the task is inside.
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Usage;

/// cfs period used for cpu quotas (100 ms).
const CFS_PERIOD_US: u64 = 100_000;
/// `USER_HZ`: units of `cpuacct.stat`.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    /// Controller hierarchies: memory, cpu, cpuacct (deduplicated when co-mounted).
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        cpuacct: PathBuf,
    },
    /// The unified hierarchy root.
    V2 { root: PathBuf },
}

/// The cgroups of an agent: `<hierarchy>/<parent>/<container_id>`.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: Version,
    parent: String,
}

fn read_trim(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_string())
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing '{value}' to {}: {e}", path.display()),
        )
    })
}

/// Value of `key` in a flat-keyed file (`key value` lines).
fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

impl Cgroups {
    /// Finds usable cgroup hierarchies under `root` (normally `/sys/fs/cgroup`): v2 when the root is
    /// a unified hierarchy offering the memory and cpu controllers, else v1 when memory and cpu are
    /// mounted. `None` when neither is writable (not root, or no cgroups).
    pub fn detect(root: &Path, parent: &str) -> Option<Cgroups> {
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let version = if controllers.split_whitespace().any(|c| c == "memory")
            && controllers.split_whitespace().any(|c| c == "cpu")
        {
            Version::V2 {
                root: root.to_path_buf(),
            }
        } else {
            let canon = |name: &str| fs::canonicalize(root.join(name)).ok();
            let memory = canon("memory")?;
            let cpu = canon("cpu")?;
            let cpuacct = canon("cpuacct").unwrap_or_else(|| cpu.clone());
            if !memory.join("memory.limit_in_bytes").exists() {
                return None;
            }
            Version::V1 {
                memory,
                cpu,
                cpuacct,
            }
        };
        let cg = Cgroups {
            version,
            parent: parent.to_string(),
        };
        // Probe: can we create our parent cgroup?
        cg.ensure_parent().ok()?;
        Some(cg)
    }

    pub fn version_name(&self) -> &'static str {
        match self.version {
            Version::V1 { .. } => "v1",
            Version::V2 { .. } => "v2",
        }
    }

    fn hierarchies(&self) -> Vec<&Path> {
        match &self.version {
            Version::V1 {
                memory,
                cpu,
                cpuacct,
            } => {
                let mut v = vec![memory.as_path(), cpu.as_path()];
                if cpuacct != cpu {
                    v.push(cpuacct.as_path());
                }
                v
            }
            Version::V2 { root } => vec![root.as_path()],
        }
    }

    fn ensure_parent(&self) -> io::Result<()> {
        for h in self.hierarchies() {
            fs::create_dir_all(h.join(&self.parent))?;
        }
        if let Version::V2 { root } = &self.version {
            // Controllers must be enabled on every level down to the containers' parent
            // (`agora`, then `agora/<agent>`).
            write(&root.join("cgroup.subtree_control"), "+memory +cpu")?;
            let mut level = root.clone();
            for part in Path::new(&self.parent).components() {
                level.push(part);
                write(&level.join("cgroup.subtree_control"), "+memory +cpu")?;
            }
        }
        Ok(())
    }

    /// Removes this agent's parent cgroup (`agora/<id>`) when it is empty; one with children or
    /// processes stays (the kernel refuses). The shared base (`agora`) stays: another agent on the
    /// host may be creating its own parent below it at this very moment.
    pub fn remove_parent(&self) {
        for h in self.hierarchies() {
            let _ = fs::remove_dir(h.join(&self.parent));
        }
    }

    /// The containers' cgroups under this agent's parent (their directory names).
    pub fn containers(&self) -> Vec<String> {
        let dir = self.main_dir("");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    fn dir(&self, hierarchy: &Path, container_id: &str) -> PathBuf {
        hierarchy.join(&self.parent).join(container_id)
    }

    /// The directory whose `cgroup.procs` lists every process of the container.
    fn main_dir(&self, container_id: &str) -> PathBuf {
        match &self.version {
            Version::V1 { memory, .. } => self.dir(memory, container_id),
            Version::V2 { root } => self.dir(root, container_id),
        }
    }

    /// Creates the container's cgroups with its limits; returns the `cgroup.procs` files the
    /// supervisor must join.
    ///
    /// # Errors
    /// When a cgroup cannot be created or a limit cannot be written.
    pub fn create(
        &self,
        container_id: &str,
        cpus: Option<f64>,
        mem_bytes: Option<u64>,
    ) -> io::Result<Vec<PathBuf>> {
        self.ensure_parent()?;
        let mut procs = Vec::new();
        for h in self.hierarchies() {
            let d = self.dir(h, container_id);
            fs::create_dir_all(&d)?;
            procs.push(d.join("cgroup.procs"));
        }
        match &self.version {
            Version::V1 { memory, cpu, .. } => {
                if let Some(bytes) = mem_bytes {
                    let d = self.dir(memory, container_id);
                    write(&d.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes.to_string())?;
                    }
                }
                if let Some(cpus) = cpus.filter(|c| *c > 0.0) {
                    let d = self.dir(cpu, container_id);
                    write(
                        &d.join("cpu.shares"),
                        &((cpus * 1024.0).round().max(2.0) as u64).to_string(),
                    )?;
                    write(&d.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    let quota = ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Version::V2 { root } => {
                let d = self.dir(root, container_id);
                if let Some(bytes) = mem_bytes {
                    write(&d.join("memory.max"), &bytes.to_string())?;
                    let swap = d.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                if let Some(cpus) = cpus.filter(|c| *c > 0.0) {
                    let quota = ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000);
                    write(&d.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
                    let shares = (cpus * 1024.0).round().max(2.0);
                    let weight =
                        (1.0 + ((shares - 2.0) * 9999.0) / 262_142.0).clamp(1.0, 10_000.0) as u64;
                    write(&d.join("cpu.weight"), &weight.to_string())?;
                }
            }
        }
        Ok(procs)
    }

    /// Pids in the container's cgroup (empty if it does not exist).
    pub fn pids(&self, container_id: &str) -> Vec<i32> {
        fs::read_to_string(self.main_dir(container_id).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether the OOM killer killed a process of the container because of its memory limit.
    pub fn oom_killed(&self, container_id: &str) -> bool {
        let d = self.main_dir(container_id);
        match &self.version {
            Version::V1 { .. } => {
                let content = fs::read_to_string(d.join("memory.oom_control")).unwrap_or_default();
                keyed(&content, "oom_kill").unwrap_or(0) > 0
            }
            Version::V2 { .. } => {
                let content = fs::read_to_string(d.join("memory.events")).unwrap_or_default();
                keyed(&content, "oom_kill").unwrap_or(0) > 0
            }
        }
    }

    /// cpu time and memory of the container.
    ///
    /// # Errors
    /// When the cgroup files cannot be read (the container is gone).
    pub fn usage(&self, container_id: &str) -> io::Result<Usage> {
        let mut u = Usage::default();
        match &self.version {
            Version::V1 {
                memory,
                cpu,
                cpuacct,
            } => {
                let m = self.dir(memory, container_id);
                let stat = fs::read_to_string(m.join("memory.stat"))?;
                u.mem_rss_bytes = keyed(&stat, "total_rss")
                    .or_else(|| keyed(&stat, "rss"))
                    .unwrap_or(0);
                let limit: u64 = read_trim(&m.join("memory.limit_in_bytes"))?
                    .parse()
                    .unwrap_or(u64::MAX);
                u.mem_limit_bytes = (limit < (1 << 62)).then_some(limit);
                let acct = fs::read_to_string(self.dir(cpuacct, container_id).join("cpuacct.stat"))
                    .unwrap_or_default();
                u.cpus_user_time_secs = keyed(&acct, "user").unwrap_or(0) as f64 / USER_HZ;
                u.cpus_system_time_secs = keyed(&acct, "system").unwrap_or(0) as f64 / USER_HZ;
                let quota: i64 = read_trim(&self.dir(cpu, container_id).join("cpu.cfs_quota_us"))
                    .ok()
                    .and_then(|q| q.parse().ok())
                    .unwrap_or(-1);
                u.cpus_limit = (quota > 0).then(|| quota as f64 / CFS_PERIOD_US as f64);
            }
            Version::V2 { root } => {
                let d = self.dir(root, container_id);
                let stat = fs::read_to_string(d.join("memory.stat"))?;
                u.mem_rss_bytes = keyed(&stat, "anon").unwrap_or(0);
                u.mem_limit_bytes = read_trim(&d.join("memory.max"))?.parse().ok();
                let cpu = fs::read_to_string(d.join("cpu.stat")).unwrap_or_default();
                u.cpus_user_time_secs = keyed(&cpu, "user_usec").unwrap_or(0) as f64 / 1e6;
                u.cpus_system_time_secs = keyed(&cpu, "system_usec").unwrap_or(0) as f64 / 1e6;
                let max = read_trim(&d.join("cpu.max")).unwrap_or_default();
                u.cpus_limit = max
                    .split_whitespace()
                    .next()
                    .and_then(|q| q.parse::<f64>().ok())
                    .map(|q| q / CFS_PERIOD_US as f64);
            }
        }
        Ok(u)
    }

    /// SIGKILLs whatever is left in the container's cgroups and removes them. Bounded: gives up
    /// (leaving the cgroup) after a few seconds if processes refuse to die.
    pub async fn destroy(&self, container_id: &str) {
        for _ in 0..50 {
            let pids = self.pids(container_id);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for h in self.hierarchies() {
            let d = self.dir(h, container_id);
            for _ in 0..20 {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }

    /// Whether the container's cgroup exists.
    pub fn exists(&self, container_id: &str) -> bool {
        self.main_dir(container_id).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(oom, "oom_kill"), Some(2));
        assert_eq!(keyed(oom, "under_oom"), Some(0));
        assert_eq!(keyed("user 12\nsystem 3\n", "system"), Some(3));
        assert_eq!(keyed("", "user"), None);
    }
}
