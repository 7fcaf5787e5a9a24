//! Diagnostics: what is wrong (or worth a look) in a config repository, as data.
//!
//! Every stage of validation returns these instead of stopping at the first problem; the CLI
//! renders them as `path:line:column: error[CODE]: message` or as JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::SourceLocation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// Stable codes, one per rule, so CI scripts and docs can refer to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Code {
    // syntax (E1xx)
    /// The file is not valid YAML.
    E100,
    /// The file is larger than the size limit.
    E101,
    /// A document nests deeper, or has more nodes or alias expansions, than the limits allow.
    E102,
    /// The file is not valid UTF-8.
    E103,
    /// A mapping repeats a key.
    E104,
    /// A symlink, submodule or other non-regular file sits in a resource directory, or in place
    /// of one (a kind directory that is not a directory).
    E105,
    /// The config path holds more resource files than the limit: nothing was read.
    E106,
    // schema (E2xx)
    /// `apiVersion` missing or not `ritmo.dev/v1`.
    E200,
    /// `kind` missing or unknown.
    E201,
    /// The kind does not belong in this directory.
    E202,
    /// `metadata.name` missing or not a DNS label.
    E203,
    /// A field this kind does not define (a typo, usually).
    E204,
    /// A required field is missing.
    E205,
    /// A field has the wrong type.
    E206,
    /// A value is outside its allowed set or range.
    E207,
    /// A cron expression does not parse.
    E208,
    /// A branch filter or pattern is not a valid regular expression.
    E209,
    /// Pipeline stages: unknown `depends_on`, duplicate stage or a cycle.
    E210,
    /// Two documents declare the same kind and name.
    E211,
    /// A credential has both or neither of `encrypted_value` and `secret_ref`.
    E212,
    // references (E3xx)
    /// A reference names a resource that does not exist.
    E300,
    // secrets (E4xx)
    /// A plaintext `value:` in a credential.
    E400,
    /// A string that looks like a live secret (token, key).
    E401,
    /// An `encrypted_value` that is malformed or does not decrypt.
    E402,
    /// No key is configured to check an `encrypted_value`.
    E403,
    /// A `secret_ref` names an AWS Secrets Manager secret that does not exist.
    E404,
    // policy and ownership (E5xx)
    /// The plan would delete every managed resource.
    E500,
    /// The resource exists in the database but another target (or nobody) owns it.
    E501,
    // warnings (W)
    /// A resource left in the database because prune is off.
    W100,
    /// A file in a resource directory that is not YAML, or empty.
    W101,
    /// A ciphertext that is not bound to its credential's name.
    W102,
    /// A secret reference that cannot be checked from here.
    W103,
    /// A row labelled `managed-by: gitops` that no target's inventory owns: neither updated nor
    /// pruned until a target adopts it (`ritmo gitops adopt KIND/NAME`).
    W104,
    /// The plan waits for approval (delete threshold or credential delete).
    W500,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::E100 => "E100",
            Code::E101 => "E101",
            Code::E102 => "E102",
            Code::E103 => "E103",
            Code::E104 => "E104",
            Code::E105 => "E105",
            Code::E106 => "E106",
            Code::E200 => "E200",
            Code::E201 => "E201",
            Code::E202 => "E202",
            Code::E203 => "E203",
            Code::E204 => "E204",
            Code::E205 => "E205",
            Code::E206 => "E206",
            Code::E207 => "E207",
            Code::E208 => "E208",
            Code::E209 => "E209",
            Code::E210 => "E210",
            Code::E211 => "E211",
            Code::E212 => "E212",
            Code::E300 => "E300",
            Code::E400 => "E400",
            Code::E401 => "E401",
            Code::E402 => "E402",
            Code::E403 => "E403",
            Code::E404 => "E404",
            Code::E500 => "E500",
            Code::E501 => "E501",
            Code::W100 => "W100",
            Code::W101 => "W101",
            Code::W102 => "W102",
            Code::W103 => "W103",
            Code::W104 => "W104",
            Code::W500 => "W500",
        }
    }

    /// What usually fixes a finding of this code, shown as the `help:` line under its snippet.
    pub fn help(self) -> &'static str {
        match self {
            Code::E100 => {
                "fix the YAML syntax where the caret points; an editor with YAML support shows the structure"
            }
            Code::E101 => "split the file into several smaller files",
            Code::E102 => "flatten the document: fewer nested levels, nodes or aliases",
            Code::E103 => "save the file as UTF-8",
            Code::E104 => "keep one of the two keys",
            Code::E105 => {
                "replace it with a regular file or directory: symlinks and submodules are not read"
            }
            Code::E106 => "split the configuration over several targets (`path:`) or repositories",
            Code::E200 => "write `apiVersion: ritmo.dev/v1`",
            Code::E201 => "write one of Credential, Plugin, WorkerPool, Job, Webhook, Environment",
            Code::E202 => "move the file to the directory of its kind",
            Code::E203 => "use 1-63 lower-case letters, digits and `-`",
            Code::E204 => "remove the field or correct its spelling",
            Code::E205 => "add the field",
            Code::E206 => "write a value of the expected type",
            Code::E207 => "use a value from the allowed set or range",
            Code::E208 => {
                "write 5 fields: minute hour day-of-month month day-of-week, e.g. `0 2 * * *`"
            }
            Code::E209 => "fix the regular expression (Rust `regex` syntax)",
            Code::E210 => "make every `depends_on` name a stage of this pipeline, without cycles",
            Code::E211 => "rename one of them or remove the copy",
            Code::E212 => "keep exactly one of `encrypted_value` and `secret_ref`",
            Code::E300 => "define the resource it names, or fix the name",
            Code::E400 => {
                "encrypt it with `ritmo encrypt-credential --name NAME` and use `encrypted_value`, or use `secret_ref`; rotate the secret, Git keeps it"
            }
            Code::E401 => {
                "move it to a credential (`ritmo encrypt-credential` or `secret_ref`) and rotate it: Git keeps it"
            }
            Code::E402 => "produce it again with `ritmo encrypt-credential --name NAME`",
            Code::E403 => {
                "set RITMO_MASTER_ENCRYPTION_KEY or RITMO_MASTER_KEY_SECRET_ARN so it can be checked"
            }
            Code::E404 => "create the secret in AWS Secrets Manager, or fix its name",
            Code::E500 => {
                "check the repository, branch and path; approve the plan if the deletes are meant"
            }
            Code::E501 => "remove it from this repository, or delete it from its owner's first",
            Code::W100 => "delete it by hand, or turn prune on",
            Code::W101 => "remove the file, or put a resource in it",
            Code::W102 => "encrypt it again with `ritmo encrypt-credential --name NAME` to bind it",
            Code::W103 => "run where AWS is configured (AWS_REGION) to check it",
            Code::W104 => {
                "`ritmo gitops adopt KIND/NAME` if the repository has it, else delete the row by hand"
            }
            Code::W500 => "review the plan, then `ritmo gitops approve SYNC_ID`",
        }
    }

    /// Whether the line a finding of this code points at holds a secret, which no output may
    /// repeat.
    pub fn points_at_secret(self) -> bool {
        matches!(self, Code::E400 | Code::E401)
    }

    /// Warnings start with `W`; everything else is an error.
    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding, tied to a place in the repository (line and column 0 when it concerns the
/// repository as a whole, path empty too).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    /// Where the offending token ends (exclusive column, on `end_line`): the start until
    /// [`fill_spans`] has read the file. Defaults keep older JSON readable.
    #[serde(default)]
    pub end_line: u32,
    #[serde(default)]
    pub end_column: u32,
}

