//! `meshnode fetch --out -`: the verified transfer as an Arrow IPC stream on standard output.
//!
//! The daemon verifies the provider's signed trailer before it answers (see
//! `mesh_node::dataplane::StagedFetch`); its answer carries the signed digest, row count and
//! stream length as headers, then the stream. This side checks what actually arrived
//! against them as it copies it out ([`StreamCheck`]): the local hop and the daemon's
//! staging file are covered too. The check can only conclude at the end, after the bytes
//! were written, so a consumer must treat a non-zero exit as "discard what was read"; the
//! exit code is then 6 (verification failed) for bytes that do not match, 5 when the
//! daemon's answer broke off.

use std::io::Write;

use mesh_node::api::{BYTES_HEADER, DIGEST_HEADER, ROWS_HEADER};

use crate::exit::{Failure, fail};

/// The end-of-stream marker that closes an Arrow IPC stream.
const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

/// Checks a streamed answer against the figures its headers announced: exactly `bytes`
/// signed bytes hashing to `digest`, then the end-of-stream marker.
#[derive(Debug)]
pub(crate) struct StreamCheck {
    /// Signed stream length announced.
    bytes: u64,
    /// BLAKE3 announced.
    digest: [u8; 32],
    /// Hash of the signed part received so far.
    hasher: blake3::Hasher,
    /// Bytes received so far.
    seen: u64,
    /// The bytes received after the signed part (at most the marker's length is kept).
    tail: Vec<u8>,
}

impl StreamCheck {
    /// A check for `bytes` bytes hashing to the hex `digest`.
    pub(crate) fn new(bytes: u64, digest: &str) -> anyhow::Result<Self> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(digest, &mut raw).map_err(|_| {
            fail(
                Failure::Verification,
                "the daemon's answer carries no valid digest: discard what was read",
            )
        })?;
        Ok(Self {
            bytes,
            digest: raw,
            hasher: blake3::Hasher::new(),
            seen: 0,
            tail: Vec::new(),
        })
    }

    /// Takes the next chunk of the answer.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        let signed_left = self.bytes.saturating_sub(self.seen);
        let split = usize::try_from(signed_left).map_or(chunk.len(), |l| l.min(chunk.len()));
        self.hasher.update(&chunk[..split]);
        let rest = &chunk[split..];
        let room = (END_OF_STREAM.len() + 1).saturating_sub(self.tail.len());
        self.tail.extend_from_slice(&rest[..rest.len().min(room)]);
        self.seen += chunk.len() as u64;
    }

    /// Whether the answer was exactly what was announced.
    pub(crate) fn finish(&self) -> anyhow::Result<()> {
        let expected = self.bytes + END_OF_STREAM.len() as u64;
        let problem = if self.seen != expected {
            Some(format!(
                "{} bytes arrived where {expected} were announced",
                self.seen
            ))
        } else if self.tail != END_OF_STREAM {
            Some("the stream does not end with the end-of-stream marker".into())
        } else if *self.hasher.finalize().as_bytes() != self.digest {
            Some("its BLAKE3 digest is not the one the provider signed".into())
        } else {
            None
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(fail(
                Failure::Verification,
                format!(
                    "the Arrow IPC stream written to standard output does not match the verified transfer ({p}): discard what was read"
                ),
            )),
        }
    }
}

/// What [`copy_to_stdout`] delivered.
#[derive(Debug)]
pub(crate) struct Delivered {
    /// Rows, as the verified transfer counted them.
    pub(crate) rows: u64,
    /// Bytes written to standard output.
    pub(crate) bytes: u64,
}

/// The figures a successful answer of `POST /v1/fetch/stream` announces, for the progress
/// display.
pub(crate) fn announced(response: &reqwest::Response) -> Option<mesh_node::progress::ProgressView> {
    let number = |name: &str| response.headers().get(name)?.to_str().ok()?.parse().ok();
    Some(mesh_node::progress::ProgressView {
        bytes: number(BYTES_HEADER)?,
        rows: number(ROWS_HEADER)?,
        total_bytes: None,
    })
}

/// Copies a successful answer of `POST /v1/fetch/stream` to standard output, checking it.
pub(crate) async fn copy_to_stdout(mut response: reqwest::Response) -> anyhow::Result<Delivered> {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let missing = || {
        fail(
            Failure::Verification,
            "the daemon's answer lacks the figures of the verified transfer (is the daemon older than this command?)",
        )
    };
    let bytes: u64 = header(BYTES_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or_else(missing)?;
    let rows: u64 = header(ROWS_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or_else(missing)?;
    let digest = header(DIGEST_HEADER).ok_or_else(missing)?;
    let mut check = StreamCheck::new(bytes, &digest)?;
    // Unbuffered: chunks are large, and the standard handle would flush at every newline
    // byte of the binary data.
    let mut out = raw_stdout();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(fail(
                    Failure::Unreachable,
                    format!(
                        "the daemon's stream broke off after {} bytes ({e}): discard what was read",
                        check.seen
                    ),
                ));
            }
        };
        check.update(&chunk);
        if let Err(e) = out.write_all(&chunk) {
            crate::output::stdout_failed(&e);
        }
    }
    if let Err(e) = out.flush() {
        crate::output::stdout_failed(&e);
    }
    check.finish()?;
    Ok(Delivered {
        rows,
        bytes: check.seen,
    })
}

/// Standard output without Rust's line buffering.
fn raw_stdout() -> Box<dyn Write> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Box::new(std::fs::File::from(fd));
        }
    }
    Box::new(std::io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(signed: &[u8]) -> Vec<u8> {
        let mut all = signed.to_vec();
        all.extend_from_slice(&END_OF_STREAM);
        all
    }

    fn check(signed_len: u64, digest: &[u8], body: &[u8], chunk: usize) -> anyhow::Result<()> {
        let mut c = StreamCheck::new(signed_len, &hex::encode(digest))?;
        for part in body.chunks(chunk.max(1)) {
            c.update(part);
        }
        c.finish()
    }

    #[test]
    fn exact_answers_pass_in_any_chunking() {
        let signed: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let digest = *blake3::hash(&signed).as_bytes();
        for chunk in [1, 7, 8, 4096, 10_000] {
            check(5000, &digest, &answer(&signed), chunk).unwrap();
        }
    }

    #[test]
    fn altered_short_long_or_unterminated_answers_fail_as_verification() {
        let signed: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let digest = *blake3::hash(&signed).as_bytes();
        let mut flipped = answer(&signed);
        flipped[17] ^= 1;
        let mut long = answer(&signed);
        long.push(0);
        let mut no_marker = signed.clone();
        no_marker.extend_from_slice(&[0; 8]);
        for (what, body) in [
            ("a flipped byte", flipped),
            ("short", answer(&signed[..299])),
            ("long", long),
            ("no marker", no_marker),
        ] {
            let e = check(300, &digest, &body, 64).unwrap_err();
            assert_eq!(Failure::of(&e), Failure::Verification, "{what}");
            assert!(
                e.to_string().contains("discard what was read"),
                "{what}: {e}"
            );
        }
        let e = StreamCheck::new(300, "not hex").unwrap_err();
        assert_eq!(Failure::of(&e), Failure::Verification);
    }
}
