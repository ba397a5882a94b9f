//! Import tests: tiny inline releases of each format, then the real releases (found by
//! `crate::fixtures`; skipped when absent), then the embedded `data/ml-latest-small` against a fresh import.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Int64Type};

use super::*;
use crate::fixtures::{Fixture, find};
use crate::io::parquet_file::read_parquet;

type Rating = (i64, i64, f32, i64);
type Movie = (i64, String, Vec<String>);

fn read_table(path: &Path) -> RecordBatch {
    let batches = read_parquet(path).unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn read_ratings(path: &Path) -> Vec<Rating> {
    let t = read_table(path);
    let schema = t.schema();
    let types: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            ("user_id", &DataType::Int64),
            ("item_id", &DataType::Int64),
            ("rating", &DataType::Float32),
            ("timestamp", &DataType::Int64),
        ]
    );
    let int = |i: usize| t.column(i).as_primitive::<Int64Type>().values().to_vec();
    let (u, it, ts) = (int(0), int(1), int(3));
    let r = t.column(2).as_primitive::<Float32Type>().values().to_vec();
    (0..t.num_rows())
        .map(|i| (u[i], it[i], r[i], ts[i]))
        .collect()
}

fn read_items(path: &Path) -> Vec<Movie> {
    let t = read_table(path);
    let ids = t.column(0).as_primitive::<Int64Type>();
    let titles = t.column(1).as_string::<i32>();
    let genres = t.column(2).as_list::<i32>();
    (0..t.num_rows())
        .map(|i| {
            let g = genres.value(i);
            let g = g.as_string::<i32>();
            (
                ids.value(i),
                titles.value(i).to_string(),
                (0..g.len()).map(|j| g.value(j).to_string()).collect(),
            )
        })
        .collect()
}

