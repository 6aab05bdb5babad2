//! Exit codes: one per kind of failure, so scripts can tell "no such product" from "the
//! daemon is down" without parsing messages. The table is in `meshnode --help` and the
//! README's CLI reference.

use std::fmt;

/// What kind of failure ended a command; [`Failure::code`] is the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Anything not classified below.
    Other,
    /// Bad arguments or a malformed request (clap uses the same code for parse errors).
    Usage,
    /// The product, contract or data directory named does not exist.
    NotFound,
    /// Refused by policy: a contract rejected, a fetch or decision refused by a node.
    Refused,
    /// No daemon answers for the data directory, or a peer it needs is unavailable.
    Unreachable,
    /// A check failed: the audit chain does not verify, a digest does not match.
    Verification,
    /// Reading or writing a local file or standard output failed.
    Io,
}

/// The text appended to `meshnode --help`.
pub(crate) const HELP_TABLE: &str = "\
Exit codes:
  0   success (also when standard output is closed early, as by `| head`)
  1   any other failure
  2   usage: bad arguments, a malformed request, or a data directory of another user or
      writable by others
  3   not found: unknown product, contract, data directory or `publish --from` file
  4   refused by policy: contract rejected, fetch or decision refused
  5   unreachable: no daemon answers for the data directory, or a peer it needs is unavailable
  6   verification failed: audit chain broken, digest mismatch
  74  I/O error on a local file or standard output, or a disk too full to go on
      (the node keeps `disk_reserve_mib` free)

Environment:
  MESHNODE_DATA_DIR  data directory when --data-dir is not given (default ~/.meshnode)
  MESHNODE_LOG       log filter, e.g. `info` or `mesh_node=debug`";

impl Failure {
    /// The process exit code (sysexits' EX_IOERR for I/O).
    pub(crate) fn code(self) -> u8 {
        match self {
            Failure::Other => 1,
            Failure::Usage => 2,
            Failure::NotFound => 3,
            Failure::Refused => 4,
            Failure::Unreachable => 5,
            Failure::Verification => 6,
            Failure::Io => 74,
        }
    }

    /// The kind of failure an HTTP status from the daemon's control API stands for (see
    /// `NodeError::status_code` in mesh-node).
    pub(crate) fn from_status(status: u16) -> Self {
        match status {
            400 | 413 | 422 => Failure::Usage,
            404 => Failure::NotFound,
            401 | 403 | 409 => Failure::Refused,
            502..=504 => Failure::Unreachable,
            // Insufficient Storage: the disk reserve (`disk_reserve_mib`) was reached.
            507 => Failure::Io,
            _ => Failure::Other,
        }
    }

    /// The kind of failure of an error answer from the daemon: its `kind` where that is
    /// finer than the status (a fetch whose data failed verification answers 503, as an
    /// unreachable provider does), else [`Failure::from_status`].
    pub(crate) fn from_answer(status: u16, kind: Option<&str>) -> Self {
        match kind {
            Some("verification") => Failure::Verification,
            Some("io") | Some("no_room") => Failure::Io,
            _ => Failure::from_status(status),
        }
    }

    /// The kind of `error`: the outermost [`Classified`] in its chain, else I/O when an
    /// `io::Error` is in the chain, else [`Failure::Other`].
    pub(crate) fn of(error: &anyhow::Error) -> Self {
        if let Some(kind) = error
            .chain()
            .find_map(|e| e.downcast_ref::<Classified>())
            .map(|c| c.kind)
        {
            return kind;
        }
        if error
            .chain()
            .any(|e| e.downcast_ref::<std::io::Error>().is_some())
        {
            return Failure::Io;
        }
        Failure::Other
    }
}

/// An error message with its [`Failure`] kind, carried through `anyhow` chains.
#[derive(Debug)]
pub(crate) struct Classified {
    /// Which exit code the failure maps to.
    pub(crate) kind: Failure,
    /// What went wrong and what to do.
    message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// An `anyhow::Error` of kind `kind` saying `message`.
pub(crate) fn fail(kind: Failure, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        kind,
        message: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn codes_are_distinct_and_documented() {
        let all = [
            Failure::Other,
            Failure::Usage,
            Failure::NotFound,
            Failure::Refused,
            Failure::Unreachable,
            Failure::Verification,
            Failure::Io,
        ];
        let mut codes: Vec<u8> = all.iter().map(|f| f.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for f in all {
            assert!(
                HELP_TABLE.contains(&format!("\n  {:<4}", f.code())),
                "{f:?} missing from the help table"
            );
        }
    }

    #[test]
    fn daemon_statuses_map_to_kinds() {
        assert_eq!(Failure::from_status(404), Failure::NotFound);
        assert_eq!(Failure::from_status(403), Failure::Refused);
        assert_eq!(Failure::from_status(409), Failure::Refused);
        assert_eq!(Failure::from_status(400), Failure::Usage);
        assert_eq!(Failure::from_status(503), Failure::Unreachable);
        assert_eq!(Failure::from_status(500), Failure::Other);
        // A daemon built without the query engine answers `meshnode sql` with 501.
        assert_eq!(
            Failure::from_answer(501, Some("not_implemented")),
            Failure::Other
        );
        assert_eq!(
            Failure::from_answer(503, Some("verification")),
            Failure::Verification
        );
        assert_eq!(
            Failure::from_answer(503, Some("unreachable")),
            Failure::Unreachable
        );
        assert_eq!(Failure::from_answer(404, None), Failure::NotFound);
    }

    #[test]
    fn kind_survives_context_and_io_is_detected() {
        let e = Err::<(), _>(fail(Failure::NotFound, "no such product"))
            .context("fetching `a/b` failed")
            .unwrap_err();
        assert_eq!(Failure::of(&e), Failure::NotFound);
        assert_eq!(Failure::of(&e).code(), 3);
        let io = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing")
            .unwrap_err();
        assert_eq!(Failure::of(&io), Failure::Io);
        assert_eq!(Failure::of(&anyhow::anyhow!("plain")), Failure::Other);
    }
}
