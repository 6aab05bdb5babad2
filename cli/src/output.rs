//! Human output helpers.

use std::io::Write as _;

use comfy_table::{ContentArrangement, Table};

/// A table with the house style.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    table
}

/// `1536` -> `1.5 KiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Prints any serialisable value as pretty JSON.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes to standard output: the one path every command prints through (see [`outln!`]
/// and [`outp!`]). A reader that went away (`meshnode audit | head -1`) ends the process
/// quietly with success, as Unix tools do; any other write error ends it with the I/O exit
/// code and a message.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let result = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = result {
        stdout_failed(&e);
    }
}

/// Ends the process after a failed write to standard output.
pub(crate) fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // Standard error may be gone too: nothing more to do if this fails.
    let _ = writeln!(
        std::io::stderr(),
        "error: cannot write to standard output: {e}"
    );
    std::process::exit(i32::from(crate::exit::Failure::Io.code()));
}

/// `println!` through [`write_stdout`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*), true)
    };
}

/// `print!` through [`write_stdout`].
#[macro_export]
macro_rules! outp {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*), false)
    };
}

/// Whether `c` may not reach a terminal raw: C0 controls (newline and tab included), DEL,
/// C1 controls, and the invisible marks that reorder or break text (bidi embeddings,
/// overrides and isolates, LRM/RLM/ALM, line and paragraph separators).
fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Text that came from elsewhere (a peer, a file, the daemon), made safe for a terminal:
/// every character [`is_unsafe`] is shown as an escape (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`)
/// so it can neither move the cursor, clear the screen, recolour nor reorder what follows,
/// and the operator sees that it is there. Everything else, including non-ASCII letters,
/// passes unchanged. JSON output never goes through this: it stays exact.
pub(crate) fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`clean`] for text where line breaks are ours to keep (error chains): `\n` stays a line
/// break, every other unsafe character is escaped.
pub(crate) fn clean_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| clean(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `clean` over a list, joined with `sep` (tags, purposes, column names).
pub(crate) fn clean_join(items: &[String], sep: &str) -> String {
    items
        .iter()
        .map(|s| clean(s).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// A table row whose cells are all [`clean`]ed.
pub(crate) fn row<I, S>(cells: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    cells
        .into_iter()
        .map(|c| clean(c.as_ref()).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged_and_unallocated() {
        for text in ["orders", "Ventes été 2024 — 東京", "a\\x1b literal", ""] {
            assert!(matches!(clean(text), std::borrow::Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn controls_and_bidi_are_escaped() {
        assert_eq!(clean("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(clean("line\r\nnext\tcol"), "line\\r\\nnext\\tcol");
        assert_eq!(clean("\u{7f}\u{0}\u{9b}31m"), "\\x7f\\x00\\u{9b}31m");
        assert_eq!(
            clean("pay \u{202e}lanoitan\u{202c} ok"),
            "pay \\u{202e}lanoitan\\u{202c} ok"
        );
        assert_eq!(
            clean("\u{2066}\u{2067}\u{2068}\u{2069}\u{200e}\u{200f}\u{61c}\u{2028}"),
            "\\u{2066}\\u{2067}\\u{2068}\\u{2069}\\u{200e}\\u{200f}\\u{61c}\\u{2028}"
        );
    }

    #[test]
    fn nothing_unsafe_survives_any_input() {
        // Every code point from 0 to U+2100 and the bidi block, one at a time and together.
        let all: String = (0u32..0x2100)
            .filter_map(char::from_u32)
            .chain('\u{2000}'..='\u{206f}')
            .collect();
        let cleaned = clean(&all);
        assert!(!cleaned.chars().any(is_unsafe), "{cleaned:?}");
        for c in all.chars() {
            let one = c.to_string();
            assert!(!clean(&one).chars().any(is_unsafe), "{c:?}");
        }
    }

    #[test]
    fn line_variant_keeps_only_newlines() {
        assert_eq!(
            clean_lines("first\nsecond\x1b[31m\r"),
            "first\nsecond\\x1b[31m\\r"
        );
    }

    #[test]
    fn rows_and_lists_are_cleaned() {
        assert_eq!(
            row(["a\x1b", "b"]),
            vec!["a\\x1b".to_owned(), "b".to_owned()]
        );
        assert_eq!(clean_join(&["x\ry".into(), "z".into()], ", "), "x\\ry, z");
    }
}
