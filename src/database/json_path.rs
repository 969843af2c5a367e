//! A string at a path of object members inside a JSON document, found and replaced
//! without touching any other byte of the document.
//!
//! serde_json parses each level (`RawValue` keeps the member's exact text, and its
//! position in the document), so nothing here parses JSON by hand.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess};
use serde_json::value::RawValue;

/// Where the string at a path lies in a document, and its (unescaped) content.
pub(crate) struct Located {
    /// The byte range of the JSON string literal, quotes included.
    pub span: Range<usize>,
    /// The string's content.
    pub content: String,
}

/// What is at a path.
pub(crate) enum Found {
    /// A string.
    String(Located),
    /// Nothing, or `null`: the path is not set in this document.
    Absent,
    /// The document is not a JSON object along the path, or the value is not a string.
    NotAString,
}

/// Finds the string at `path` (member names) in `document`.
pub(crate) fn find(document: &str, path: &[&str]) -> Found {
    let Some((last, parents)) = path.split_last() else {
        return Found::NotAString;
    };
    let mut current: &str = document;
    for member in parents {
        match member_of(current, member) {
            Ok(Some(raw)) => current = raw,
            Ok(None) => return Found::Absent,
            Err(()) => return Found::NotAString,
        }
    }
    let raw = match member_of(current, last) {
        Ok(Some(raw)) => raw,
        Ok(None) => return Found::Absent,
        Err(()) => return Found::NotAString,
    };
    if raw == "null" {
        return Found::Absent;
    }
    let Ok(content) = serde_json::from_str::<String>(raw) else {
        return Found::NotAString;
    };
    let start = offset_in(document, raw);
    Found::String(Located {
        span: start..start + raw.len(),
        content,
    })
}

/// `document` with the string at `span` replaced by `content`, every other byte kept.
pub(crate) fn replace(document: &str, span: &Range<usize>, content: &str) -> Option<String> {
    let literal = serde_json::to_string(content).ok()?;
    let mut out = String::with_capacity(document.len() - span.len() + literal.len());
    out.push_str(document.get(..span.start)?);
    out.push_str(&literal);
    out.push_str(document.get(span.end..)?);
    Some(out)
}

/// The text of member `name` of the object `text`: `Ok(None)` when absent (or `null`
/// on the way), `Err` when `text` is not an object or names `name` twice (readers differ
/// on which one counts, so neither is rewritten).
fn member_of<'a>(text: &'a str, name: &str) -> Result<Option<&'a str>, ()> {
    if text == "null" {
        return Ok(None);
    }
    let Members(members) = serde_json::from_str(text).map_err(|_| ())?;
    let mut found = members.into_iter().filter(|(member, _)| member == name);
    match (found.next(), found.next()) {
        (Some(_), Some(_)) => Err(()),
        (Some((_, raw)), None) => Ok(Some(raw.get())),
        (None, _) => Ok(None),
    }
}

/// An object's members in document order, repeated names kept.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Members<'a>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'a RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(Visitor(PhantomData))
    }
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset_in(whole: &str, part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_string_at_the_path_changes() {
        let document =
            r#"{ "x": [1, 2], "a" : { "b": {"c" :"old\/value", "d": "keep"} }, "z": 1.50 }"#;
        let Found::String(located) = find(document, &["a", "b", "c"]) else {
            panic!("found");
        };
        assert_eq!(located.content, "old/value");
        let replaced = replace(document, &located.span, "new/value").expect("replaced");
        assert_eq!(
            replaced,
            r#"{ "x": [1, 2], "a" : { "b": {"c" :"new/value", "d": "keep"} }, "z": 1.50 }"#
        );
    }

    #[test]
    fn absent_null_and_other_types_are_told_apart() {
        assert!(matches!(find(r#"{"a":{}}"#, &["a", "b"]), Found::Absent));
        assert!(matches!(find(r#"{"a":null}"#, &["a", "b"]), Found::Absent));
        assert!(matches!(
            find(r#"{"a":{"b":null}}"#, &["a", "b"]),
            Found::Absent
        ));
        assert!(matches!(
            find(r#"{"a":{"b":3}}"#, &["a", "b"]),
            Found::NotAString
        ));
        assert!(matches!(find("not json", &["a"]), Found::NotAString));
        assert!(matches!(find(r#"["a"]"#, &["a"]), Found::NotAString));
        assert!(matches!(
            find(r#"{"a":"x","a":"y"}"#, &["a"]),
            Found::NotAString
        ));
        assert!(matches!(
            find(r#"{"a":{"b":"x"},"a":{}}"#, &["a", "b"]),
            Found::NotAString
        ));
        assert!(matches!(
            find(r#"{"a":{"b":"x"},"c":"d","c":"e"}"#, &["a", "b"]),
            Found::String(_)
        ));
    }

    proptest::proptest! {
        #[test]
        fn a_replaced_string_reads_back_and_nothing_else_moves(
            before in "[ -~]{0,20}", content in "\\PC{0,30}", after in "[ -~]{0,20}",
        ) {
            let document = format!(
                r#"{{"x": {}, "a": {{"b": {}}}, "y": {}}}"#,
                serde_json::to_string(&before).expect("json"),
                serde_json::to_string("old").expect("json"),
                serde_json::to_string(&after).expect("json"),
            );
            let Found::String(located) = find(&document, &["a", "b"]) else {
                panic!("found");
            };
            let replaced = replace(&document, &located.span, &content).expect("replaced");
            proptest::prop_assert_eq!(&replaced[..located.span.start], &document[..located.span.start]);
            proptest::prop_assert!(replaced.ends_with(&document[located.span.end..]));
            let Found::String(again) = find(&replaced, &["a", "b"]) else {
                panic!("found again");
            };
            proptest::prop_assert_eq!(again.content, content);
        }
    }
}