impl Diagnostic {
    /// A diagnostic at `at`, its severity taken from the code.
    pub fn new(code: Code, at: &SourceLocation, message: impl Into<String>) -> Self {
        Self {
            severity: code.severity(),
            code,
            path: at.path.clone(),
            line: at.line,
            column: at.column,
            message: message.into(),
            end_line: at.line,
            end_column: at.column,
        }
    }

    /// The `help:` line: the message's own "did you mean" when it has one, else the code's.
    pub fn help(&self) -> String {
        let suggestion = self.message.rfind("(did you mean ").and_then(|start| {
            let rest = &self.message[start + 1..];
            rest.find(')').map(|end| rest[..end].to_string())
        });
        if suggestion.is_none()
            && self.code == Code::E100
            && self.message.contains("mapping values are not allowed")
        {
            // The parser's words for a key indented differently from its siblings.
            return "check this line's indentation: the keys of one mapping line up, and a \
                    nested mapping starts on a line of its own"
                .to_string();
        }
        suggestion.unwrap_or_else(|| self.code.help().to_string())
    }

    /// A diagnostic about a whole file.
    pub fn in_file(code: Code, path: &str, message: impl Into<String>) -> Self {
        Self::new(code, &SourceLocation::new(path, 1, 1), message)
    }

    /// A diagnostic about the repository or plan as a whole.
    pub fn global(code: Code, message: impl Into<String>) -> Self {
        Self::new(code, &SourceLocation::new("", 0, 0), message)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// False while it points at an unresolved position ([`SourceLocation::unresolved`]).
    pub fn is_resolved(&self) -> bool {
        self.path.is_empty() || self.line != 0
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}[{}]: {}", self.severity, self.code, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}[{}]: {}",
                self.path, self.line, self.column, self.severity, self.code, self.message
            )
        }
    }
}

/// Sorts diagnostics by file and position so output is stable whatever order stages ran in.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (
            a.path.is_empty(),
            &a.path,
            a.line,
            a.column,
            a.code,
            &a.message,
        )
            .cmp(&(
                b.path.is_empty(),
                &b.path,
                b.line,
                b.column,
                b.code,
                &b.message,
            ))
    });
}