fn release(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

const GENRES_100K: &[u8] = b"unknown|0\nAction|1\nComedy|2\n\n";

#[test]
fn ml100k_with_latin1_titles_flags_and_splits() {
    let src = release(&[
        ("u.data", b"1\t10\t5\t881250949\n2\t10\t3\t881250950\n1\t20\t4\t881250951\n"),
        (
            "u.item",
            b"10|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|1\n20|unknown||||1|0|0\n30|Heat (1995)|d||u|0|0|0\n",
        ),
        ("u.genre", GENRES_100K),
        ("u1.base", b"1\t10\t5\t881250949\n2\t10\t3\t881250950\n"),
        ("u1.test", b"1\t20\t4\t881250951\n"),
        ("ua.test", b"2\t10\t3\t881250950\n"),
        ("README", b"terms"),
    ]);
    let dest = src.path().join("out");
    let summary = import_movielens(src.path(), &dest).unwrap();
    assert_eq!(summary.release, Release::Ml100k);
    assert_eq!(
        (
            summary.ratings,
            summary.users,
            summary.rated_items,
            summary.items
        ),
        (3, 2, 2, 3)
    );
    assert_eq!(
        summary.splits,
        [
            SplitFile {
                name: "u1.train".into(),
                rows: 2
            },
            SplitFile {
                name: "u1.test".into(),
                rows: 1
            },
            SplitFile {
                name: "ua.test".into(),
                rows: 1
            },
        ]
    );
    assert_eq!(
        names(&summary.files),
        [
            "items.parquet",
            "ratings.parquet",
            "u1.train.parquet",
            "u1.test.parquet",
            "ua.test.parquet",
            "README"
        ]
    );
    assert_eq!(
        read_ratings(&dest.join("ratings.parquet")),
        [
            (1, 10, 5.0, 881250949),
            (2, 10, 3.0, 881250950),
            (1, 20, 4.0, 881250951)
        ]
    );
    assert_eq!(
        read_ratings(&dest.join("u1.test.parquet")),
        [(1, 20, 4.0, 881250951)]
    );
    assert_eq!(
        read_items(&dest.join("items.parquet")),
        [
            (
                10,
                "Café (1995)".into(),
                vec!["Action".into(), "Comedy".into()]
            ),
            (20, "unknown".into(), vec!["unknown".into()]),
            (30, "Heat (1995)".into(), vec![]),
        ]
    );
    assert_eq!(fs::read(dest.join("README")).unwrap(), b"terms");
}

#[test]
fn ml1m_and_ml10m_double_colon_formats() {
    let movies: &[u8] = b"1::Toy Story (1995)::Animation|Children's|Comedy\r\n\
        2::Mis\xe9rables, Les (1995)::Drama\r\n";
    let src = release(&[
        (
            "ratings.dat",
            b"1::1::5::978300760\r\n1::2::3::978302109\r\n",
        ),
        ("movies.dat", movies),
        ("users.dat", b"1::F::1::10::48067\n"),
    ]);
    let summary = import_movielens(src.path(), src.path()).unwrap();
    assert_eq!(summary.release, Release::Ml1m);
    assert_eq!(
        read_items(&src.path().join("items.parquet"))[1],
        (2, "Misérables, Les (1995)".into(), vec!["Drama".into()])
    );

    let src = release(&[
        ("ratings.dat", b"1::122::4.5::838985046\n"),
        (
            "movies.dat",
            "1::Amélie (2001)::(no genres listed)\n".as_bytes(),
        ),
        ("r1.train", b"1::122::4.5::838985046\n"),
        ("r1.test", b"1::122::0.5::838985047\n"),
    ]);
    let dest = src.path().join("parquet");
    let summary = import_movielens(src.path(), &dest).unwrap();
    assert_eq!(summary.release, Release::Ml10m);
    assert_eq!(
        read_ratings(&dest.join("ratings.parquet")),
        [(1, 122, 4.5, 838985046)]
    );
    assert_eq!(
        read_ratings(&dest.join("r1.test.parquet")),
        [(1, 122, 0.5, 838985047)]
    );
    assert_eq!(
        read_items(&dest.join("items.parquet")),
        [(1, "Amélie (2001)".into(), vec!["(no genres listed)".into()])]
    );
}

#[test]
fn csv_release_with_quotes_commas_and_crlf() {
    let src = release(&[
        (
            "ratings.csv",
            b"userId,movieId,rating,timestamp\r\n1,11,4.0,964982703\r\n1,12,0.5,964981247\r\n2,11,3.5,964982224\r\n",
        ),
        (
            "movies.csv",
            b"movieId,title,genres\r\n\
              11,\"American President, The (1995)\",Comedy|Drama|Romance\r\n\
              12,\"\"\"Great Performances\"\" Cats (1998)\",Musical\r\n\
              13,Unrated (2018),(no genres listed)\r\n",
        ),
        ("README.txt", b"readme"),
        ("links.csv", b"movieId,imdbId,tmdbId\n"),
    ]);
    let dest = src.path().join("out");
    let summary = import_movielens(src.path(), &dest).unwrap();
    assert_eq!(summary.release, Release::Csv);
    assert_eq!(
        (
            summary.ratings,
            summary.users,
            summary.rated_items,
            summary.items
        ),
        (3, 2, 2, 3)
    );
    assert_eq!(
        names(&summary.files),
        ["items.parquet", "ratings.parquet", "README.txt"]
    );
    assert_eq!(
        read_ratings(&dest.join("ratings.parquet")),
        // In time order, not file order.
        [
            (1, 12, 0.5, 964981247),
            (2, 11, 3.5, 964982224),
            (1, 11, 4.0, 964982703)
        ]
    );
    assert_eq!(
        read_items(&dest.join("items.parquet")),
        [
            (
                11,
                "American President, The (1995)".into(),
                vec!["Comedy".into(), "Drama".into(), "Romance".into()]
            ),
            (
                12,
                "\"Great Performances\" Cats (1998)".into(),
                vec!["Musical".into()]
            ),
            (
                13,
                "Unrated (2018)".into(),
                vec!["(no genres listed)".into()]
            ),
        ]
    );
    assert_eq!(
        summary.to_string(),
        format!(
            "MovieLens CSV release: 3 ratings by 2 users of 2 items; 3 items with titles and genres\n\
             wrote {0}/items.parquet\nwrote {0}/ratings.parquet\nwrote {0}/README.txt\n",
            dest.display()
        )
    );
}

#[test]
fn a_malformed_line_names_file_line_and_shape() {
    let src = release(&[
        ("u.data", b"1\t10\t5\t881250949\n\n2\t10\t881250950\n"),
        ("u.item", b"10|A|d||u|0|1|0\n"),
        ("u.genre", GENRES_100K),
    ]);
    let err = import_movielens(src.path(), &src.path().join("out")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: expected 4 tab-separated fields (user id, movie id, rating, timestamp), found 3",
            src.path().join("u.data").display()
        )
    );
}

