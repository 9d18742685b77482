//! The fetcher: downloads or copies a task's URIs into its sandbox before the container starts,
//! makes them executable, and extracts archives — Mesos's fetcher, without its cache.
//!
//! Local copies and archive extraction run as the task's user (`setpriv`, see [`crate::user`]): a
//! task may not fetch a file its user could not read (`file:///etc/shadow`), nor extract files
//! owned by root or setuid. Downloads are written by the agent, never through a symbolic link,
//! and the sandbox is then handed to the task user.
#![forbid(unsafe_code)]

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use agora_proto::v1;

use crate::error::ContainerError;
use crate::user::{drop_privileges_argv, TaskUser};

fn fail(uri: &str, message: impl Into<String>) -> ContainerError {
    ContainerError::Fetch {
        uri: uri.to_string(),
        message: message.into(),
    }
}

/// The file name a URI is saved under.
pub fn file_name(uri: &v1::Uri) -> Result<String, ContainerError> {
    if !uri.output_file.is_empty() {
        if uri.output_file.contains('/') || uri.output_file == ".." || uri.output_file == "." {
            return Err(fail(&uri.value, "output_file must be a plain file name"));
        }
        return Ok(uri.output_file.clone());
    }
    let path = uri.value.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == ".." || name == "." {
        return Err(fail(&uri.value, "the URI names no file; give output_file"));
    }
    Ok(name.to_string())
}

async fn download(value: &str, dest: &Path) -> Result<(), ContainerError> {
    let resp = reqwest::get(value)
        .await
        // The cause (refused connection, unknown certificate issuer) is in the error's sources.
        .map_err(|e| fail(value, agora_net::tls::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(fail(
            value,
            format!("the server answered {}", resp.status()),
        ));
    }
    let bytes = resp.bytes().await.map_err(|e| fail(value, e.to_string()))?;
    // O_NOFOLLOW: an archive extracted earlier may have left a link under this name.
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .await
        .map_err(|e| ContainerError::io(dest, e))?;
    use tokio::io::AsyncWriteExt;
    f.write_all(&bytes)
        .await
        .map_err(|e| ContainerError::io(dest, e))?;
    f.flush().await.map_err(|e| ContainerError::io(dest, e))
}

/// A command run as the task's user (as is when no switch is needed).
fn as_user(
    user: Option<&TaskUser>,
    program: &str,
    uri: &str,
) -> Result<tokio::process::Command, ContainerError> {
    let mut argv = drop_privileges_argv(user).map_err(|m| fail(uri, m))?;
    argv.push(program.into());
    let mut c = tokio::process::Command::new(&argv[0]);
    c.args(&argv[1..]);
    Ok(c)
}

async fn run(
    mut cmd: tokio::process::Command,
    uri: &str,
    what: &str,
) -> Result<(), ContainerError> {
    let out = cmd
        .output()
        .await
        .map_err(|e| fail(uri, format!("cannot run the {what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            uri,
            format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

async fn extract(
    archive: &Path,
    into: &Path,
    uri: &str,
    user: Option<&TaskUser>,
) -> Result<(), ContainerError> {
    let name = archive.to_string_lossy().to_lowercase();
    let cmd = if name.ends_with(".zip") {
        let mut c = as_user(user, "unzip", uri)?;
        c.arg("-q").arg("-o").arg(archive).arg("-d").arg(into);
        c
    } else if [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".txz"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        let mut c = as_user(user, "tar", uri)?;
        // Even where tar runs as root (root tasks), files get the extractor's owner, not the
        // archive's.
        c.arg("--no-same-owner")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into);
        c
    } else {
        // Not an archive: nothing to extract, as Mesos does.
        return Ok(());
    };
    run(cmd, uri, "extractor").await
}

/// Makes a fetched file executable, through a descriptor opened without following links.
fn make_executable(dest: &Path) -> Result<(), ContainerError> {
    use std::os::unix::fs::PermissionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|e| ContainerError::io(dest, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ContainerError::io(dest, e))
}

/// Fetches every URI of a task into `sandbox`, copying and extracting as `user` (the sandbox must
/// already be theirs).
///
/// # Errors
/// [`ContainerError::Fetch`] naming the URI and what went wrong.
pub async fn fetch(
    uris: &[v1::Uri],
    sandbox: &Path,
    user: Option<&TaskUser>,
) -> Result<(), ContainerError> {
    for uri in uris {
        let dest: PathBuf = sandbox.join(file_name(uri)?);
        let v = uri.value.as_str();
        if v.starts_with("http://") || v.starts_with("https://") {
            download(v, &dest).await?;
        } else if let Some(path) = v
            .strip_prefix("file://")
            .or_else(|| v.starts_with('/').then_some(v))
        {
            if drop_privileges_argv(user)
                .map_err(|m| fail(v, m))?
                .is_empty()
            {
                tokio::fs::copy(path, &dest)
                    .await
                    .map_err(|e| fail(v, format!("cannot copy {path}: {e}")))?;
            } else {
                let mut c = as_user(user, "cp", v)?;
                c.arg("--").arg(path).arg(&dest);
                run(c, v, "copy").await?;
            }
        } else {
            return Err(fail(
                v,
                "unsupported URI: use http://, file:// or an absolute path",
            ));
        }
        if uri.executable {
            make_executable(&dest)?;
        }
        if uri.extract {
            extract(&dest, sandbox, v, user).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(v: &str) -> v1::Uri {
        v1::Uri {
            value: v.into(),
            ..Default::default()
        }
    }

    #[test]
    fn file_names_come_from_the_uri_or_output_file() {
        assert_eq!(
            file_name(&uri("http://h/a/app.tar.gz?x=1")).ok().as_deref(),
            Some("app.tar.gz")
        );
        assert!(file_name(&uri("http://h/")).is_err());
        let mut u = uri("http://h/x");
        u.output_file = "../evil".into();
        assert!(file_name(&u).is_err());
    }

    #[tokio::test]
    async fn local_files_are_copied_made_executable_and_archives_extracted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("pkg")).expect("mkdir");
        std::fs::write(src.join("pkg/run.sh"), "#!/bin/sh\necho ok\n").expect("write");
        std::fs::write(src.join("tool"), "#!/bin/sh\n").expect("write");
        let tar = src.join("pkg.tar.gz");
        let ok = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg("pkg")
            .status()
            .expect("tar");
        assert!(ok.success());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).expect("mkdir");
        let mut exe = uri(&format!("file://{}", src.join("tool").display()));
        exe.executable = true;
        let mut archive = uri(&tar.display().to_string());
        archive.extract = true;
        fetch(&[exe, archive], &sandbox, None).await.expect("fetch");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sandbox.join("tool"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(sandbox.join("pkg/run.sh").exists());
        // https is verified against the public roots: a self-signed server is refused, naming the
        // certificate problem.
        let addr = crate::test_tls::self_signed_server(dir.path()).await;
        let err = fetch(
            &[uri(&format!("https://127.0.0.1:{}/file", addr.port()))],
            &sandbox,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
        let err = fetch(&[uri("/no/such/file")], &sandbox, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
    }
}
