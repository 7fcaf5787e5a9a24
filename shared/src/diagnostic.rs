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
        }
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
                "line": 1, "column": 1, "message": "too large"})
        );
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
