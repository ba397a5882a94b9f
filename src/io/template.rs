//! Item text templates such as `"{title} | {genres}"`: parsing and rendering, with no file
//! I/O, so the planner can check a template before any file is read.
//!
//! A template is literal text with `{column}` placeholders. `{{` and `}}` stand for literal
//! braces. The name between the braces is taken verbatim (spaces included), so it must be
//! spelled exactly as the column is.
//!
//! ```
//! use recsift::io::template::{Template, template_columns};
//!
//! assert_eq!(template_columns("{title} | {genres}").unwrap(), ["title", "genres"]);
//!
//! let t = Template::parse("{title} {{{year}}}").unwrap();
//! let mut text = String::new();
//! t.render(&mut text, |column, out| out.push_str(["Heat", "1995"][column]));
//! assert_eq!(text, "Heat {1995}");
//! ```

use crate::suggest::closest;

/// What is wrong with a template. Positions count characters from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error(
        "`{{` at character {position} is never closed; end the placeholder with `}}`, or \
         write `{{{{` for a literal brace"
    )]
    Unclosed {
        /// Where the `{` is.
        position: usize,
    },
    /// A `}` that closes nothing.
    #[error("`}}` at character {position} closes nothing; write `}}}}` for a literal brace")]
    UnmatchedClose {
        /// Where the `}` is.
        position: usize,
    },
    /// `{}` with no column name.
    #[error(
        "`{{}}` at character {position} names no column; write a column name, e.g. `{{title}}`"
    )]
    EmptyPlaceholder {
        /// Where the `{` is.
        position: usize,
    },
    /// A placeholder naming a column that the item file does not have.
    #[error(
        "no column `{column}`{}; columns present: {}",
        super::did_you_mean(.suggestion.as_deref()), .present.join(", ")
    )]
    UnknownColumn {
        /// The name in the placeholder.
        column: String,
        /// The present column closest to it, if any is close.
        suggestion: Option<String>,
        /// The columns available.
        present: Vec<String>,
    },
}

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Text copied as is (braces already unescaped).
    Literal(String),
    /// The value of the column at this index of [`Template::columns`].
    Column(usize),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    columns: Vec<String>,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            let position = i + 1;
            match c {
                '{' if chars.next_if(|&(_, n)| n == '{').is_some() => literal.push('{'),
                '}' if chars.next_if(|&(_, n)| n == '}').is_some() => literal.push('}'),
                '}' => return Err(TemplateError::UnmatchedClose { position }),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, '{')) | None => {
                                return Err(TemplateError::Unclosed { position });
                            }
                            Some((_, n)) => name.push(n),
                        }
                    }
                    if name.is_empty() {
                        return Err(TemplateError::EmptyPlaceholder { position });
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    let slot = match columns.iter().position(|c| *c == name) {
                        Some(slot) => slot,
                        None => {
                            columns.push(name);
                            columns.len() - 1
                        }
                    };
                    segments.push(Segment::Column(slot));
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Self { segments, columns })
    }

    /// The distinct columns the template uses, in order of first use. Render callbacks
    /// receive indices into this list.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Checks that every column the template uses is in `present`.
    pub fn check_columns<'a>(
        &self,
        present: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), TemplateError> {
        let present: Vec<&str> = present.into_iter().collect();
        match self.columns.iter().find(|c| !present.contains(&c.as_str())) {
            None => Ok(()),
            Some(missing) => Err(TemplateError::UnknownColumn {
                column: missing.clone(),
                suggestion: closest(missing, present.iter().copied()).map(str::to_string),
                present: present.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    /// Appends the rendered text to `out`; `value(column, out)` appends the value of
    /// `self.columns()[column]`.
    pub fn render(&self, out: &mut String, mut value: impl FnMut(usize, &mut String)) {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Column(slot) => value(*slot, out),
            }
        }
    }
}

/// The distinct columns `template` uses, in order of first use; an error if it does not
/// parse.
pub fn template_columns(template: &str) -> Result<Vec<String>, TemplateError> {
    Ok(Template::parse(template)?.columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, values: &[&str]) -> String {
        let t = Template::parse(template).unwrap();
        let mut out = String::new();
        t.render(&mut out, |slot, out| out.push_str(values[slot]));
        out
    }

    #[test]
    fn placeholders_repeat_and_escapes_unescape() {
        assert_eq!(template_columns("{a}-{b}-{a}").unwrap(), ["a", "b"]);
        assert_eq!(render("{a}-{b}-{a}", &["1", "2"]), "1-2-1");
        assert_eq!(render("{{a}} {a}", &["x"]), "{a} x");
        assert_eq!(render("}}{{", &[]), "}{");
        assert_eq!(render("plain", &[]), "plain");
        assert_eq!(render("", &[]), "");
        assert_eq!(template_columns("{ü ber}").unwrap(), ["ü ber"]);
    }

    #[test]
    fn brace_errors_give_character_positions() {
        assert_eq!(
            Template::parse("é {title").unwrap_err(),
            TemplateError::Unclosed { position: 3 }
        );
        assert_eq!(
            Template::parse("{a{b}").unwrap_err(),
            TemplateError::Unclosed { position: 1 }
        );
        assert_eq!(
            Template::parse("{a} }").unwrap_err(),
            TemplateError::UnmatchedClose { position: 5 }
        );
        assert_eq!(
            Template::parse("x{}").unwrap_err(),
            TemplateError::EmptyPlaceholder { position: 2 }
        );
        assert_eq!(
            TemplateError::Unclosed { position: 3 }.to_string(),
            "`{` at character 3 is never closed; end the placeholder with `}`, or write `{{` \
             for a literal brace"
        );
        assert_eq!(
            TemplateError::UnmatchedClose { position: 5 }.to_string(),
            "`}` at character 5 closes nothing; write `}}` for a literal brace"
        );
    }

    #[test]
    fn unknown_columns_get_a_suggestion() {
        let t = Template::parse("{title} | {genre}").unwrap();
        assert_eq!(t.check_columns(["item_id", "title", "genres"]), {
            Err(TemplateError::UnknownColumn {
                column: "genre".into(),
                suggestion: Some("genres".into()),
                present: vec!["item_id".into(), "title".into(), "genres".into()],
            })
        });
        assert_eq!(
            t.check_columns(["item_id", "title", "genres"])
                .unwrap_err()
                .to_string(),
            "no column `genre` (did you mean `genres`?); columns present: item_id, title, genres"
        );
        assert!(t.check_columns(["genre", "title"]).is_ok());
    }
}
