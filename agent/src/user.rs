//! Which Unix user a task runs as, and handing its sandbox over to that user.
//!
//! The user is the task's `CommandInfo.user`, else its framework's `FrameworkInfo.user`, else the
//! agent's `--default-task-user` (`nobody`). Root is never chosen silently: a task that would run
//! as uid 0 (by the name `root`, a numeric `0`, or any alias of uid 0) is refused unless the agent
//! was started with `--allow-root-tasks`.
//!
//! ```text
//!  command.user ─┐
//!  framework.user ┼─▶ choose ──▶ lookup (passwd) ──▶ uid 0? ──▶ TaskUser {uid, gid, groups}
//!  default user ──┘                                   └─ refused unless --allow-root-tasks
//! ```
//! The agent (root) creates the sandbox and its `stdout`/`stderr`, writes what the task needs into
//! it, then gives the whole tree to the task user; commands that must not run with the agent's
//! privileges (the task itself, command health checks on the host, local copies and archive
//! extraction of the fetcher) are prefixed with [`drop_privileges_argv`] (`setpriv`, util-linux),
//! which sets the gid, the user's supplementary groups and the uid before it execs them.
//! When the agent itself is not root, no user can be switched to: tasks run as the agent's user.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The user tasks run as when neither the task nor its framework names one.
pub const DEFAULT_TASK_USER: &str = "nobody";

/// How the agent picks task users (`--default-task-user`, `--allow-root-tasks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    /// `--default-task-user`.
    pub default_user: String,
    /// `--allow-root-tasks`: a task may run as root when it asks for it.
    pub allow_root: bool,
}

impl Default for UserPolicy {
    fn default() -> Self {
        UserPolicy {
            default_user: DEFAULT_TASK_USER.into(),
            allow_root: false,
        }
    }
}

/// A resolved task user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from the group database, as `initgroups` sets them).
    pub groups: Vec<u32>,
}

impl TaskUser {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// Where the chosen user name came from, so that errors name the field to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSource {
    /// The task's `command.user` (for a custom executor: the executor's command, else the task's).
    Command,
    /// The framework's `FrameworkInfo.user`.
    Framework,
    /// The agent's `--default-task-user`.
    AgentDefault,
}

impl UserSource {
    pub fn field(self) -> &'static str {
        match self {
            UserSource::Command => "command.user",
            UserSource::Framework => "framework.user",
            UserSource::AgentDefault => "the agent's --default-task-user",
        }
    }
}

/// Why a task cannot run as the user it would get.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The task would run as uid 0 and the agent was not started with `--allow-root-tasks`.
    #[error("the task would run as root ({} '{name}') but this agent refuses root tasks: start the agent with --allow-root-tasks to allow them", .from.field())]
    RootRefused { name: String, from: UserSource },
    /// No such user on this agent.
    #[error("unknown user '{name}' ({}): no such user on this agent", .from.field())]
    Unknown { name: String, from: UserSource },
    /// The name cannot be a Unix user name.
    #[error("{} '{name}' is not a valid user name", .from.field())]
    Invalid { name: String, from: UserSource },
    /// The user database could not be read.
    #[error("cannot look up user '{name}': {message}")]
    Lookup { name: String, message: String },
}

/// Picks the user name: the command's, else the framework's, else the agent's default. Pure.
pub fn choose<'a>(
    command_user: &'a str,
    framework_user: &'a str,
    policy: &'a UserPolicy,
) -> (&'a str, UserSource) {
    if !command_user.trim().is_empty() {
        (command_user.trim(), UserSource::Command)
    } else if !framework_user.trim().is_empty() {
        (framework_user.trim(), UserSource::Framework)
    } else {
        (policy.default_user.trim(), UserSource::AgentDefault)
    }
}

/// Resolves the user a task runs as. `lookup` finds a name (or a numeric uid) in the user database;
/// it is a parameter so that the decision can be tested without touching `/etc/passwd`.
///
/// # Errors
/// [`UserError::RootRefused`] for uid 0 without `allow_root`, [`UserError::Unknown`],
/// [`UserError::Invalid`], [`UserError::Lookup`].
pub fn resolve_with(
    command_user: &str,
    framework_user: &str,
    policy: &UserPolicy,
    lookup: impl Fn(&str) -> Result<Option<TaskUser>, String>,
) -> Result<TaskUser, UserError> {
    let (name, source) = choose(command_user, framework_user, policy);
    // ':' would be read as uid:gid by Docker, '/' and NUL cannot be in passwd names; empty
    // means the default user itself is empty.
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == ':' || c == '/' || c == '\0' || c.is_whitespace())
    {
        return Err(UserError::Invalid {
            name: name.into(),
            from: source,
        });
    }
    let refused = || UserError::RootRefused {
        name: name.into(),
        from: source,
    };
    // Refuse before looking anything up: the answer does not depend on the database.
    if (name == "root" || name == "0") && !policy.allow_root {
        return Err(refused());
    }
    let user = lookup(name)
        .map_err(|message| UserError::Lookup {
            name: name.into(),
            message,
        })?
        .ok_or_else(|| UserError::Unknown {
            name: name.into(),
            from: source,
        })?;
    if user.is_root() && !policy.allow_root {
        return Err(refused());
    }
    Ok(user)
}

