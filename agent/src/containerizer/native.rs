//! The native containerizer: each task runs under a small supervising shell.
//!
//! ```text
//! agent ──spawn (setsid; unshare mnt,uts,ipc,pid)──▶ supervisor  /bin/sh, joins the cgroups,
//!                                                     │              records the exit status
//!                                                     └─▶ init      pid 1 of the new PID namespace,
//!                                                          │         mounts /proc, exits with the
//!                                                          │         task's status
//!                                                          └─▶ task  the command, as the task's
//!                                                                    user (setpriv … -- argv)
//! ```
//! The supervisor and the init stay root: joining cgroups, mounting `/proc`, setting the hostname
//! and writing the exit status into the agent's root-only `meta` need it. Only the task drops its
//! privileges, last, through `setpriv --reuid --regid --groups` (util-linux), which execs the
//! command: the task's pid is the one the kill path signals, and nothing of the supervisor's
//! protocol changes, so recovery and kills work as before.
//! The supervisor lives in its own session, outside the agent's process group, so tasks survive the
//! agent. It writes the task's exit status to `meta/containers/<id>/exit_status` (one small write,
//! with shell builtins only; a reader that finds it empty reads again later);
//! the agent writes the supervisor's pid and start time next to it. A restarted agent reads these to
//! learn whether the task still runs or how it ended. Without root there are no namespaces and no
//! cgroups: the supervisor is a plain session leader and a warning is logged.
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::cgroups::Cgroups;
use super::{Containerizer, ContainerizerKind, LaunchSpec, Recovered, Usage};
use crate::checkpoint::write_atomic;
use crate::command::argv;
use crate::error::ContainerError;
use crate::lifecycle::Termination;
use crate::paths::Layout;

/// How often a container's supervisor is polled for its end.
const POLL: Duration = Duration::from_millis(100);

/// `$1` meta dir, `$2` cgroup.procs files (space separated), `$3` "1" to mount /proc, `$4` hostname,
/// `$5` the agent's work dir to hide from the task ("" for none), `$6` the task's sandbox, `$7` a
/// hosts file to bind over `/etc/hosts` in the task's mount namespace ("" for none: the task's host
/// aliases, see [`hosts_file`]), then the task's argv. Once the namespace's init (the first child) exits, nothing can fork into
/// that PID namespace any more, so the supervisor uses only shell builtins after starting it, and
/// the hostname is set by the init. The supervisor shares the task's cgroups, so it shields itself
/// from the OOM killer (oom_score_adj -1000; the init puts the task back to 0): it must survive the
/// task's memory limit to record how the task ended.
///
/// Sandbox isolation (the init, in a mount namespace of its own — `unshare --mount`, so that the
/// supervisor keeps the agent's view and can still write the exit status into `meta` — before it
/// starts the task):
/// a tmpfs (mode 0711) is mounted over the work dir, so that every other sandbox and the agent's
/// checkpoints vanish, then the task's own sandbox — still the init's working directory, which the
/// tmpfs does not move — is bind-mounted back at its path (util-linux's `mount -c`: "." is not
/// canonicalised to the now hidden path; busybox's mount, in the FROM-scratch agent images, has
/// no `-c` but binds `/proc/self/cwd` as the kernel resolves it). The directories leading to it are 0711: the task cannot list the work dir.
/// The agent, outside the namespace, still sees the real tree (stdout/stderr are served from there).
const SUPERVISOR: &str = r#"meta=$1; procs=$2; ns=$3; host=$4; hide=$5; sb=$6; hosts=$7; shift 7
echo -1000 2>/dev/null >/proc/self/oom_score_adj
for f in $procs; do
  echo $$ > "$f" || { echo "agora: cannot join cgroup $f" >&2; echo 125 > "$meta/exit_status"; exit 125; }
done
init='echo 0 2>/dev/null >/proc/self/oom_score_adj; if [ "$1" = 1 ]; then mount -t proc proc /proc 2>/dev/null; if [ -n "$2" ]; then hostname "$2"; fi; fi; if [ -n "$5" ]; then mount --bind "$5" /etc/hosts || { echo "agora: cannot bind the hosts file $5 over /etc/hosts" >&2; exit 125; }; fi; if [ -n "$3" ]; then mount -t tmpfs -o mode=0711,size=1m,nosuid,nodev agora-hidden "$3" && (umask 066; mkdir -p "$4") && { mount -c --bind . "$4" 2>/dev/null || mount --bind /proc/self/cwd "$4"; } && cd "$4" || { echo "agora: cannot hide the agent work dir $3 from the task" >&2; exit 125; }; fi; shift 5; "$@"; exit $?'
if [ -n "$hide" ]; then
  unshare --mount --propagation private /bin/sh -c "$init" agora-init "$ns" "$host" "$hide" "$sb" "$hosts" "$@" &
