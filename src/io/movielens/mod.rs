//! MovieLens releases as downloaded from GroupLens, converted to the Parquet files a
//! pipeline reads.
//!
//! [`import_movielens`] recognises the release by its files:
//!
//! | release | ratings | movies | predefined splits |
//! |---|---|---|---|
//! | ml-100k | `u.data` (tab-separated) | `u.item` (`\|`-separated, Latin-1, genre flags named by `u.genre`) | `u1`..`u5`, `ua`, `ub` `.base`/`.test` |
//! | ml-1m, ml-10m | `ratings.dat` (`::`-separated) | `movies.dat` (`::`, genres `\|`-separated) | `r1`..`r5`, `ra`, `rb` `.train`/`.test` if `split_ratings.sh` was run |
//! | ml-latest(-small), ml-20m, ml-25m | `ratings.csv` | `movies.csv` (RFC 4180 quoting) | none |
//!
//! and writes into the destination folder:
//!
//! - `ratings.parquet`: `user_id: Int64, item_id: Int64, rating: Float32, timestamp: Int64`,
//!   in time order (ties by user, then item), so that a replay can stream it;
//! - `items.parquet`: `item_id: Int64, title: Utf8, genres: List<Utf8>` (genres verbatim:
//!   `(no genres listed)` stays one element; ml-100k's flags become the names in `u.genre`);
//! - each predefined split as `<name>.train.parquet` / `<name>.test.parquet` (ratings schema);
//! - the release's README and licence files, copied unchanged (the GroupLens terms ask that
//!   the README travel with any copy).
//!
//! Text is read as UTF-8, or Latin-1 where a line is not valid UTF-8 (older releases are
//! Latin-1); line ends may be `\n` or `\r\n`. Every file is written atomically; files in the
//! destination that the import does not produce are left alone.

mod parse;
mod read;
mod write;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use parse::{LineError, MovieRow, RatingRow};
use read::{for_each_csv_record, for_each_line};
use write::{RatingsWriter, write_items};

use super::{IoError, resolved};

/// Which MovieLens release (family) a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    /// MovieLens 100K: `u.data`, `u.item`, `u.genre`.
    Ml100k,
    /// MovieLens 1M: `ratings.dat`, `movies.dat` and `users.dat`.
    Ml1m,
    /// MovieLens 10M: `ratings.dat` and `movies.dat` without `users.dat`.
    Ml10m,
    /// A CSV release (ml-latest, ml-latest-small, ml-20m, ml-25m): `ratings.csv`, `movies.csv`.
    Csv,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Release::Ml100k => "ml-100k",
            Release::Ml1m => "ml-1m",
            Release::Ml10m => "ml-10m",
            Release::Csv => "MovieLens CSV release",
        })
    }
}

/// One predefined split file written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SplitFile {
    /// `u1.train`, `u1.test`, `ra.train`, ...: the file is `<name>.parquet`.
    pub name: String,
    /// Ratings in it.
    pub rows: u64,
}

/// What an import found and wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// The release recognised.
    pub release: Release,
    /// Ratings in `ratings.parquet`.
    pub ratings: u64,
    /// Distinct users among them.
    pub users: u64,
    /// Distinct items among them.
    pub rated_items: u64,
    /// Rows in `items.parquet` (every movie of the release, rated or not).
    pub items: u64,
    /// The predefined splits, in the release's order.
    pub splits: Vec<SplitFile>,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} ratings by {} users of {} items; {} items with titles and genres",
            self.release, self.ratings, self.users, self.rated_items, self.items
        )?;
        if !self.splits.is_empty() {
            let splits: Vec<String> = self
                .splits
                .iter()
                .map(|s| format!("{} {}", s.name, s.rows))
                .collect();
            writeln!(f, "predefined splits: {}", splits.join(", "))?;
        }
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// What is looked for, in the words of [`IoError::UnknownLayout`].
const LOOKED_FOR: &str = "u.data (ml-100k), ratings.dat (ml-1m, ml-10m) or ratings.csv \
                          (ml-latest, ml-latest-small, ml-20m, ml-25m)";

/// README and licence files copied beside the output, where the release has them.
const DOC_FILES: [&str; 6] = [
    "README",
    "README.txt",
    "README.md",
    "README.html",
    "LICENSE",
    "LICENSE.txt",
];

