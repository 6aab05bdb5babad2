//! Whether the daemon sees the same file at a path as the command that named it.
//!
//! The CLI sends paths (`publish --from`, `fetch --out`) and the daemon opens them with its
//! own rights, in its own mount namespace. Under a service manager or in a container those
//! can differ: systemd's `PrivateTmp=yes` gives the daemon a `/tmp` of its own, which it
//! deletes when the service stops, and `ProtectHome=` hides the homes. A fetch written to
//! `/tmp/x.arrow` there would succeed and be gone; a publish from `/tmp` would say the file
//! does not exist although the user sees it. So the CLI sends what it sees at the path (its
//! device and inode, [`FileIdentity`]) and the daemon refuses, naming the cause, when its
//! own view differs.

use std::path::Path;

use crate::views::FileIdentity;

/// The identity of what is at `path`, following symbolic links; `None` off Unix or when
/// there is nothing (or nothing readable) there.
pub fn identity(path: &Path) -> Option<FileIdentity> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The daemon sees something else at a path than the command that named it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the meshnode daemon sees {} at `{}` than this command does: it runs in a mount \
     namespace of its own (a service with PrivateTmp=, ProtectHome= or ProtectSystem=, or a \
     container); {}",
    if *.missing { "nothing" } else { "another file" },
    path.display(),
    advice
)]
pub struct OtherView {
    /// The path.
    pub path: std::path::PathBuf,
    /// The daemon sees nothing there.
    pub missing: bool,
    /// What to do instead.
    pub advice: &'static str,
}

/// Checks that the daemon sees at `path` what the caller saw (`seen`); nothing to check
/// when the caller sent no identity (another client, another platform).
pub fn check(
    path: &Path,
    seen: Option<FileIdentity>,
    advice: &'static str,
) -> Result<(), OtherView> {
    let Some(seen) = seen else {
        return Ok(());
    };
    match identity(path) {
        Some(own) if own == seen => Ok(()),
        own => Err(OtherView {
            path: path.to_owned(),
            missing: own.is_none(),
            advice,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_file_or_none_at_the_path_is_told_apart_from_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        std::fs::write(&a, "x\n1\n").unwrap();
        std::fs::write(&b, "x\n1\n").unwrap();
        let seen = identity(&a);
        assert!(seen.is_some());
        check(&a, seen, "do this").expect("the same file");
        check(&a, None, "do this").expect("nothing to check");
        // A directory is seen the same way (the output's directory).
        check(dir.path(), identity(dir.path()), "do this").expect("the same directory");

        let other = check(&b, seen, "publish from a directory it can read").unwrap_err();
        assert!(!other.missing);
        let message = other.to_string();
        assert!(
            message.contains("sees another file at")
                && message.contains("mount namespace of its own")
                && message.ends_with("publish from a directory it can read"),
            "{message}"
        );
        let gone = check(&dir.path().join("none.csv"), seen, "x").unwrap_err();
        assert!(gone.missing);
        assert!(gone.to_string().contains("sees nothing at"), "{gone}");
    }
}
