//! The fetcher: downloads or copies a task's URIs into its sandbox before the container starts,
//! makes them executable, and extracts archives — Mesos's fetcher, without its cache.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use agora_proto::v1;

use crate::error::ContainerError;

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
        .map_err(|e| fail(value, e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(
            value,
            format!("the server answered {}", resp.status()),
        ));
    }
    let bytes = resp.bytes().await.map_err(|e| fail(value, e.to_string()))?;
    tokio::fs::write(dest, &bytes)
        .await
        .map_err(|e| ContainerError::io(dest, e))
}

async fn extract(archive: &Path, into: &Path, uri: &str) -> Result<(), ContainerError> {
    let name = archive.to_string_lossy().to_lowercase();
    let mut cmd = if name.ends_with(".zip") {
        let mut c = tokio::process::Command::new("unzip");
        c.arg("-q").arg("-o").arg(archive).arg("-d").arg(into);
        c
    } else if [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".txz"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        let mut c = tokio::process::Command::new("tar");
        c.arg("-xf").arg(archive).arg("-C").arg(into);
        c
    } else {
        // Not an archive: nothing to extract, as Mesos does.
        return Ok(());
    };
    let out = cmd
        .output()
        .await
        .map_err(|e| fail(uri, format!("cannot run the extractor: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            uri,
            format!(
                "extracting failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// Fetches every URI of a task into `sandbox`.
///
/// # Errors
/// [`ContainerError::Fetch`] naming the URI and what went wrong.
pub async fn fetch(uris: &[v1::Uri], sandbox: &Path) -> Result<(), ContainerError> {
    for uri in uris {
        let dest: PathBuf = sandbox.join(file_name(uri)?);
        let v = uri.value.as_str();
        if v.starts_with("http://") {
            download(v, &dest).await?;
        } else if v.starts_with("https://") {
            return Err(fail(
                v,
                "https is not supported by this agent (no TLS): use http, file:// or a local path",
            ));
        } else if let Some(path) = v
            .strip_prefix("file://")
            .or_else(|| v.starts_with('/').then_some(v))
        {
            tokio::fs::copy(path, &dest)
                .await
                .map_err(|e| fail(v, format!("cannot copy {path}: {e}")))?;
        } else {
            return Err(fail(
                v,
                "unsupported URI: use http://, file:// or an absolute path",
            ));
        }
        if uri.executable {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(|e| ContainerError::io(&dest, e))?;
        }
        if uri.extract {
            extract(&dest, sandbox, v).await?;
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
        fetch(&[exe, archive], &sandbox).await.expect("fetch");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sandbox.join("tool"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        assert!(sandbox.join("pkg/run.sh").exists());
        let err = fetch(&[uri("https://example.com/x")], &sandbox)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        let err = fetch(&[uri("/no/such/file")], &sandbox).await.unwrap_err();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
    }
}