/// Converts the MovieLens release unpacked in `src` into Parquet files in `dest` (created if
/// missing). See the [module docs](self) for the files read and written.
pub fn import_movielens(src: &Path, dest: &Path) -> Result<ImportSummary, IoError> {
    let release = detect(src)?;
    fs::create_dir_all(dest).map_err(|source| IoError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let mut import = Import {
        src,
        dest,
        summary: ImportSummary {
            release,
            ratings: 0,
            users: 0,
            rated_items: 0,
            items: 0,
            splits: Vec::new(),
            files: Vec::new(),
        },
    };
    match release {
        Release::Ml100k => import.ml100k()?,
        Release::Ml1m | Release::Ml10m => import.dat()?,
        Release::Csv => import.csv()?,
    }
    import.copy_docs()?;
    Ok(import.summary)
}

/// Which release `src` holds, by its ratings file.
fn detect(src: &Path) -> Result<Release, IoError> {
    if !src.is_dir() {
        if src.exists() {
            return Err(IoError::UnknownLayout {
                dir: src.to_path_buf(),
                looked_for: LOOKED_FOR,
                hint: src
                    .parent()
                    .filter(|p| release_in(p).is_some())
                    .map(|p| p.display().to_string()),
            });
        }
        return Err(IoError::FileNotFound {
            what: "MovieLens folder",
            path: src.to_path_buf(),
            resolved: resolved(src),
            fix: "pass the folder the release's archive unpacked into (e.g. ~/Downloads/ml-1m)",
        });
    }
    if let Some(release) = release_in(src) {
        return Ok(release);
    }
    // A common slip: pointing at the folder the archive was unpacked into.
    let hint = fs::read_dir(src).ok().and_then(|entries| {
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir() && release_in(p).is_some())
            .collect();
        candidates.sort();
        candidates.first().map(|p| p.display().to_string())
    });
    Err(IoError::UnknownLayout {
        dir: src.to_path_buf(),
        looked_for: LOOKED_FOR,
        hint,
    })
}

fn release_in(dir: &Path) -> Option<Release> {
    if dir.join("u.data").is_file() {
        Some(Release::Ml100k)
    } else if dir.join("ratings.dat").is_file() {
        Some(if dir.join("users.dat").is_file() {
            Release::Ml1m
        } else {
            Release::Ml10m
        })
    } else if dir.join("ratings.csv").is_file() {
        Some(Release::Csv)
    } else {
        None
    }
}

/// Distinct users and items of the main ratings file.
#[derive(Default)]
struct Distinct {
    users: HashSet<i64>,
    items: HashSet<i64>,
}

/// How a ratings file is laid out.
#[derive(Clone, Copy)]
enum RatingsFormat {
    Tab,
    DoubleColon,
    Csv,
}

/// One import in progress.
struct Import<'a> {
    src: &'a Path,
    dest: &'a Path,
    summary: ImportSummary,
}