/// Looks a user up in this machine's user database, by name or else, for an all-digit name, by uid.
///
/// # Errors
/// The database could not be read.
pub fn lookup_system(name: &str) -> Result<Option<TaskUser>, String> {
    use nix::unistd::{Gid, Uid, User};
    let found = match User::from_name(name).map_err(|e| e.to_string())? {
        Some(u) => Some(u),
        None => match name.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(|e| e.to_string())?,
            Err(_) => None,
        },
    };
    let Some(u) = found else { return Ok(None) };
    let groups = std::ffi::CString::new(u.name.clone())
        .ok()
        .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
        .unwrap_or_else(|| vec![u.gid])
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    Ok(Some(TaskUser {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        groups,
    }))
}

/// [`resolve_with`] against this machine's user database.
///
/// # Errors
/// See [`resolve_with`].
pub fn resolve(
    command_user: &str,
    framework_user: &str,
    policy: &UserPolicy,
) -> Result<TaskUser, UserError> {
    resolve_with(command_user, framework_user, policy, lookup_system)
}

/// Whether this process can switch users (it is root).
pub fn can_switch_users() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Where `setpriv` is, looked up in the standard directories (the agent's own `PATH` may be odd
/// under systemd).
pub fn setpriv() -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join("setpriv"))
        .find(|p| p.is_file())
}

/// The argv prefix that runs a command as `user`: `setpriv --reuid U --regid G --groups … --`.
/// Empty when no switch is needed (root task, or the agent is not root).
///
/// # Errors
/// A message when `setpriv` (util-linux) is not installed.
pub fn drop_privileges_argv(user: Option<&TaskUser>) -> Result<Vec<String>, String> {
    let Some(u) = user.filter(|u| !u.is_root() && can_switch_users()) else {
        return Ok(Vec::new());
    };
    let setpriv = setpriv().ok_or_else(|| {
        format!(
            "cannot run the task as user '{}': setpriv (util-linux) is not installed on this agent",
            u.name
        )
    })?;
    let mut groups: Vec<u32> = u.groups.clone();
    if groups.is_empty() {
        groups.push(u.gid);
    }
    Ok(vec![
        setpriv.display().to_string(),
        format!("--reuid={}", u.uid),
        format!("--regid={}", u.gid),
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        "--".into(),
    ])
}

/// Gives a sandbox (and everything in it) to the task user, without following symbolic links, and
/// makes it private to that user (0750). Nothing to do when no user switch happens.
///
/// # Errors
/// The I/O error and the path.
pub fn hand_over(sandbox: &Path, user: Option<&TaskUser>) -> Result<(), (PathBuf, std::io::Error)> {
    let Some(u) = user.filter(|_| can_switch_users()) else {
        return Ok(());
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sandbox, std::fs::Permissions::from_mode(0o750))
        .map_err(|e| (sandbox.to_path_buf(), e))?;
    let mut stack = vec![sandbox.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(u.uid), Some(u.gid)).map_err(|e| (p.clone(), e))?;
        let meta = std::fs::symlink_metadata(&p).map_err(|e| (p.clone(), e))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| (p.clone(), e))? {
                stack.push(e.map_err(|e| (p.clone(), e))?.path());
            }
        }
    }
    Ok(())
}

/// The first directory on the way to `path` (its ancestors, not `path` itself) that `user` may
/// not enter, with its mode and owner: a task whose sandbox lies below it could not open its own
/// files by their absolute path. `None` when every one can be entered.
pub fn blocked_ancestor(path: &Path, user: &TaskUser) -> Option<(PathBuf, u32, u32)> {
    if user.is_root() {
        return None;
    }
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    for d in dirs {
        let Ok(m) = std::fs::metadata(d) else {
            continue;
        };
        if !may_search(m.mode(), m.uid(), m.gid(), user) {
            return Some((d.to_path_buf(), m.mode() & 0o7777, m.uid()));
        }
    }
    None
}