else
  /bin/sh -c "$init" agora-init "$ns" "$host" "" "$sb" "" "$@" &
fi
wait $!
s=$?
echo $s > "$meta/exit_status"
exit $s
"#;

/// The host's hosts file, which a task with host aliases sees with its aliases added.
const HOST_HOSTS: &str = "/etc/hosts";

/// Longest part of the host's hosts file copied into a task's (a hosts file is small; this only
/// bounds what the agent writes per task).
const MAX_HOST_HOSTS_BYTES: usize = 1 << 20;

/// A task's hosts file: the host's entries (`host`, at most 1 MiB of it, whole lines), then one
/// line per alias to the agent's mesh address.
pub fn hosts_file(host: &str, aliases: &super::HostAliases) -> String {
    let mut out = String::with_capacity(host.len().min(MAX_HOST_HOSTS_BYTES) + 64);
    let mut kept = host;
    if kept.len() > MAX_HOST_HOSTS_BYTES {
        let mut end = MAX_HOST_HOSTS_BYTES;
        while !kept.is_char_boundary(end) {
            end -= 1;
        }
        kept = &kept[..kept[..end].rfind('\n').map_or(0, |i| i + 1)];
    }
    out.push_str(kept);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("# agora: the routing mesh of this agent, for the task's host aliases\n");
    out.push_str(&aliases.hosts_lines());
    out
}

/// See the module documentation.
pub struct NativeContainerizer {
    layout: Layout,
    cgroups: Option<Cgroups>,
    namespaces: bool,
    /// Supervisors spawned by this process, kept to reap them.
    children: Mutex<HashMap<String, tokio::process::Child>>,
    /// Every cgroup under the parent is this agent's (see [`NativeContainerizer::new`]).
    owns_parent: bool,
}

/// `(state, ppid, starttime)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

/// Whether `pid` is a live (not zombie) process that started at `start_time`.
fn alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((state, _, st)) if st == start_time && state != 'Z' && state != 'X')
}

/// All descendants of `root` (not `root` itself), by scanning `/proc`.
pub(crate) fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((_, ppid, _)) = proc_stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

fn signal(pids: impl IntoIterator<Item = i32>, sig: Signal) {
    for pid in pids {
        if let Err(e) = kill(Pid::from_raw(pid), sig) {
            debug!(pid, ?sig, error = %e, "signal not delivered");
        }
    }
}

impl NativeContainerizer {
    /// `cgroup_root` is normally `/sys/fs/cgroup`; cgroups are created under
    /// `<root>/<hierarchy>/<parent>/`. With `owns_parent`, every cgroup under the parent is this
    /// agent's (its own parent, `agora/<id>`), so [`Containerizer::orphans`] may list them.
    pub fn new(layout: Layout, cgroup_root: &Path, cgroup_parent: &str, owns_parent: bool) -> Self {
        let root = nix::unistd::geteuid().is_root();
        let cgroups = if root {
            Cgroups::detect(cgroup_root, cgroup_parent)
        } else {
            None
        };
        if !root {
            warn!("the agent is not running as root: native tasks run as plain process groups, without namespaces or cgroup limits");
        } else if cgroups.is_none() {
            warn!(root = %cgroup_root.display(), "no usable cgroup hierarchy: native tasks run without cpu and memory limits");
        }
        NativeContainerizer {
            layout,
            cgroups,
            namespaces: root,
            children: Mutex::new(HashMap::new()),
            owns_parent,
        }
    }