impl Import<'_> {
    fn ml100k(&mut self) -> Result<(), IoError> {
        let genre_path = self.src.join("u.genre");
        let mut indexed: Vec<(usize, String)> = Vec::new();
        for_each_line(&genre_path, "MovieLens genre file", |line, text| {
            let (name, index) = parse::genre_100k(text).map_err(|e| e.at(&genre_path, line))?;
            indexed.push((index, name));
            Ok(())
        })?;
        indexed.sort();
        if indexed
            .iter()
            .enumerate()
            .any(|(i, (index, _))| i != *index)
        {
            return Err(LineError::Malformed(format!(
                "genre indices must be 0..{} without gaps or repeats",
                indexed.len()
            ))
            .at(&genre_path, 1));
        }
        let genre_names: Vec<String> = indexed.into_iter().map(|(_, name)| name).collect();

        let item_path = self.src.join("u.item");
        let mut movies = Vec::new();
        for_each_line(&item_path, "MovieLens movies file", |line, text| {
            let movie = parse::item_100k(text, &genre_names).map_err(|e| e.at(&item_path, line))?;
            movies.push((line, movie));
            Ok(())
        })?;
        self.items(&item_path, movies)?;
        self.ratings("u.data", RatingsFormat::Tab)?;
        for name in ["u1", "u2", "u3", "u4", "u5", "ua", "ub"] {
            self.split(name, "base", "train", RatingsFormat::Tab)?;
            self.split(name, "test", "test", RatingsFormat::Tab)?;
        }
        Ok(())
    }

    fn dat(&mut self) -> Result<(), IoError> {
        let movie_path = self.src.join("movies.dat");
        let mut movies = Vec::new();
        for_each_line(&movie_path, "MovieLens movies file", |line, text| {
            let movie = parse::dat_movie(text).map_err(|e| e.at(&movie_path, line))?;
            movies.push((line, movie));
            Ok(())
        })?;
        self.items(&movie_path, movies)?;
        self.ratings("ratings.dat", RatingsFormat::DoubleColon)?;
        for name in ["r1", "r2", "r3", "r4", "r5", "ra", "rb"] {
            self.split(name, "train", "train", RatingsFormat::DoubleColon)?;
            self.split(name, "test", "test", RatingsFormat::DoubleColon)?;
        }
        Ok(())
    }

    fn csv(&mut self) -> Result<(), IoError> {
        let movie_path = self.src.join("movies.csv");
        let mut movies = Vec::new();
        for_each_csv_record(
            &movie_path,
            "MovieLens movies file",
            &["movieId", "title", "genres"],
            |line, f| {
                let movie =
                    parse::csv_movie(&f[0], &f[1], &f[2]).map_err(|e| e.at(&movie_path, line))?;
                movies.push((line, movie));
                Ok(())
            },
        )?;
        self.items(&movie_path, movies)?;
        self.ratings("ratings.csv", RatingsFormat::Csv)
    }

    /// Writes `items.parquet` from the movies read from `path` (with their line numbers),
    /// refusing a movie id defined twice.
    fn items(&mut self, path: &Path, movies: Vec<(u64, MovieRow)>) -> Result<(), IoError> {
        let mut defined: HashMap<i64, u64> = HashMap::with_capacity(movies.len());
        for (line, movie) in &movies {
            if let Some(first) = defined.insert(movie.id, *line) {
                return Err(LineError::Malformed(format!(
                    "movie id {} is already defined on line {first}",
                    movie.id
                ))
                .at(path, *line));
            }
        }
        let movies: Vec<MovieRow> = movies.into_iter().map(|(_, m)| m).collect();
        let out = self.dest.join("items.parquet");
        write_items(&out, &movies)?;
        self.summary.items = movies.len() as u64;
        self.summary.files.push(out);
        Ok(())
    }

    /// Writes `ratings.parquet` from the release's main ratings file.
    fn ratings(&mut self, file: &str, format: RatingsFormat) -> Result<(), IoError> {
        let out = self.dest.join("ratings.parquet");
        let mut distinct = Distinct::default();
        let rows = convert_ratings(&self.src.join(file), &out, format, Some(&mut distinct))?;
        self.summary.ratings = rows;
        self.summary.users = distinct.users.len() as u64;
        self.summary.rated_items = distinct.items.len() as u64;
        self.summary.files.push(out);
        Ok(())
    }

    /// Writes `<name>.<part>.parquet` from `<name>.<ext>` if the release has that file.
    fn split(
        &mut self,
        name: &str,
        ext: &str,
        part: &str,
        format: RatingsFormat,
    ) -> Result<(), IoError> {
        let input = self.src.join(format!("{name}.{ext}"));
        if !input.is_file() {
            return Ok(());
        }
        let split = format!("{name}.{part}");
        let out = self.dest.join(format!("{split}.parquet"));
        let rows = convert_ratings(&input, &out, format, None)?;
        self.summary.splits.push(SplitFile { name: split, rows });
        self.summary.files.push(out);
        Ok(())
    }

    /// Copies the README and licence files (unless `dest` is `src`).
    fn copy_docs(&mut self) -> Result<(), IoError> {
        let same_folder = match (fs::canonicalize(self.src), fs::canonicalize(self.dest)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same_folder {
            return Ok(());
        }
        for name in DOC_FILES {
            let from = self.src.join(name);
            if !from.is_file() {
                continue;
            }
            let bytes = fs::read(&from).map_err(|source| IoError::Read {
                what: "MovieLens README",
                path: from.clone(),
                source,
            })?;
            let to = self.dest.join(name);
            super::atomic::write_bytes_atomic(&to, &bytes)?;
            self.summary.files.push(to);
        }
        Ok(())
    }
}

/// Converts one ratings file; counts distinct users and items into `distinct` if given.
fn convert_ratings(
    input: &Path,
    output: &Path,
    format: RatingsFormat,
    mut distinct: Option<&mut Distinct>,
) -> Result<u64, IoError> {
    const WHAT: &str = "MovieLens ratings file";
    // Rows are collected and written in time order (ties by user, item), so a replay can
    // stream the file; releases list ratings by user. 24 bytes a row: 600 MB for ml-25m.
    let mut rows: Vec<RatingRow> = Vec::new();
    let mut push = |row: RatingRow| -> Result<(), IoError> {
        if let Some(d) = distinct.as_deref_mut() {
            d.users.insert(row.user);
            d.items.insert(row.item);
        }
        rows.push(row);
        Ok(())
    };
    match format {
        RatingsFormat::Tab | RatingsFormat::DoubleColon => {
            let parse = match format {
                RatingsFormat::Tab => parse::tab_rating,
                _ => parse::dat_rating,
            };
            for_each_line(input, WHAT, |line, text| {
                push(parse(text).map_err(|e| e.at(input, line))?)
            })?;
        }
        RatingsFormat::Csv => {
            for_each_csv_record(
                input,
                WHAT,
                &["userId", "movieId", "rating", "timestamp"],
                |line, f| {
                    let row = parse::rating_fields(&f[0], &f[1], &f[2], &f[3])
                        .map_err(|e| e.at(input, line))?;
                    push(row)
                },
            )?;
        }
    }
    rows.sort_by_key(|r| (r.timestamp, r.user, r.item));
    let mut writer = RatingsWriter::create(output)?;
    for row in rows {
        writer.push(row)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests;
