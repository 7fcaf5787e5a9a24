//! Text PostgreSQL can store, made from text it would refuse.
//!
//! A `text` value cannot hold NUL ("invalid byte sequence for encoding UTF8: 0x00") and a
//! `jsonb` value cannot hold `\u0000` ("\u0000 cannot be converted to text"); every other
//! character of a Rust string is valid UTF-8 and stored as is. Run records (errors,
//! diagnostics, approval reasons, revisions, actors) quote user input, so they go through
//! here: a failure about a name containing NUL must still be recorded, or its run is never
//! finished. The NUL becomes the six characters `\u0000`, which reads as what it was.
//!
//! Resource specs are not rewritten: what Git holds is applied exactly or not at all.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};

use super::StoreError;

/// How a NUL is written in stored text.
const NUL_ESCAPE: &str = "\\u0000";

/// `text` with every NUL written as `\u0000`; borrowed when there is none (the usual case).
pub(crate) fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', NUL_ESCAPE))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`storable`] of an optional text.
pub(crate) fn storable_opt(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.map(storable)
}

/// `value` as JSON whose strings and keys are all [`storable`], for a `jsonb` column.
pub(crate) fn storable_json<T: Serialize + ?Sized>(value: &T) -> Result<Value, StoreError> {
    let value = serde_json::to_value(value).map_err(|error| StoreError::Corrupt {
        table: "sync_runs",
        reason: format!("a record could not be encoded as JSON: {error}"),
    })?;
    Ok(escape_json(value))
}

fn escape_json(value: Value) -> Value {
    match value {
        Value::String(text) if text.contains('\0') => Value::String(storable(&text).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_json).collect()),
        Value::Object(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (storable(&key).into_owned(), escape_json(value)))
                .collect(),
        ),
        other => other,
    }
}

/// A value stored as its JSON text in a `text` column, serialised straight into the message
/// buffer: the plan of a 100,000-resource sync is 90 MB, and a `String` first would hold it
/// twice. serde_json escapes NUL as `\u0000`, so the text is always storable.
#[derive(Debug)]
pub(crate) struct JsonText<'a, T>(pub(crate) &'a T);

impl<T: Serialize + std::fmt::Debug> ToSql for JsonText<'_, T> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        serde_json::to_writer(out.writer(), self.0)?;
        Ok(IsNull::No)
    }

    accepts!(TEXT);
    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_without_nul_is_borrowed_unchanged() {
        let stored = storable("job `build` failed");

        assert!(matches!(stored, Cow::Borrowed("job `build` failed")));
    }

    #[test]
    fn nul_is_written_as_its_escape() {
        assert_eq!(storable("bad\0name\0"), "bad\\u0000name\\u0000");
    }

    #[test]
    fn nul_in_nested_json_strings_and_keys_is_escaped() {
        let value = json!({"message": "`a\u{0}b` is not a valid name",
                           "notes": ["x\u{0}", 1, null], "k\u{0}": true});

        let stored = storable_json(&value).unwrap();

        assert_eq!(
            stored,
            json!({"message": "`a\\u0000b` is not a valid name",
                   "notes": ["x\\u0000", 1, null], "k\\u0000": true})
        );
    }
}
