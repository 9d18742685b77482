//! The bounds of `ContainerInfo.host_aliases` (names a task resolves to its agent's routing-mesh
//! address), in one place for the master (which refuses a task out of bounds), the agent (which
//! checks again before it writes them into a container's hosts) and the frameworks that fill them.

/// Most names in one task's `host_aliases` (a stack of 200 services gives each task 400).
pub const MAX_HOST_ALIASES: usize = 512;
/// Longest name (a DNS name's limit).
pub const MAX_HOST_ALIAS_BYTES: usize = 253;
/// Longest dot-separated label of a name.
pub const MAX_HOST_ALIAS_LABEL_BYTES: usize = 63;

/// Why `name` cannot be a host alias, or `None` when it can: 1–253 bytes of dot-separated labels
/// of 1–63 ASCII letters, digits, `-` and `_` (Swarm's `<stack>_<service>` names have one), none
/// starting or ending with `-`. Nothing else can reach a hosts file (no space, `#`, newline).
pub fn alias_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_HOST_ALIAS_BYTES {
        return Some(format!(
            "must be at most {MAX_HOST_ALIAS_BYTES} bytes (got {})",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("has an empty label (two dots, or a dot at an end)".into());
        }
        if label.len() > MAX_HOST_ALIAS_LABEL_BYTES {
            return Some(format!(
                "has a label of {} bytes (at most {MAX_HOST_ALIAS_LABEL_BYTES})",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Some(format!(
                "may hold only ASCII letters, digits, '-', '_' and '.' (found {c:?})"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!(
                "has a label starting or ending with '-' ({label:?})"
            ));
        }
    }
    None
}

/// Checks a whole list: at most [`MAX_HOST_ALIASES`], each by [`alias_problem`].
///
/// # Errors
/// `(field, message)`: the field relative to the list (`host_aliases[3]`) and what is wrong.
pub fn check(aliases: &[String]) -> Result<(), (String, String)> {
    if aliases.len() > MAX_HOST_ALIASES {
        return Err((
            "host_aliases".into(),
            format!("at most {MAX_HOST_ALIASES} names (got {})", aliases.len()),
        ));
    }
    for (i, a) in aliases.iter().enumerate() {
        if let Some(p) = alias_problem(a) {
            return Err((format!("host_aliases[{i}]"), p));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bounds() {
        for ok in ["db", "shop_db", "a.b-c.d", "x1", &"a".repeat(63)] {
            assert_eq!(alias_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\nb",
            "#db",
            "-db",
            "db-",
            "a..b",
            ".a",
            "é",
            &"a".repeat(64),
        ] {
            assert!(alias_problem(bad).is_some(), "{bad:?}");
        }
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(alias_problem(&long).is_some_and(|p| p.contains("253")));
        let many: Vec<String> = (0..=MAX_HOST_ALIASES).map(|i| format!("s{i}")).collect();
        assert_eq!(check(&many).map_err(|e| e.0), Err("host_aliases".into()));
        assert_eq!(
            check(&["db".into(), "a b".into()]).map_err(|e| e.0),
            Err("host_aliases[1]".into())
        );
        assert!(check(&many[..MAX_HOST_ALIASES]).is_ok());
    }
}
