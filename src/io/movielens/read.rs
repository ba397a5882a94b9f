//! Reading MovieLens text files line by line (or CSV record by record), streaming, with the
//! line number of each for errors.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::parse::{LineError, decode_text};
use crate::io::{IoError, resolved};

/// Buffer size for the (possibly gigabyte) rating files.
const BUFFER_BYTES: usize = 1 << 20;

impl LineError {
    /// The error as it applies to `line` of `path`.
    pub(super) fn at(self, path: &Path, line: u64) -> IoError {
        match self {
            LineError::Malformed(reason) => IoError::Malformed {
                path: path.to_path_buf(),
                line,
                reason,
            },
            LineError::NonFiniteRating(value) => IoError::NonFiniteRating {
                path: path.to_path_buf(),
                line,
                value,
            },
        }
    }
}

fn open(path: &Path, what: &'static str) -> Result<File, IoError> {
    File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            IoError::FileNotFound {
                what,
                path: path.to_path_buf(),
                resolved: resolved(path),
                fix: "an unpacked release has it: unpack the archive again, or point to the \
                      folder that holds the release's files",
            }
        } else {
            IoError::Read {
                what,
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Calls `f(line_number, text)` for every non-blank line of `path` (numbered from 1; line
/// ends `\n` or `\r\n`; each line decoded as UTF-8, or Latin-1 where it is not UTF-8).
pub(super) fn for_each_line(
    path: &Path,
    what: &'static str,
    mut f: impl FnMut(u64, &str) -> Result<(), IoError>,
) -> Result<(), IoError> {
    let mut reader = BufReader::with_capacity(BUFFER_BYTES, open(path, what)?);
    let mut buffer = Vec::new();
    let mut line = 0u64;
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|source| IoError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            return Ok(());
        }
        line += 1;
        let mut bytes = buffer.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = bytes {
            bytes = rest;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        f(line, &decode_text(bytes))?;
    }
}

/// Calls `f(line_number, fields)` for every record of the CSV file `path` (RFC 4180: quoted
/// fields with commas, quotes and line breaks; `\n` or `\r\n`), where `fields` are the
/// values of the `columns` named in its header, in that order. The line number is where the
/// record starts. A line break inside a quoted field reads as `\n`.
pub(super) fn for_each_csv_record(
    path: &Path,
    what: &'static str,
    columns: &[&str],
    mut f: impl FnMut(u64, &[Cow<'_, str>]) -> Result<(), IoError>,
) -> Result<(), IoError> {
    let file = BufReader::with_capacity(BUFFER_BYTES, open(path, what)?);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(CrlfToLf::new(file));
    let header = reader
        .byte_headers()
        .map_err(|e| csv_error(path, what, e))?
        .clone();
    let names: Vec<Cow<'_, str>> = header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let name = if i == 0 {
                name.strip_prefix(b"\xef\xbb\xbf").unwrap_or(name)
            } else {
                name
            };
            decode_text(name)
        })
        .collect();
    let positions = columns
        .iter()
        .map(|column| {
            names
                .iter()
                .position(|n| n.trim() == *column)
                .ok_or_else(|| {
                    LineError::Malformed(format!(
                        "the header has no column `{column}` (it has: {})",
                        names.join(", ")
                    ))
                    .at(path, 1)
                })
        })
        .collect::<Result<Vec<usize>, IoError>>()?;

    let mut record = csv::ByteRecord::new();
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, what, e))?
    {
        let line = record.position().map_or(0, csv::Position::line);
        let fields: Vec<Cow<'_, str>> = positions
            .iter()
            .map(|&p| decode_text(record.get(p).unwrap_or_default()))
            .collect();
        f(line, &fields)?;
    }
    Ok(())
}

/// A reader that turns every `\r\n` into `\n` (a lone `\r` is kept).
///
/// The csv crate parses CRLF files correctly, but it ends a CRLF record at the `\r` and
/// counts the `\n` into the next record, so a record's reported line is one too low. With
/// LF endings its line numbers are exact.
struct CrlfToLf<R> {
    inner: R,
    /// A `\r` was read last and is held back until the next byte shows whether a `\n`
    /// follows.
    pending_cr: bool,
}

impl<R: BufRead> CrlfToLf<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            pending_cr: false,
        }
    }
}

impl<R: BufRead> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                if std::mem::take(&mut self.pending_cr) {
                    out[0] = b'\r';
                    return Ok(1);
                }
                return Ok(0);
            }
            let (mut written, mut consumed) = (0, 0);
            while written < out.len() && consumed < input.len() {
                let byte = input[consumed];
                if std::mem::take(&mut self.pending_cr) && byte != b'\n' {
                    out[written] = b'\r';
                    written += 1;
                    continue; // `byte` is looked at again, if there is room for it
                }
                consumed += 1;
                if byte == b'\r' {
                    self.pending_cr = true;
                } else {
                    out[written] = byte;
                    written += 1;
                }
            }
            self.inner.consume(consumed);
            if written > 0 {
                return Ok(written);
            }
        }
    }
}

