//! Length and depth limits checked *before* a recursive parser sees text from a peer or a file.
//!
//! `arrow_schema`'s type parser (`DataType::from_str`) is recursive descent: every nested
//! `List(`, `Struct(`, `Map(`, `Dictionary(`, ... costs a few stack frames (2-7 KiB per level
//! in a debug build, about 0.7 KiB in release). A column type nested 3,000 levels deep (about
//! 18 KB of text, small enough to gossip and publishable from a Parquet file) overflows a
//! 2 MiB tokio worker stack and aborts the process. So every type string goes through
//! [`parse_data_type`], which checks its length ([`MAX_TYPE_LEN`]) and nesting depth
//! ([`MAX_TYPE_DEPTH`]) with a linear scan that uses no recursion, and only then parses it.
//!
//! The depth scan mirrors the tokenizer of `arrow_schema` 60 ([`type_nesting_depth`]): it
//! counts `(` and `)` tokens outside quoted names exactly as that tokenizer splits them. Every
//! level of the parser's recursion sits inside one more `(` token than its parent, so the
//! scan's depth is an upper bound on the recursion depth. A test parses every string the check
//! accepts on a thread with a small stack, so a change in the parser that breaks this shows up.
//!
//! Files are checked on their parsed schema with [`data_type_depth`], an iterative walk, before
//! anything renders or parses the type as text.

use std::str::FromStr;

use arrow_schema::DataType;

/// Longest Arrow type string accepted, in bytes. A struct of a few hundred fields fits; the
/// whole descriptor is bounded by [`MAX_DESCRIPTOR_BYTES`](crate::descriptor::MAX_DESCRIPTOR_BYTES)
/// anyway, this bounds the work of one parse.
pub const MAX_TYPE_LEN: usize = 32 * 1024;

/// Deepest nesting of parentheses accepted in an Arrow type string, which bounds the recursion
/// of the type parser. Real schemas nest a handful of levels (`List(Struct("a": List(Int64)))`
/// is 3); Arrow C++ refuses IPC schemas nested more than 64 levels. At 32 levels the parser
/// needs under 128 KiB of stack even in a debug build, far below any thread's stack.
pub const MAX_TYPE_DEPTH: usize = 32;

