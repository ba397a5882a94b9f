//! Diagnostics: what is wrong with a pipeline, where (file:line:column and YAML path), and
//! how to fix it. Validation collects every diagnostic and reports them all at once.

use crate::suggest::closest;
use std::fmt;
use std::path::{Path, PathBuf};

use super::location::{Location, SourceMap};
use super::path::YamlPath;

/// One problem in a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the document.
    pub path: YamlPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can say.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without a fix.
    pub fn new(path: YamlPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
            help: None,
        }
    }

    /// The same diagnostic with a fix.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Where a located diagnostic was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// In the pipeline file, at this position (unknown for values that are absent).
    File(Option<Location>),
    /// In a `--set` argument on the command line.
    SetArgument(String),
}

/// A diagnostic with its origin resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedDiagnostic {
    /// The problem.
    pub diagnostic: Diagnostic,
    /// Where it was written.
    pub origin: Origin,
}

/// Every problem found in one pipeline file (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    /// The pipeline file, as the user named it.
    pub file: PathBuf,
    /// The problems, in document order.
    pub items: Vec<LocatedDiagnostic>,
}

impl Diagnostics {
    /// Locates `diagnostics` in `file` using its source map; a diagnostic under a path set by
    /// a `--set` argument, or about a key on that path that the file does not hold (the
    /// argument created it), is attributed to that argument.
    pub fn locate(
        file: &Path,
        map: &SourceMap,
        overrides: &[(YamlPath, String)],
        diagnostics: Vec<Diagnostic>,
    ) -> Self {
        let mut items: Vec<LocatedDiagnostic> = diagnostics
            .into_iter()
            .map(|diagnostic| {
                let origin = match overrides.iter().rev().find(|(path, _)| {
                    diagnostic.path.starts_with(path)
                        || (path.starts_with(&diagnostic.path) && !map.written(&diagnostic.path))
                }) {
                    Some((_, argument)) => Origin::SetArgument(argument.clone()),
                    None => Origin::File(map.locate(&diagnostic.path)),
                };
                LocatedDiagnostic { diagnostic, origin }
            })
            .collect();
        items.sort_by_key(|item| match &item.origin {
            Origin::File(Some(at)) => (0, at.line, at.column),
            Origin::File(None) => (1, 0, 0),
            Origin::SetArgument(_) => (2, 0, 0),
        });
        items.dedup();
        Self {
            file: file.to_path_buf(),
            items,
        }
    }

    /// A single diagnostic about the file as a whole (unreadable, not YAML).
    pub fn whole_file(file: &Path, at: Option<Location>, message: String, help: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            items: vec![LocatedDiagnostic {
                diagnostic: Diagnostic::new(YamlPath::root(), message).with_help(help),
                origin: Origin::File(at),
            }],
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for item in &self.items {
            let d = &item.diagnostic;
            match &item.origin {
                Origin::File(Some(at)) => write!(f, "{file}:{}:{}: ", at.line, at.column)?,
                Origin::File(None) => write!(f, "{file}: ")?,
                Origin::SetArgument(arg) => write!(f, "--set {arg}: ")?,
            }
            if d.path.is_root() {
                writeln!(f, "{}", d.message)?;
            } else {
                writeln!(f, "`{}`: {}", d.path, d.message)?;
            }
            if let Some(help) = &d.help {
                writeln!(f, "    help: {help}")?;
            }
        }
        let n = self.items.len();
        write!(f, "{n} error{} in {file}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// Turns a serde error message into a diagnostic message and, for unknown keys or values, a
/// "did you mean" help listing the accepted names.
pub fn from_serde_message(message: &str) -> (String, Option<String>) {
    let message = message.trim_end_matches('.').to_string();
    let ticked: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let kind = if message.starts_with("unknown field") {
        "key"
    } else if message.starts_with("unknown variant") {
        "value"
    } else {
        return (message, None);
    };
    let Some((word, expected)) = ticked.split_first() else {
        return (message, None);
    };
    let listed = expected
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let help = match closest(word, expected.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? (accepted: {listed})"),
        None if expected.is_empty() => format!("remove `{word}`: no {kind}s are accepted here"),
        None => format!("accepted: {listed}"),
    };
    (format!("unknown {kind} `{word}`"), Some(help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_unknown_field_messages_become_suggestions() {
        let (message, help) =
            from_serde_message("unknown field `budgt`, expected one of `strategy`, `budget`");
        assert_eq!(message, "unknown key `budgt`");
        assert_eq!(
            help.as_deref(),
            Some("did you mean `budget`? (accepted: `strategy`, `budget`)")
        );
    }

    #[test]
    fn an_unknown_value_gets_a_suggestion() {
        let message = "unknown variant `txt`, expected `text` or `factors`";
        let (message, help) = from_serde_message(message);
        assert_eq!(message, "unknown value `txt`");
        assert_eq!(
            help.as_deref(),
            Some("did you mean `text`? (accepted: `text`, `factors`)")
        );
    }

    #[test]
    fn other_serde_messages_pass_through() {
        let (message, help) = from_serde_message("invalid type: string \"x\", expected usize");
        assert_eq!(message, "invalid type: string \"x\", expected usize");
        assert_eq!(help, None);
    }
}