#[test]
fn a_non_finite_rating_is_refused_and_leaves_no_ratings_file() {
    let src = release(&[
        (
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,NaN,2\n",
        ),
        ("movies.csv", b"movieId,title,genres\n1,A,Drama\n"),
    ]);
    let dest = src.path().join("out");
    let err = import_movielens(src.path(), &dest).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: rating `NaN` is not a finite number; remove the line",
            src.path().join("ratings.csv").display()
        )
    );
    assert!(!dest.join("ratings.parquet").exists());
    let leftovers: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["items.parquet"],
        "no temporary file is left behind"
    );
}

#[test]
fn a_repeated_movie_id_is_refused() {
    let src = release(&[
        (
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,1,4.0,1\n",
        ),
        (
            "movies.csv",
            b"movieId,title,genres\n1,A,Drama\n2,B,Drama\n1,C,Drama\n",
        ),
    ]);
    let err = import_movielens(src.path(), &src.path().join("out")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4: movie id 1 is already defined on line 2",
            src.path().join("movies.csv").display()
        )
    );
}

#[test]
fn an_unknown_layout_says_what_was_looked_for_and_suggests_a_subfolder() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("ml-latest-small");
    fs::create_dir(&inner).unwrap();
    fs::write(
        inner.join("ratings.csv"),
        "userId,movieId,rating,timestamp\n",
    )
    .unwrap();
    let err = import_movielens(dir.path(), &dir.path().join("out")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} does not look like an unpacked MovieLens release: looked for u.data (ml-100k), \
             ratings.dat (ml-1m, ml-10m) or ratings.csv (ml-latest, ml-latest-small, ml-20m, \
             ml-25m); did you mean {}?",
            dir.path().display(),
            inner.display()
        )
    );
    // Pointing at a file inside a release suggests the release's folder.
    let err = import_movielens(&inner.join("ratings.csv"), &dir.path().join("out")).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(&format!("; did you mean {}?", inner.display())),
        "{err}"
    );
    let missing = dir.path().join("nope");
    assert!(matches!(
        import_movielens(&missing, &dir.path().join("out")).unwrap_err(),
        IoError::FileNotFound {
            what: "MovieLens folder",
            ..
        }
    ));
}

#[test]
fn a_missing_companion_file_is_named() {
    let src = release(&[(
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,4.0,1\n",
    )]);
    let err = import_movielens(src.path(), &src.path().join("out")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "MovieLens movies file not found: {}; an unpacked release has it: unpack the archive \
             again, or point to the folder that holds the release's files",
            src.path().join("movies.csv").display()
        )
    );
}

#[test]
fn reimport_overwrites_own_files_and_keeps_others() {
    let src = release(&[
        (
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,1,4.0,1\n",
        ),
        ("movies.csv", b"movieId,title,genres\n1,A,Drama\n"),
    ]);
    let dest = src.path().join("out");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("ratings.parquet"), b"stale").unwrap();
    fs::write(dest.join("mine.txt"), b"keep").unwrap();
    import_movielens(src.path(), &dest).unwrap();
    assert_eq!(
        read_ratings(&dest.join("ratings.parquet")),
        [(1, 1, 4.0, 1)]
    );
    assert_eq!(fs::read(dest.join("mine.txt")).unwrap(), b"keep");
}

// ---------------------------------------------------------------------------------------
// The real releases (read-only, outside the repository).

/// Counts of a tab-separated ratings file computed independently of the importer.
fn tab_counts(path: &Path) -> (usize, usize, usize) {
    let text = fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let users: HashSet<&str> = rows.iter().map(|r| r[0]).collect();
    let items: HashSet<&str> = rows.iter().map(|r| r[1]).collect();
    (rows.len(), users.len(), items.len())
}