/// Whether `user` may search (enter) a directory with this mode and owner. Pure.
pub fn may_search(mode: u32, owner: u32, group: u32, user: &TaskUser) -> bool {
    if user.uid == owner {
        mode & 0o100 != 0
    } else if user.gid == group || user.groups.contains(&group) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(name: &str) -> Result<Option<TaskUser>, String> {
        let u = |name: &str, uid, gid| TaskUser {
            name: name.into(),
            uid,
            gid,
            groups: vec![gid],
        };
        Ok(match name {
            "root" | "0" => Some(u("root", 0, 0)),
            "toor" => Some(u("toor", 0, 0)),
            "nobody" | "65534" => Some(u("nobody", 65534, 65534)),
            "alice" => Some(u("alice", 1000, 1000)),
            "broken" => return Err("passwd unreadable".into()),
            _ => None,
        })
    }

    fn policy(default_user: &str, allow_root: bool) -> UserPolicy {
        UserPolicy {
            default_user: default_user.into(),
            allow_root,
        }
    }

    /// command user, framework user, default user, allow root → user name or error kind.
    #[test]
    fn user_resolution_table() {
        use UserSource::*;
        #[derive(Debug, PartialEq)]
        enum Want {
            Runs(&'static str, u32),
            Root(UserSource),
            Unknown(&'static str, UserSource),
            Invalid(UserSource),
            Lookup,
        }
        use Want::*;
        let table: &[(&str, &str, &str, bool, Want)] = &[
            ("", "", "nobody", false, Runs("nobody", 65534)),
            ("", "alice", "nobody", false, Runs("alice", 1000)),
            ("alice", "nobody", "nobody", false, Runs("alice", 1000)),
            (" alice ", "", "nobody", false, Runs("alice", 1000)),
            ("", "", "alice", false, Runs("alice", 1000)),
            ("65534", "", "nobody", false, Runs("nobody", 65534)),
            // Root only when asked for and allowed.
            ("root", "", "nobody", false, Root(Command)),
            ("root", "", "nobody", true, Runs("root", 0)),
            ("", "root", "nobody", false, Root(Framework)),
            ("", "root", "nobody", true, Runs("root", 0)),
            ("", "", "root", false, Root(AgentDefault)),
            ("0", "", "nobody", false, Root(Command)),
            // An alias of uid 0 is root too.
            ("toor", "", "nobody", false, Root(Command)),
            ("toor", "", "nobody", true, Runs("toor", 0)),
            // The task's user wins over an allowed framework root.
            ("nobody", "root", "nobody", true, Runs("nobody", 65534)),
            ("ghost", "", "nobody", false, Unknown("ghost", Command)),
            ("", "ghost", "nobody", true, Unknown("ghost", Framework)),
            ("", "", "ghost", false, Unknown("ghost", AgentDefault)),
            ("a:b", "", "nobody", false, Invalid(Command)),
            ("a b", "", "nobody", false, Invalid(Command)),
            ("../x", "", "nobody", false, Invalid(Command)),
            ("", "", "", false, Invalid(AgentDefault)),
            ("broken", "", "nobody", false, Lookup),
        ];
        for (cmd, fw, default, allow, want) in table {
            let got = match resolve_with(cmd, fw, &policy(default, *allow), db) {
                Ok(u) => Runs(
                    match u.name.as_str() {
                        "nobody" => "nobody",
                        "alice" => "alice",
                        "root" => "root",
                        "toor" => "toor",
                        other => panic!("unexpected user {other}"),
                    },
                    u.uid,
                ),
                Err(UserError::RootRefused { from, .. }) => Root(from),
                Err(UserError::Unknown { name, from }) => Unknown(
                    match name.as_str() {
                        "ghost" => "ghost",
                        other => panic!("unexpected name {other}"),
                    },
                    from,
                ),
                Err(UserError::Invalid { from, .. }) => Invalid(from),
                Err(UserError::Lookup { .. }) => Lookup,
            };
            assert_eq!(
                &got, want,
                "command {cmd:?}, framework {fw:?}, default {default:?}, allow root {allow}"
            );
        }
    }

    #[test]
    fn errors_name_the_field_and_the_flag() {
        let e = resolve_with("root", "", &policy("nobody", false), db).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("--allow-root-tasks") && msg.contains("command.user 'root'"),
            "{msg}"
        );
        let msg = resolve_with("", "ghost", &policy("nobody", false), db)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("unknown user 'ghost'") && msg.contains("framework.user"),
            "{msg}"
        );
    }

    #[test]
    fn search_permission_follows_owner_group_other() {
        let alice = TaskUser {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
        };
        // (mode, owner, group) → may search
        let table = [
            (0o700, 0, 0, false),
            (0o711, 0, 0, true),
            (0o755, 0, 0, true),
            (0o750, 0, 27, true),
            (0o750, 0, 5, false),
            (0o700, 1000, 5, true),
            (0o070, 1000, 1000, false),
        ];
        for (mode, owner, group, want) in table {
            assert_eq!(
                may_search(mode, owner, group, &alice),
                want,
                "mode {mode:o} owner {owner} group {group}"
            );
        }
    }

    #[test]
    fn the_system_database_knows_root_and_nobody() {
        let root = lookup_system("root").expect("passwd").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(
            lookup_system("0")
                .expect("passwd")
                .map(|u| u.name)
                .as_deref(),
            Some("root")
        );
        assert_eq!(lookup_system("no-such-user-here").expect("passwd"), None);
    }
}
