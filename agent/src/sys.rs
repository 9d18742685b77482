//! The one module allowed to use `unsafe`: the hook that runs in the forked child before `exec` to
//! put a native container's supervisor in its own session and its own namespaces.
#![allow(unsafe_code)]

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Makes the spawned process a session leader (so it survives the agent's process group and
/// terminal), and with `namespaces` gives it new mount, UTS and IPC namespaces plus a new PID
/// namespace for its children, with mount propagation made private so that nothing mounted inside
/// (such as a fresh `/proc`) leaks to the host.
pub(crate) fn detach_and_isolate(cmd: &mut tokio::process::Command, namespaces: bool) {
    // SAFETY: `pre_exec` runs the closure in the child between fork and exec, where only
    // async-signal-safe work is allowed. The closure captures a `bool` by value and makes only raw
    // system calls through `nix` (setsid, unshare, mount): none allocates (nix passes the short
    // literal path "/" through a stack buffer), takes a lock or touches state shared with other
    // threads of the parent. Errors are returned as `io::Error` built from an errno, which does not
    // allocate either.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if namespaces {
                unshare(
                    CloneFlags::CLONE_NEWNS
                        | CloneFlags::CLONE_NEWUTS
                        | CloneFlags::CLONE_NEWIPC
                        | CloneFlags::CLONE_NEWPID,
                )
                .map_err(std::io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}