/// A length, count or depth over its limit. `what` names the thing measured, so the message
/// reads as a sentence: "the description is 102400 bytes long; the limit is 16384".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// Text longer than its limit.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// What was measured, e.g. "the description".
        what: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list with more entries than its limit.
    #[error("{what} has {count} entries; the limit is {max}")]
    TooMany {
        /// What was counted, e.g. "the schema".
        what: String,
        /// How many entries it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A nested structure deeper than its limit.
    #[error("{what} is nested {depth} levels deep; the limit is {max}")]
    TooDeep {
        /// What was measured, e.g. "the Arrow type".
        what: String,
        /// Its nesting depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks that `text` is at most `max` bytes long.
pub fn check_len(what: &str, text: &str, max: usize) -> Result<(), BoundsError> {
    if text.len() > max {
        return Err(BoundsError::TooLong {
            what: what.to_owned(),
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// Checks that a list has at most `max` entries.
pub fn check_count(what: &str, count: usize, max: usize) -> Result<(), BoundsError> {
    if count > max {
        return Err(BoundsError::TooMany {
            what: what.to_owned(),
            count,
            max,
        });
    }
    Ok(())
}

/// Why a type string cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// Too long or too deeply nested to be parsed safely.
    #[error(transparent)]
    Bounds(#[from] BoundsError),
    /// Within bounds, but not an Arrow type `arrow_schema` can parse.
    #[error("`{text}` is not an Arrow type: {message}")]
    Unknown {
        /// The start of the type string (at most [`SHOWN_TYPE_CHARS`] characters).
        text: String,
        /// The parser's explanation, without the input it repeats (at most
        /// 4 x [`SHOWN_TYPE_CHARS`] characters).
        message: String,
    },
    /// A type read from a file whose text form names a different type, or none, when parsed
    /// back: arrow writes a nested field name or time zone holding a quote, a backslash or a
    /// control character with escapes its own parser does not read.
    #[error(
        "its text form `{text}` does not read back as the same Arrow type (a nested field name \
         or time zone holds a quote, a backslash or a control character)"
    )]
    NoRoundTrip {
        /// The start of the type's text form (at most [`SHOWN_TYPE_CHARS`] characters).
        text: String,
    },
    /// A field inside the type carries metadata (an extension type such as `arrow.uuid`, a
    /// Parquet field id), which a type's text form has no room for: every peer would rebuild
    /// the type without it.
    #[error(
        "its nested field `{field}` carries metadata ({keys}), which a descriptor's type cannot \
         record; remove the metadata of nested fields (a top-level column may keep its own)"
    )]
    NestedMetadata {
        /// The field's path from the column (`item`, `address.zip`), at most
        /// [`SHOWN_TYPE_CHARS`] characters.
        field: String,
        /// The metadata keys, at most [`SHOWN_TYPE_CHARS`] characters.
        keys: String,
    },
}

/// The first field inside `data_type` (not the column itself) that carries metadata, as its
/// path and its keys. Iterative: no recursion however deep the type.
fn nested_metadata(data_type: &DataType) -> Option<(String, String)> {
    let mut pending: Vec<(String, &DataType)> = vec![(String::new(), data_type)];
    while let Some((path, data_type)) = pending.pop() {
        let children: Vec<&arrow_schema::FieldRef> = match data_type {
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => vec![f],
            DataType::Struct(fields) => fields.iter().collect(),
            DataType::Union(fields, _) => fields.iter().map(|(_, f)| f).collect(),
            DataType::Dictionary(_, values) => {
                pending.push((path, values));
                continue;
            }
            DataType::RunEndEncoded(ends, values) => vec![ends, values],
            _ => continue,
        };
        for child in children {
            let child_path = if path.is_empty() {
                child.name().clone()
            } else {
                format!("{path}.{}", child.name())
            };
            if !child.metadata().is_empty() {
                let mut keys: Vec<&str> = child.metadata().keys().map(String::as_str).collect();
                keys.sort_unstable();
                let cut = |text: String| text.chars().take(SHOWN_TYPE_CHARS).collect();
                return Some((cut(child_path), cut(keys.join(", "))));
            }
            pending.push((child_path, child.data_type()));
        }
    }
    None
}

/// The text form of `data_type` that goes into a descriptor, checked to parse back (through
/// [`parse_data_type`]) as exactly `data_type`, so every peer rebuilds the schema the file holds.
pub fn type_text(data_type: &DataType) -> Result<String, TypeError> {
    if let Some((field, keys)) = nested_metadata(data_type) {
        return Err(TypeError::NestedMetadata { field, keys });
    }
    let text = data_type.to_string();
    match parse_data_type(&text) {
        Ok(parsed) if parsed == *data_type => Ok(text),
        Ok(_) | Err(TypeError::Unknown { .. }) => Err(TypeError::NoRoundTrip {
            text: text.chars().take(SHOWN_TYPE_CHARS).collect(),
        }),
        Err(bounds) => Err(bounds),
    }
}

/// How much of an unparseable type string an error message repeats.
pub const SHOWN_TYPE_CHARS: usize = 64;

/// Nesting depth of an Arrow type string: the deepest run of `(` not yet closed by `)`,
/// outside quoted names. `Int64` is 0, `List(Int64)` 1, `Struct("a": List(Int64))` 2.
///
/// Linear, no recursion, no allocation. Splits the text as `arrow_schema` 60's tokenizer
/// does: separators are `(`, `)`, `,`, `:` and space; a `"` or `'` opens a quoted name only
/// where a token starts, a quote preceded by `\` anywhere earlier in the name does not close
/// it (the tokenizer never clears its escape flag on other characters), and a word runs to
/// the next separator (quotes inside a word are part of it).
pub fn type_nesting_depth(text: &str) -> usize {
    let mut chars = text.chars().peekable();
    let (mut depth, mut deepest) = (0usize, 0usize);
    while let Some(&c) = chars.peek() {
        match c {
            '(' => {
                chars.next();
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => {
                chars.next();
                depth = depth.saturating_sub(1);
            }
            ' ' | ',' | ':' => {
                chars.next();
            }
            '"' | '\'' => {
                chars.next();
                let mut escaped = false;
                loop {
                    match chars.next() {
                        // Unterminated: the parser stops with an error here.
                        None => return deepest,
                        Some('\\') => escaped = true,
                        Some(q) if q == c => {
                            if escaped {
                                escaped = false;
                            } else {
                                break;
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            _ => {
                while chars
                    .peek()
                    .is_some_and(|&w| !matches!(w, '(' | ')' | ',' | ':' | ' '))
                {
                    chars.next();
                }
            }
        }
    }
    deepest
}

/// Checks an Arrow type string's length and nesting depth against [`MAX_TYPE_LEN`] and
/// [`MAX_TYPE_DEPTH`], without parsing it.
pub fn check_type_text(text: &str) -> Result<(), BoundsError> {
    check_len("the Arrow type", text, MAX_TYPE_LEN)?;
    let depth = type_nesting_depth(text);
    if depth > MAX_TYPE_DEPTH {
        return Err(BoundsError::TooDeep {
            what: "the Arrow type".into(),
            depth,
            max: MAX_TYPE_DEPTH,
        });
    }
    Ok(())
}

/// The only way type strings from peers or files are parsed: [`check_type_text`] first, then
/// `DataType::from_str`. Never panics and never recurses deeper than [`MAX_TYPE_DEPTH`] levels.
pub fn parse_data_type(text: &str) -> Result<DataType, TypeError> {
    check_type_text(text)?;
    DataType::from_str(text).map_err(|e| {
        // arrow repeats the whole input in its message; keep only its explanation.
        let message = e.to_string();
        let reason = message
            .rsplit_once(" Error ")
            .map_or(message.as_str(), |(_, reason)| reason);
        TypeError::Unknown {
            text: text.chars().take(SHOWN_TYPE_CHARS).collect(),
            message: reason.chars().take(4 * SHOWN_TYPE_CHARS).collect(),
        }
    })
}

/// Nesting depth of a parsed Arrow type, by an iterative walk (no recursion, so a type read
/// from a file can be measured however deep it is). `Int64` is 0, `List(Int64)` 1. Never more
/// than [`type_nesting_depth`] of the type's display form, so a type within [`MAX_TYPE_DEPTH`]
/// here may still be refused as text (a `Union` or `Map` level takes two parentheses).
pub fn data_type_depth(data_type: &DataType) -> usize {
    let mut stack: Vec<(&DataType, usize)> = vec![(data_type, 0)];
    let mut deepest = 0;
    while let Some((data_type, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let child = depth + 1;
        match data_type {
            DataType::List(f)
            | DataType::ListView(f)
            | DataType::LargeList(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => stack.push((f.data_type(), child)),
            DataType::Struct(fields) => {
                stack.extend(fields.iter().map(|f| (f.data_type(), child)));
            }
            DataType::Union(fields, _) => {
                stack.extend(fields.iter().map(|(_, f)| (f.data_type(), child)));
            }
            DataType::Dictionary(key, value) => {
                stack.push((key.as_ref(), child));
                stack.push((value.as_ref(), child));
            }
            DataType::RunEndEncoded(run_ends, values) => {
                stack.push((run_ends.data_type(), child));
                stack.push((values.data_type(), child));
            }
            _ => {}
        }
    }
    deepest
}

/// Checks a parsed type's depth against [`MAX_TYPE_DEPTH`] before it is rendered as text.
pub fn check_data_type(data_type: &DataType) -> Result<(), BoundsError> {
    let depth = data_type_depth(data_type);
    if depth > MAX_TYPE_DEPTH {
        return Err(BoundsError::TooDeep {
            what: "the Arrow type".into(),
            depth,
            max: MAX_TYPE_DEPTH,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{Field, Fields, TimeUnit, UnionFields, UnionMode};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn type_text_refuses_names_arrow_cannot_read_back() {
        let plain = DataType::Struct(Fields::from(vec![Field::new("a b", DataType::Int64, true)]));
        assert_eq!(type_text(&plain).unwrap(), plain.to_string());
        let zoned = DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into()));
        assert_eq!(parse_data_type(&type_text(&zoned).unwrap()).unwrap(), zoned);
        for name in ["a\"b", "a\\b", "a\u{1}b"] {
            let nested =
                DataType::Struct(Fields::from(vec![Field::new(name, DataType::Int64, true)]));
            assert!(
                matches!(type_text(&nested), Err(TypeError::NoRoundTrip { .. })),
                "{name:?}: {:?}",
                type_text(&nested)
            );
            let zone = DataType::Timestamp(TimeUnit::Microsecond, Some(name.into()));
            assert!(type_text(&zone).is_err(), "{name:?}");
        }
    }

    /// `List(` nested `n` deep around `Int32`: the shape of the type that crashed nodes.
    pub(crate) fn nested_list(n: usize) -> String {
        format!("{}Int32{}", "List(".repeat(n), ")".repeat(n))
    }

    /// Runs `f` on a thread with a small stack: a parse that recursed without bound would
    /// abort the test process instead of passing.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn depth_of_common_types() {
        assert_eq!(type_nesting_depth("Int64"), 0);
        assert_eq!(type_nesting_depth("List(Int64)"), 1);
        assert_eq!(type_nesting_depth("Timestamp(µs, \"UTC\")"), 1);
        assert_eq!(
            type_nesting_depth("Struct(\"a\": List(Int64), \"b\": Utf8)"),
            2
        );
        // Parentheses inside quoted names are not structure.
        assert_eq!(type_nesting_depth("Struct(\"(((\": Int64)"), 1);
        assert_eq!(type_nesting_depth("List(Int64, field: '((((')"), 1);
        // An escaped quote does not close the name; the escape flag sticks, as in arrow.
        assert_eq!(type_nesting_depth(r#"Struct("a\"(": Int64)"#), 1);
        assert_eq!(type_nesting_depth(r#"Struct("a\b"(((": Int64)"#), 1);
        // A quote inside a word does not open a name.
        assert_eq!(type_nesting_depth("List(x\"(((\")"), 4);
        // Unbalanced closers never make the depth negative.
        assert_eq!(type_nesting_depth(")))List(List(Int8))"), 2);
        assert_eq!(type_nesting_depth(&nested_list(3000)), 3000);
    }

    #[test]
    fn depth_of_display_forms_bounds_tree_depth() {
        let item = |dt| Arc::new(Field::new("item", dt, true));
        let samples = vec![
            DataType::Int64,
            DataType::List(item(DataType::Utf8)),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Struct(Fields::from(vec![
                Field::new("a(", DataType::List(item(DataType::Int8)), true),
                Field::new("b\"x", DataType::Date32, false),
            ])),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Int32, true),
                    ])),
                    false,
                )),
                false,
            ),
            DataType::Union(
                UnionFields::try_new(
                    vec![0, 1],
                    vec![
                        Field::new("a", DataType::Int32, true),
                        Field::new("b", DataType::List(item(DataType::Utf8)), true),
                    ],
                )
                .unwrap(),
                UnionMode::Sparse,
            ),
        ];
        for dt in samples {
            let text = dt.to_string();
            assert!(
                data_type_depth(&dt) <= type_nesting_depth(&text),
                "{text}: tree {} > text {}",
                data_type_depth(&dt),
                type_nesting_depth(&text)
            );
            // (arrow does not unescape quoted names, so `b"x` does not round-trip exactly)
            assert!(parse_data_type(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn limits_are_enforced_before_parsing() {
        let at_limit = nested_list(MAX_TYPE_DEPTH);
        let parsed = on_small_stack(move || parse_data_type(&at_limit));
        assert_eq!(data_type_depth(&parsed.unwrap()), MAX_TYPE_DEPTH);

        let deep = nested_list(3000);
        let err = on_small_stack(move || parse_data_type(&deep)).unwrap_err();
        assert_eq!(
            err,
            TypeError::Bounds(BoundsError::TooDeep {
                what: "the Arrow type".into(),
                depth: 3000,
                max: MAX_TYPE_DEPTH
            })
        );
        assert_eq!(
            err.to_string(),
            "the Arrow type is nested 3000 levels deep; the limit is 32"
        );
        let err = parse_data_type(&nested_list(MAX_TYPE_DEPTH + 1)).unwrap_err();
        assert!(matches!(
            err,
            TypeError::Bounds(BoundsError::TooDeep { depth: 33, .. })
        ));

        let long = format!("Struct({})", vec!["\"a\": Int8"; 4000].join(", "));
        assert!(matches!(
            parse_data_type(&long),
            Err(TypeError::Bounds(BoundsError::TooLong {
                max: MAX_TYPE_LEN,
                ..
            }))
        ));
        let err = parse_data_type(&format!("NotAType{}", "x".repeat(500))).unwrap_err();
        match err {
            TypeError::Unknown { text, .. } => assert_eq!(text.chars().count(), SHOWN_TYPE_CHARS),
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    #[test]
    fn tree_depth_is_measured_without_recursion() {
        let mut dt = DataType::Int32;
        for _ in 0..100_000 {
            dt = DataType::List(Arc::new(Field::new("item", dt, true)));
        }
        let (depth, refused) = on_small_stack(move || {
            let r = (data_type_depth(&dt), check_data_type(&dt).is_err());
            // Dropping the tree recurses; forget it rather than measure arrow's Drop.
            std::mem::forget(dt);
            r
        });
        assert_eq!(depth, 100_000);
        assert!(refused);
        assert!(check_data_type(&DataType::Utf8).is_ok());
    }

    #[test]
    fn bound_helpers() {
        assert!(check_len("the title", "abc", 3).is_ok());
        assert_eq!(
            check_len("the title", "abcd", 3).unwrap_err().to_string(),
            "the title is 4 bytes long; the limit is 3"
        );
        assert!(check_count("the tags", 2, 2).is_ok());
        assert_eq!(
            check_count("the tags", 3, 2).unwrap_err().to_string(),
            "the tags has 3 entries; the limit is 2"
        );
    }

    /// Fragments that steer random strings toward deep, quoted and escaped type text.
    fn type_fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("List(".to_owned()),
            Just("Struct(".to_owned()),
            Just("Dictionary(Int32, ".to_owned()),
            Just("Union(Sparse, 0: (".to_owned()),
            Just("Map(".to_owned()),
            Just("\"a\": ".to_owned()),
            Just("\"".to_owned()),
            Just("'".to_owned()),
            Just("\\".to_owned()),
            Just("(".to_owned()),
            Just(")".to_owned()),
            Just(", ".to_owned()),
            Just("Int32".to_owned()),
            Just("x\"".to_owned()),
            Just(" ".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the check accepts parses on a small stack without overflowing it.
        #[test]
        fn accepted_text_never_recurses_past_the_limit(
            parts in prop::collection::vec(type_fragment(), 0..400)
        ) {
            let text: String = parts.concat();
            let _ = on_small_stack(move || parse_data_type(&text).is_ok());
        }
    }

    #[test]
    fn a_nested_field_with_metadata_is_refused_naming_it() {
        use std::collections::HashMap;

        let marked =
            Field::new("zip", DataType::FixedSizeBinary(16), true).with_metadata(HashMap::from([
                ("ARROW:extension:name".to_owned(), "arrow.uuid".to_owned()),
            ]));
        let address = DataType::Struct(Fields::from(vec![
            Field::new("street", DataType::Utf8, true),
            marked,
        ]));
        let column = DataType::List(Arc::new(Field::new("item", address.clone(), true)));
        match type_text(&column) {
            Err(TypeError::NestedMetadata { field, keys }) => {
                assert_eq!(field, "item.zip");
                assert_eq!(keys, "ARROW:extension:name");
            }
            other => panic!("expected a nested-metadata refusal, got {other:?}"),
        }
        let message = type_text(&column).unwrap_err().to_string();
        assert!(message.contains("`item.zip`"), "{message}");
        // Without the metadata the same shape passes.
        let plain = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(Fields::from(vec![
                Field::new("street", DataType::Utf8, true),
                Field::new("zip", DataType::FixedSizeBinary(16), true),
            ])),
            true,
        )));
        assert!(type_text(&plain).is_ok());
        // Deep types are walked without recursion.
        let mut deep = DataType::Int64;
        for _ in 0..2_000 {
            deep = DataType::List(Arc::new(Field::new("item", deep, true)));
        }
        assert_eq!(nested_metadata(&deep), None);
    }
}