#[test]
fn real_ml100k() {
    let Some(release) = find(Fixture::Ml100k, "real_ml100k") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let summary = import_movielens(&release, dir.path()).unwrap();
    assert_eq!(summary.release, Release::Ml100k);
    assert_eq!(
        (
            summary.ratings,
            summary.users,
            summary.rated_items,
            summary.items
        ),
        (100_000, 943, 1_682, 1_682)
    );
    let (rows, users, items) = tab_counts(&release.join("u.data"));
    assert_eq!((rows, users, items), (100_000, 943, 1_682));
    let split_rows: Vec<(&str, u64)> = summary
        .splits
        .iter()
        .map(|s| (s.name.as_str(), s.rows))
        .collect();
    assert_eq!(split_rows.len(), 14);
    assert_eq!(split_rows[0], ("u1.train", 80_000));
    assert_eq!(split_rows[1], ("u1.test", 20_000));
    assert_eq!(split_rows[12], ("ub.train", 90_570));
    assert_eq!(split_rows[13], ("ub.test", 9_430));

    // Every rating matches the text file (written in time order).
    let text = fs::read_to_string(release.join("u1.test")).unwrap();
    let expected: Vec<Rating> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let mut expected = expected;
    expected.sort_by_key(|r: &Rating| (r.3, r.0, r.1));
    assert_eq!(read_ratings(&dir.path().join("u1.test.parquet")), expected);

    let items = read_items(&dir.path().join("items.parquet"));
    assert_eq!(
        items[0],
        (
            1,
            "Toy Story (1995)".into(),
            vec!["Animation".into(), "Children's".into(), "Comedy".into()]
        )
    );
    assert!(dir.path().join("README").is_file());
}

#[test]
fn real_ml_latest_small() {
    let Some(release) = find(Fixture::MlLatestSmall, "real_ml_latest_small") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let summary = import_movielens(&release, dir.path()).unwrap();
    assert_eq!(summary.release, Release::Csv);
    assert_eq!(
        (
            summary.ratings,
            summary.users,
            summary.rated_items,
            summary.items
        ),
        (100_836, 610, 9_724, 9_742)
    );
    let ratings = read_ratings(&dir.path().join("ratings.parquet"));
    // The earliest rating of the release comes first, and time never goes back.
    assert_eq!(ratings[0], (429, 22, 4.0, 828124615));
    assert!(
        ratings
            .windows(2)
            .all(|w| (w[0].3, w[0].0, w[0].1) <= (w[1].3, w[1].0, w[1].1))
    );
    assert!(
        ratings
            .iter()
            .all(|r| (r.2 * 2.0).fract() == 0.0 && (0.5..=5.0).contains(&r.2))
    );
    assert!(ratings.iter().any(|r| r.2 == 0.5) && ratings.iter().any(|r| r.2 == 3.5));

    let items = read_items(&dir.path().join("items.parquet"));
    let by_id: HashMap<i64, &Movie> = items.iter().map(|m| (m.0, m)).collect();
    assert_eq!(by_id[&11].1, "American President, The (1995)");
    assert_eq!(by_id[&11].2, ["Comedy", "Drama", "Romance"]);
    let no_genres = items
        .iter()
        .filter(|m| m.2 == ["(no genres listed)"])
        .count();
    assert!(no_genres > 0);
    assert!(
        items
            .iter()
            .all(|m| !m.1.ends_with('\r') && !m.2.iter().any(|g| g.contains('\r')))
    );
    assert!(dir.path().join("README.txt").is_file());
}

/// The embedded default data (committed under `data/`) is what the importer makes of the
/// shared release today. To regenerate it:
/// `recsift import movielens ../shared/data/ml-latest-small data/ml-latest-small`.
#[test]
fn embedded_ml_latest_small_is_current() {
    let Some(release) = find(
        Fixture::MlLatestSmall,
        "embedded_ml_latest_small_is_current",
    ) else {
        return;
    };
    let embedded = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ml-latest-small");
    let dir = tempfile::tempdir().unwrap();
    import_movielens(&release, dir.path()).unwrap();
    for file in ["ratings.parquet", "items.parquet"] {
        assert_eq!(
            read_table(&embedded.join(file)),
            read_table(&dir.path().join(file)),
            "{file} is stale: regenerate data/ml-latest-small"
        );
    }
    assert_eq!(
        fs::read(embedded.join("README.txt")).unwrap(),
        fs::read(release.join("README.txt")).unwrap()
    );
}