    /// Which cgroup version limits tasks (`v1`, `v2`), if any.
    pub fn cgroup_version(&self) -> Option<&'static str> {
        self.cgroups.as_ref().map(Cgroups::version_name)
    }

    fn meta(&self, container_id: &str) -> PathBuf {
        self.layout.container_meta(container_id)
    }

    fn exit_status(&self, container_id: &str) -> Option<i32> {
        fs::read_to_string(self.meta(container_id).join("exit_status"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `(pid, start_time)` of the supervisor.
    fn supervisor(&self, container_id: &str) -> Option<(i32, u64)> {
        let s = fs::read_to_string(self.meta(container_id).join("pid")).ok()?;
        let mut it = s.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }

    fn oom(&self, container_id: &str) -> bool {
        self.cgroups
            .as_ref()
            .is_some_and(|c| c.oom_killed(container_id))
    }

    fn ended(&self, container_id: &str, code: Option<i32>, message: Option<String>) -> Termination {
        Termination {
            exit_code: code,
            oom_killed: self.oom(container_id),
            message,
        }
    }

    /// Reaps our own child if it has exited; returns its exit status then.
    fn reap(&self, container_id: &str) -> Option<Option<i32>> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        let child = children.get_mut(container_id)?;
        match child.try_wait() {
            Ok(Some(status)) => {
                children.remove(container_id);
                use std::os::unix::process::ExitStatusExt;
                Some(status.code().or_else(|| status.signal().map(|s| 128 + s)))
            }
            Ok(None) => None,
            Err(_) => Some(None),
        }
    }

    async fn do_launch(&self, spec: &LaunchSpec) -> Result<(), ContainerError> {
        let argv = argv(spec.task.command.as_ref())?;
        let mut task_argv = crate::user::drop_privileges_argv(spec.user.as_ref())
            .map_err(ContainerError::Launch)?;
        task_argv.extend(argv.iter().cloned());
        let meta = self.meta(&spec.container_id);
        fs::create_dir_all(&meta).map_err(|e| ContainerError::io(&meta, e))?;
        let _ = fs::remove_file(meta.join("exit_status"));
        let procs = match &self.cgroups {
            Some(cg) => {
                let mem = spec
                    .mem_mib
                    .filter(|m| *m > 0.0)
                    .map(|m| (m * 1024.0 * 1024.0) as u64);
                cg.create(&spec.container_id, spec.cpus, mem)
                    .map_err(|e| ContainerError::Launch(format!("cannot set up cgroups: {e}")))?
            }
            None => Vec::new(),
        };
        let procs: Vec<String> = procs.iter().map(|p| p.display().to_string()).collect();
        let open = |name: &str| -> Result<fs::File, ContainerError> {
            let p = spec.sandbox.join(name);
            // Never through a link: the sandbox belongs to the task's user, and the supervisor
            // opening these is root.
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(|e| ContainerError::io(&p, e))
        };
        let (stdout, stderr) = (open("stdout")?, open("stderr")?);
        let hostname = spec
            .task
            .container
            .as_ref()
            .map(|c| c.hostname.clone())
            .unwrap_or_default();
        // Absolute, resolved paths: the init mounts over the one and binds the other by path.
        let sandbox =
            fs::canonicalize(&spec.sandbox).map_err(|e| ContainerError::io(&spec.sandbox, e))?;
        let hide = if self.namespaces {
            let work = fs::canonicalize(&spec.work_dir)
                .map_err(|e| ContainerError::io(&spec.work_dir, e))?;
            if !sandbox.starts_with(&work) || sandbox == work {
                return Err(ContainerError::Launch(format!(
                    "the sandbox {} is not below the work dir {}",
                    sandbox.display(),
                    work.display()
                )));
            }
            Some(work)
        } else {
            None
        };
        let hosts = match (&spec.host_aliases, self.namespaces) {
            (Some(aliases), true) => {
                let path = meta.join("hosts");
                let host = fs::read_to_string(HOST_HOSTS).unwrap_or_else(|e| {
                    warn!(error = %e, "cannot read {HOST_HOSTS}: the task's hosts file has only its aliases");
                    String::new()
                });
                write_atomic(&path, hosts_file(&host, aliases).as_bytes()).map_err(|e| {
                    ContainerError::Launch(format!("cannot write the task's hosts file: {e}"))
                })?;
                // Readable by the task's user whatever the agent's umask (it holds no secret).
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                    .map_err(|e| ContainerError::io(&path, e))?;
                Some(path)
            }
            (Some(aliases), false) => {
                warn!(container = %spec.container_id, names = ?aliases.names, "the agent is not root: the task shares the host's /etc/hosts, so its host aliases are not applied");
                None
            }
            (None, _) => None,
        };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("agora-supervisor")
            .arg(&meta)
            .arg(procs.join(" "))
            .arg(if self.namespaces { "1" } else { "0" })
            .arg(if self.namespaces {
                hostname.as_str()
            } else {
                ""
            })
            .arg(hide.as_deref().unwrap_or(Path::new("")))
            .arg(&sandbox)
            .arg(hosts.as_deref().unwrap_or(Path::new("")))
            .args(&task_argv)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(&spec.env)
            .current_dir(&sandbox)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        crate::sys::detach_and_isolate(&mut cmd, self.namespaces);
        let child = cmd.spawn().map_err(|e| {
            ContainerError::Launch(format!(
                "cannot start the supervisor for '{}': {e}",
                argv.join(" ")
            ))
        })?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| ContainerError::Launch("the supervisor exited at once".into()))?;
        let start = proc_stat(pid).map(|(_, _, s)| s).unwrap_or(0);
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.container_id.clone(), child);
        write_atomic(&meta.join("pid"), format!("{pid} {start}\n").as_bytes()).map_err(|e| {
            ContainerError::Launch(format!("cannot checkpoint the supervisor's pid: {e}"))
        })?;
        debug!(container = %spec.container_id, pid, cgroups = ?self.cgroup_version(), "native container started");
        Ok(())
    }

    async fn do_wait(&self, container_id: &str) -> Result<Termination, ContainerError> {
        loop {
            if let Some(code) = self.exit_status(container_id) {
                let _ = self.reap(container_id);
                return Ok(self.ended(container_id, Some(code), None));
            }
            // `Some(status)` once the supervisor is gone: its own exit status when it is our child.
            let gone = match self.reap(container_id) {
                Some(status) => Some(status),
                None => {
                    let ours = self
                        .children
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains_key(container_id);
                    let dead = !ours
                        && self
                            .supervisor(container_id)
                            .is_none_or(|(pid, st)| !alive(pid, st));
                    dead.then_some(None)
                }
            };
            if let Some(reaped) = gone {
                // The supervisor records the status before it exits: look once more.
                if let Some(code) = self.exit_status(container_id) {
                    return Ok(self.ended(container_id, Some(code), None));
                }
                // It lives in the task's cgroups, so when the task hits its memory limit the OOM
                // killer may take the supervisor too, or its write of the status may fail. It
                // exits with the task's status (`exit $s`), or 128 + n when it was killed by
                // signal n: either way the best answer there is.
                if let Some(code) = reaped {
                    debug!(container = %container_id, code, "supervisor exited without recording the status; using its own");
                    return Ok(self.ended(container_id, Some(code), None));
                }
                return Ok(self.ended(
                    container_id,
                    None,
                    Some("the task's supervisor died without recording the exit status".into()),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn do_kill(&self, container_id: &str, grace: Duration) -> Result<(), ContainerError> {
        let Some((sup, start)) = self.supervisor(container_id) else {
            // Never started, or the pid was not checkpointed: kill whatever is in its cgroup.
            if let Some(cg) = &self.cgroups {
                signal(cg.pids(container_id), Signal::SIGKILL);
            }
            return Ok(());
        };
        if !alive(sup, start) {
            return Ok(());
        }
        // SIGTERM to the task's processes, not to the supervisor nor to the namespace's init (which
        // would ignore it anyway, having no handler): the init exits with the task's status.
        // The task's processes now and, during the grace period, any that appear later: a kill
        // that lands while the init is still setting up (mounting /proc, hiding the work dir)
        // finds no task yet, and would otherwise wait out the whole grace period for nothing.
        let task_pids = || -> Vec<i32> {
            descendants(sup)
                .into_iter()
                .filter(|p| proc_stat(*p).is_some_and(|(_, ppid, _)| ppid == sup))
                .flat_map(descendants)
                .collect()
        };
        let mut termed: HashSet<i32> = HashSet::new();
        let deadline = crate::limits::tokio_instant_after(tokio::time::Instant::now(), grace);
        loop {
            let new: Vec<i32> = task_pids()
                .into_iter()
                .filter(|p| termed.insert(*p))
                .collect();
            if !new.is_empty() {
                debug!(container = %container_id, tasks = ?new, "SIGTERM");
                signal(new, Signal::SIGTERM);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            if self.exit_status(container_id).is_some() || !alive(sup, start) {
                return Ok(());
            }
            tokio::time::sleep(POLL.min(grace)).await;
        }
        // Grace is over: SIGKILL everything but the supervisor, which records the status (137).
        let mut rest: HashSet<i32> = descendants(sup).into_iter().collect();
        if let Some(cg) = &self.cgroups {
            rest.extend(cg.pids(container_id));
        }
        rest.remove(&sup);
        debug!(container = %container_id, ?rest, "grace period over: SIGKILL");
        signal(rest, Signal::SIGKILL);
        Ok(())
    }

    fn do_recover(&self, container_id: &str) -> Recovered {
        if let Some(code) = self.exit_status(container_id) {
            return Recovered::Terminated(self.ended(container_id, Some(code), None));
        }
        match self.supervisor(container_id) {
            Some((pid, st)) if alive(pid, st) => Recovered::Running,
            Some(_) => {
                if let Some(code) = self.exit_status(container_id) {
                    return Recovered::Terminated(self.ended(container_id, Some(code), None));
                }
                Recovered::Terminated(self.ended(
                    container_id,
                    None,
                    Some("the task's supervisor died while the agent was down".into()),
                ))
            }
            None => Recovered::Missing,
        }
    }
}

impl Containerizer for NativeContainerizer {
    fn kind(&self) -> ContainerizerKind {
        ContainerizerKind::Native
    }

    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> BoxFuture<'a, Result<(), ContainerError>> {
        self.do_launch(spec).boxed()
    }

    fn wait<'a>(
        &'a self,
        container_id: &'a str,
        _sandbox: &'a Path,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        self.do_wait(container_id).boxed()
    }

    fn kill<'a>(
        &'a self,
        container_id: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<(), ContainerError>> {
        self.do_kill(container_id, grace).boxed()
    }

    fn recover<'a>(
        &'a self,
        container_id: &'a str,
    ) -> BoxFuture<'a, Result<Recovered, ContainerError>> {
        async move { Ok(self.do_recover(container_id)) }.boxed()
    }

    fn usage<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, Result<Usage, ContainerError>> {
        async move {
            match &self.cgroups {
                Some(cg) => cg
                    .usage(container_id)
                    .map_err(|e| ContainerError::io(container_id, e)),
                None => Ok(Usage::default()),
            }
        }
        .boxed()
    }

    fn retire(&self) {
        if let (Some(cg), true) = (&self.cgroups, self.owns_parent) {
            cg.remove_parent();
        }
    }

    fn orphans<'a>(
        &'a self,
        known: &'a std::collections::HashSet<String>,
    ) -> BoxFuture<'a, Vec<String>> {
        async move {
            let mut found: Vec<String> = match (&self.cgroups, self.owns_parent) {
                (Some(cg), true) => cg.containers(),
                _ => Vec::new(),
            };
            // Supervisor metadata is under this agent's own work dir in any case.
            if let Ok(entries) = fs::read_dir(self.layout.meta().join("containers")) {
                found.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .filter_map(|e| e.file_name().into_string().ok()),
                );
            }
            found.sort();
            found.dedup();
            found.retain(|id| !known.contains(id));
            found
        }
        .boxed()
    }

    fn destroy<'a>(&'a self, container_id: &'a str) -> BoxFuture<'a, ()> {
        async move {
            if let Some(cg) = &self.cgroups {
                cg.destroy(container_id).await;
            }
            let _ = self.reap(container_id);
            let meta = self.meta(container_id);
            if let Err(e) = fs::remove_dir_all(&meta) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(path = %meta.display(), error = %e, "cannot remove container metadata");
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::HostAliases;

    #[test]
    fn a_task_hosts_file_keeps_the_host_entries_and_adds_the_aliases() {
        let aliases = HostAliases {
            names: vec!["db".into(), "shop_db".into()],
            ip: "127.0.0.2".parse().expect("ip"),
            bridge_ip: None,
        };
        let f = hosts_file("127.0.0.1\tlocalhost\n::1 localhost", &aliases);
        assert_eq!(
            f,
            "127.0.0.1\tlocalhost\n::1 localhost\n# agora: the routing mesh of this agent, for the task's host aliases\n127.0.0.2\tdb\n127.0.0.2\tshop_db\n"
        );
        // A mesh on every address: the task reaches it on loopback.
        let any = HostAliases {
            names: vec!["db".into()],
            ip: "0.0.0.0".parse().expect("ip"),
            bridge_ip: None,
        };
        assert!(hosts_file("", &any).ends_with("127.0.0.1\tdb\n"));
        // A huge host file is cut at a line end.
        let big = "10.0.0.1 x\n".repeat(MAX_HOST_HOSTS_BYTES / 11 + 10);
        let f = hosts_file(&big, &aliases);
        assert!(f.len() <= MAX_HOST_HOSTS_BYTES + 200);
        assert!(f.contains("\n# agora:"));
        assert!(f.ends_with("127.0.0.2\tshop_db\n"));
    }
}