fn csv_error(path: &Path, what: &'static str, error: csv::Error) -> IoError {
    let line = error.position().map_or(0, csv::Position::line);
    match error.into_kind() {
        csv::ErrorKind::Io(source) => IoError::Read {
            what,
            path: path.to_path_buf(),
            source,
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => LineError::Malformed(format!(
            "expected {expected_len} comma-separated fields as in the header, found {len} \
             (a field with a comma must be quoted)"
        ))
        .at(path, line),
        other => LineError::Malformed(format!("{other:?}")).at(path, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(bytes: &[u8]) -> Vec<(u64, String)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dat");
        std::fs::write(&path, bytes).unwrap();
        let mut out = Vec::new();
        for_each_line(&path, "test file", |n, text| {
            out.push((n, text.to_string()));
            Ok(())
        })
        .unwrap();
        out
    }

    fn csv_of(text: &[u8], columns: &[&str]) -> Result<Vec<(u64, Vec<String>)>, IoError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        for_each_csv_record(&path, "test file", columns, |n, fields| {
            out.push((n, fields.iter().map(|f| f.to_string()).collect()));
            Ok(())
        })
        .map_err(|e| {
            // Re-root the path so messages can be compared.
            match e {
                IoError::Malformed { line, reason, .. } => IoError::Malformed {
                    path: "f.csv".into(),
                    line,
                    reason,
                },
                other => other,
            }
        })?;
        Ok(out)
    }

    #[test]
    fn lines_split_on_lf_and_crlf_skip_blanks_and_keep_numbers() {
        assert_eq!(
            lines_of(b"a::b\r\n\r\nc\xe9::d\nlast"),
            [(1, "a::b".into()), (3, "cé::d".into()), (4, "last".into())]
        );
    }

    #[test]
    fn csv_records_with_quotes_commas_and_crlf() {
        let text = b"movieId,title,genres\r\n\
            11,\"American President, The (1995)\",Comedy|Drama|Romance\r\n\
            12,\"Dracula: Dead and Loving It \"\"Spoof\"\" (1995)\",Comedy|Horror\r\n\
            13,\"Two\r\nLines\",(no genres listed)\r\n";
        let rows = csv_of(text, &["movieId", "title", "genres"]).unwrap();
        assert_eq!(
            rows,
            [
                (
                    2,
                    vec![
                        "11".into(),
                        "American President, The (1995)".into(),
                        "Comedy|Drama|Romance".into()
                    ]
                ),
                (
                    3,
                    vec![
                        "12".into(),
                        "Dracula: Dead and Loving It \"Spoof\" (1995)".into(),
                        "Comedy|Horror".into()
                    ]
                ),
                (
                    4,
                    vec![
                        "13".into(),
                        "Two\nLines".into(),
                        "(no genres listed)".into()
                    ]
                ),
            ]
        );
        // Columns are found by header name, in any order, with or without a BOM.
        let rows = csv_of(
            b"\xef\xbb\xbfgenres,movieId\nDrama,5\n",
            &["movieId", "genres"],
        )
        .unwrap();
        assert_eq!(rows, [(2, vec!["5".into(), "Drama".into()])]);
    }

    #[test]
    fn crlf_becomes_lf_across_buffer_boundaries() {
        let input: &[u8] = b"a\r\nb\rc\r\r\n\r\n\rd\r";
        for capacity in [1, 2, 3, 64] {
            for chunk in [1, 2, 5, 64] {
                let mut reader = CrlfToLf::new(BufReader::with_capacity(capacity, input));
                let mut out = Vec::new();
                let mut buf = vec![0; chunk];
                loop {
                    let n = reader.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                assert_eq!(
                    out, b"a\nb\rc\r\n\n\rd\r",
                    "capacity {capacity}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn csv_shape_errors_name_the_line() {
        let err = csv_of(
            b"movieId,title,genres\n1,A,Drama\n2,B, The,Drama\n",
            &["movieId"],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.csv:3: expected 3 comma-separated fields as in the header, found 4 (a field with \
             a comma must be quoted)"
        );
        let err = csv_of(
            b"movieId,title,genres\r\n1,A,Drama\r\n2,B, The,Drama\r\n",
            &["movieId"],
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("f.csv:3: expected 3"), "{err}");
        let err = csv_of(b"userId,movieId\n1,2\n", &["userId", "rating"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.csv:1: the header has no column `rating` (it has: userId, movieId)"
        );
    }
}