/// Sets each diagnostic's span end to the end of the token it points at, reading the files
/// through `text_of` (path to the file's text; `None` leaves the span as it is).
pub fn fill_spans<'a>(diagnostics: &mut [Diagnostic], text_of: impl Fn(&str) -> Option<&'a str>) {
    for diagnostic in diagnostics {
        if diagnostic.path.is_empty() || diagnostic.line == 0 {
            continue;
        }
        let Some(text) = text_of(&diagnostic.path) else {
            continue;
        };
        let Some(line) = text.lines().nth(diagnostic.line as usize - 1) else {
            continue;
        };
        let length = token_length(line, diagnostic.column as usize);
        diagnostic.end_line = diagnostic.line;
        diagnostic.end_column =
            diagnostic.column + u32::try_from(length).unwrap_or(u32::MAX - diagnostic.column);
    }
}

/// How many characters the YAML token starting at `column` (1-based, in characters) of
/// `line` spans: a quoted string to its closing quote, a flow bracket alone, a key to its
/// `:`, a plain value to the end of the line (a comment and trailing blanks excluded).
pub fn token_length(line: &str, column: usize) -> usize {
    let chars: Vec<char> = line.chars().skip(column.saturating_sub(1)).collect();
    let Some(&first) = chars.first() else {
        return 0;
    };
    match first {
        '"' | '\'' => chars[1..]
            .iter()
            .position(|&c| c == first)
            .map_or(chars.len(), |end| end + 2),
        '[' | '{' | ']' | '}' | ',' => 1,
        _ => {
            let mut end = chars.len();
            for (i, &c) in chars.iter().enumerate() {
                let next_is_blank = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
                let blank_before = i > 0 && chars[i - 1].is_whitespace();
                if (c == ':' && next_is_blank) || (c == '#' && blank_before) {
                    end = i;
                    break;
                }
            }
            let token: String = chars[..end].iter().collect();
            token.trim_end().chars().count().max(1)
        }
    }
}

/// Whether any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_path_line_column_severity_code_message() {
        let diagnostic = Diagnostic::new(
            Code::E204,
            &SourceLocation::new("jobs/a.yaml", 7, 3),
            "unknown field `timout`",
        );

        assert_eq!(
            diagnostic.to_string(),
            "jobs/a.yaml:7:3: error[E204]: unknown field `timout`"
        );
    }

    #[test]
    fn warning_codes_have_warning_severity() {
        assert_eq!(Code::W100.severity(), Severity::Warning);
        assert_eq!(Code::E300.severity(), Severity::Error);
    }

    #[test]
    fn serializes_with_the_documented_json_fields() {
        let diagnostic = Diagnostic::in_file(Code::E101, "jobs/big.yaml", "too large");

        let json = serde_json::to_value(&diagnostic).unwrap();

        assert_eq!(
            json,
            serde_json::json!({"severity": "error", "code": "E101", "path": "jobs/big.yaml",
                "line": 1, "column": 1, "message": "too large", "end_line": 1, "end_column": 1})
        );
    }

    #[test]
    fn the_span_ends_where_the_token_ends() {
        let text = "spec:\n  timout: 10\n  schedule: \"0 25 * * *\"  # nightly\n  on: [a\n";
        let at = |line, column| SourceLocation::new("jobs/a.yaml", line, column);
        let mut list = vec![
            Diagnostic::new(Code::E204, &at(2, 3), "unknown field"),
            Diagnostic::new(Code::E208, &at(3, 13), "bad cron"),
            Diagnostic::new(Code::E100, &at(4, 7), "unclosed"),
            Diagnostic::global(Code::E500, "all"),
        ];

        fill_spans(&mut list, |_| Some(text));

        let ends: Vec<(u32, u32)> = list.iter().map(|d| (d.end_line, d.end_column)).collect();
        assert_eq!(ends, [(2, 9), (3, 25), (4, 8), (0, 0)]);
    }

    #[test]
    fn help_prefers_the_messages_suggestion() {
        let at = SourceLocation::new("jobs/a.yaml", 7, 3);
        let typo = Diagnostic::new(
            Code::E204,
            &at,
            "unknown field `spec.timout` (did you mean `timeout`?)",
        );
        let other = Diagnostic::new(Code::E205, &at, "missing required field `spec.tier`");

        assert_eq!(typo.help(), "did you mean `timeout`?");
        assert_eq!(other.help(), "add the field");
    }

    #[test]
    fn sorting_puts_global_diagnostics_last_and_files_in_order() {
        let mut list = vec![
            Diagnostic::global(Code::E500, "all"),
            Diagnostic::new(Code::E204, &SourceLocation::new("b.yaml", 1, 1), "x"),
            Diagnostic::new(Code::E204, &SourceLocation::new("a.yaml", 9, 1), "x"),
            Diagnostic::new(Code::E204, &SourceLocation::new("a.yaml", 2, 1), "x"),
        ];

        sort(&mut list);

        let order: Vec<(String, u32)> = list.iter().map(|d| (d.path.clone(), d.line)).collect();
        assert_eq!(
            order,
            [
                ("a.yaml".into(), 2),
                ("a.yaml".into(), 9),
                ("b.yaml".into(), 1),
                (String::new(), 0)
            ]
        );
    }
}
