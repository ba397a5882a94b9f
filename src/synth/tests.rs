//! Whole-log tests: statistics of a generated log read back through `io`, determinism,
//! schemas shared with the MovieLens importer, refusal to overwrite.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Int64Type};

use super::*;
use crate::data::{IdMap, RawId};
use crate::io::events::read_events;
use crate::io::items::read_item_texts;
use crate::io::movielens::import_movielens;
use crate::io::parquet_file::read_parquet;
use crate::plan::params::{EventColumns, EventSource, ItemSource};

/// Columns of an events file.
struct Log {
    user: Vec<i64>,
    item: Vec<i64>,
    label: Vec<f32>,
    time: Vec<i64>,
}

fn read_log(path: &Path) -> Log {
    let batches = read_parquet(path).unwrap();
    let mut log = Log {
        user: vec![],
        item: vec![],
        label: vec![],
        time: vec![],
    };
    for batch in &batches {
        log.user
            .extend(batch.column(0).as_primitive::<Int64Type>().values());
        log.item
            .extend(batch.column(1).as_primitive::<Int64Type>().values());
        log.label
            .extend(batch.column(2).as_primitive::<Float32Type>().values());
        log.time
            .extend(batch.column(3).as_primitive::<Int64Type>().values());
    }
    log
}

fn event_source(path: PathBuf, label: &str, kind: LabelKind) -> EventSource {
    EventSource {
        path,
        columns: EventColumns {
            user: "user_id".into(),
            item: "item_id".into(),
            label: label.into(),
            time: "timestamp".into(),
        },
        label_kind: kind,
    }
}

/// Least-squares slope of y on x.
fn regression_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>()
}

/// Share of the events on the top `fraction` of items by count.
fn top_share(counts: &HashMap<i64, u64>, fraction: f64, total: u64) -> f64 {
    let mut sorted: Vec<u64> = counts.values().copied().collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let k = ((sorted.len() as f64 * fraction).ceil() as usize).max(1);
    sorted[..k].iter().sum::<u64>() as f64 / total as f64
}

#[test]
fn a_million_events_look_like_a_ratings_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig::new(1_000_000);
    let summary = generate(&config, dir.path(), false).unwrap();
    let (n_users, n_items) = (config.user_count(), config.item_count());
    assert_eq!((n_users, n_items), (6_667, 3_981));
    assert_eq!(summary.events, 1_000_000);

    let log = read_log(&dir.path().join(EVENTS_FILE));
    assert_eq!(log.user.len(), 1_000_000);

    // Ids in range; timestamps non-decreasing inside the span.
    assert!(
        log.user
            .iter()
            .all(|&u| (1..=i64::from(n_users)).contains(&u))
    );
    assert!(
        log.item
            .iter()
            .all(|&i| (1..=i64::from(n_items)).contains(&i))
    );
    assert!(log.time.windows(2).all(|w| w[0] <= w[1]));
    let end = config.start + config.span_secs;
    assert!(log.time.iter().all(|&t| (config.start..end).contains(&t)));
    assert_eq!(summary.first_timestamp, log.time[0]);
    assert_eq!(summary.last_timestamp, *log.time.last().unwrap());

    // Ratings on the half-star scale, MovieLens-like mean and spread.
    assert!(
        log.label
            .iter()
            .all(|&r| (0.5..=5.0).contains(&r) && (r * 2.0).fract() == 0.0)
    );
    let mean = log.label.iter().map(|&r| f64::from(r)).sum::<f64>() / 1e6;
    let sd = (log
        .label
        .iter()
        .map(|&r| (f64::from(r) - mean).powi(2))
        .sum::<f64>()
        / 1e6)
        .sqrt();
    assert!((3.2..3.8).contains(&mean), "mean rating {mean}");
    assert!((0.8..1.3).contains(&sd), "rating sd {sd}");
    assert!((summary.mean_label - mean).abs() < 1e-9);
    let distinct: HashSet<u32> = log.label.iter().map(|r| r.to_bits()).collect();
    assert_eq!(distinct.len(), 10, "every half star from 0.5 to 5 occurs");

    // Item popularity: a power law. The top 1% of items get a large share (uniform
    // popularity would give them 1%; ml-100k: 7%, ml-latest-small: 16%).
    let mut item_counts: HashMap<i64, u64> = HashMap::new();
    for &i in &log.item {
        *item_counts.entry(i).or_default() += 1;
    }
    let top_items = top_share(&item_counts, 0.01, 1_000_000);
    assert!(top_items > 0.08, "top 1% of items: {top_items}");
    assert!(top_share(&item_counts, 0.1, 1_000_000) > 0.3);
    // Each user rates an item once, so no item has more ratings than there are users.
    assert!(
        item_counts
            .values()
            .all(|&c| c <= u64::from(summary.users_with_events))
    );
    // Items with a higher propensity get more ratings: among the items that exist for the
    // whole log, the top tenth by propensity averages several times the bottom half.
    let catalogue = catalog::Items::generate(&config);
    let mut by_propensity: Vec<usize> = (0..catalogue.len())
        .filter(|&i| catalogue.release[i] == 0.0)
        .collect();
    by_propensity.sort_by(|&a, &b| catalogue.popularity[b].total_cmp(&catalogue.popularity[a]));
    let mean_count = |items: &[usize]| {
        items
            .iter()
            .map(|&i| item_counts.get(&(i as i64 + 1)).copied().unwrap_or(0) as f64)
            .sum::<f64>()
            / items.len() as f64
    };
    let n = by_propensity.len();
    let (head, tail) = (
        mean_count(&by_propensity[..n / 10]),
        mean_count(&by_propensity[n / 2..]),
    );
    assert!(head > 5.0 * tail, "top tenth {head}, bottom half {tail}");

    // User activity: heavy-tailed (MovieLens: median ~70, top 10% log ~half).
    let mut user_counts: HashMap<i64, u64> = HashMap::new();
    for &u in &log.user {
        *user_counts.entry(u).or_default() += 1;
    }
    let mut per_user: Vec<u64> = user_counts.values().copied().collect();
    per_user.sort_unstable();
    let median = per_user[per_user.len() / 2];
    let max = *per_user.last().unwrap();
    let top_users = top_share(&user_counts, 0.1, 1_000_000);
    assert!(max > 20 * median, "max {max}, median {median}");
    assert!(
        (0.35..0.75).contains(&top_users),
        "top 10% users {top_users}"
    );
    assert_eq!(summary.users_with_events as usize, user_counts.len());
    assert_eq!(summary.items_with_events as usize, item_counts.len());

    // New users and items keep appearing: in a replay, the second half of the log has
    // many users and items not seen in the first half, and first appearances follow ids.
    let half = log.user.len() / 2;
    let early_users: HashSet<i64> = log.user[..half].iter().copied().collect();
    let late_new = log.user[half..]
        .iter()
        .copied()
        .collect::<HashSet<_>>()
        .difference(&early_users)
        .count();
    assert!(
        late_new as f64 > 0.3 * user_counts.len() as f64,
        "{late_new} new users late"
    );
    let early_items: HashSet<i64> = log.item[..half].iter().copied().collect();
    let late_new_items = log.item[half..]
        .iter()
        .copied()
        .collect::<HashSet<_>>()
        .difference(&early_items)
        .count();
    assert!(late_new_items > 300, "{late_new_items} new items late");
    let mut first_seen: Vec<i64> = Vec::new();
    let mut seen = HashSet::new();
    for &u in &log.user {
        if seen.insert(u) {
            first_seen.push(u);
        }
    }
    let in_order = first_seen.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(
        in_order as f64 > 0.6 * first_seen.len() as f64,
        "arrivals follow ids"
    );

    // A user rates an item at most once (but for users who rated nearly everything,
    // counted in the summary).
    let pairs: HashSet<(i64, i64)> = log
        .user
        .iter()
        .copied()
        .zip(log.item.iter().copied())
        .collect();
    assert_eq!(1_000_000 - pairs.len() as u64, summary.repeated_pairs);
    assert!(summary.repeated_pairs < 100, "{}", summary.repeated_pairs);

    // Read back through the pipeline's readers.
    let (mut users, mut items) = (IdMap::new(), IdMap::new());
    let source = event_source(dir.path().join(EVENTS_FILE), "rating", LabelKind::Rating);
    let events = read_events(&source, &mut users, &mut items, None).unwrap();
    assert_eq!(events.len(), 1_000_000);
    assert_eq!(users.len(), user_counts.len());
    for (k, event) in events.iter().enumerate().step_by(9_973) {
        assert_eq!(users.raw(event.user), &RawId::Int(log.user[k]));
        assert_eq!(items.raw(event.item), &RawId::Int(log.item[k]));
        assert_eq!(event.label, log.label[k]);
        assert_eq!(event.time, log.time[k]);
    }
    let texts = read_item_texts(
        &ItemSource {
            path: dir.path().join(ITEMS_FILE),
            id_column: "item_id".into(),
            text_template: "{title} | {genres}".into(),
        },
        &mut items,
    )
    .unwrap();
    assert_eq!(items.len(), n_items as usize);
    let rendered: Vec<&str> = texts.texts.iter().flatten().map(|t| t.as_ref()).collect();
    assert_eq!(rendered.len(), n_items as usize);
    assert!(
        rendered
            .iter()
            .all(|t| t.contains(" (") && t.contains(") | ")),
        "{:?}",
        &rendered[..3]
    );
}

#[test]
fn item_text_predicts_ratings() {
    // Items of a well-liked genre (documentaries) are rated higher than horror films: the
    // text the encoder sees carries signal about the labels.
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig::new(300_000);
    generate(&config, dir.path(), false).unwrap();
    let log = read_log(&dir.path().join(EVENTS_FILE));
    let items = read_parquet(&dir.path().join(ITEMS_FILE)).unwrap();
    let mut genres_of: HashMap<i64, Vec<String>> = HashMap::new();
    for batch in &items {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let genres = batch.column(2).as_list::<i32>();
        for row in 0..batch.num_rows() {
            let list = genres.value(row);
            let names = list.as_string::<i32>();
            genres_of.insert(
                ids.value(row),
                names.iter().flatten().map(str::to_string).collect(),
            );
        }
    }
    let mean_for = |genre: &str| {
        let ratings: Vec<f64> = log
            .item
            .iter()
            .zip(&log.label)
            .filter(|(i, _)| genres_of[i] == [genre])
            .map(|(_, r)| f64::from(*r))
            .collect();
        assert!(ratings.len() > 500, "{genre}: {}", ratings.len());
        ratings.iter().sum::<f64>() / ratings.len() as f64
    };
    let (documentary, horror) = (mean_for("Documentary"), mean_for("Horror"));
    assert!(documentary > horror + 0.3, "{documentary} vs {horror}");
}

#[test]
fn the_same_seed_writes_identical_files_and_another_seed_does_not() {
    let config = SynthConfig {
        users: Some(300),
        items: Some(200),
        ..SynthConfig::new(20_000)
    };
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(&config, a.path(), false).unwrap();
    generate(&config, b.path(), false).unwrap();
    generate(
        &SynthConfig {
            seed: 43,
            ..config.clone()
        },
        c.path(),
        false,
    )
    .unwrap();
    for file in [EVENTS_FILE, ITEMS_FILE] {
        let bytes = |dir: &tempfile::TempDir| std::fs::read(dir.path().join(file)).unwrap();
        assert_eq!(bytes(&a), bytes(&b), "{file}");
        assert_ne!(bytes(&a), bytes(&c), "{file}");
    }
    // The READMEs differ only in the folder named in the command.
    let readme = |dir: &tempfile::TempDir| {
        std::fs::read_to_string(dir.path().join(README_FILE))
            .unwrap()
            .replace(&dir.path().display().to_string(), "OUT")
    };
    assert_eq!(readme(&a), readme(&b));
    assert!(readme(&a).contains(
        "recsift gen --events 20000 --users 300 --items 200 --dim 16 --seed 42 --label rating \
         --start 1420070400 --span-days 1826 --zipf 0.8 --activity-sigma 1.2 \
         --catalog-at-start 0.5 --text-signal 0.7 --rating-noise 0.7 --click-bias -1.2 --out OUT"
    ));
}

#[test]
fn a_shuffled_log_holds_the_same_events_in_a_seeded_random_order() {
    let config = SynthConfig {
        users: Some(300),
        items: Some(200),
        ..SynthConfig::new(20_000)
    };
    let shuffled = SynthConfig {
        shuffle: true,
        ..config.clone()
    };
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(&config, a.path(), false).unwrap();
    let summary = generate(&shuffled, b.path(), false).unwrap();
    generate(&shuffled, c.path(), false).unwrap();
    assert_eq!(summary.events, 20_000);
    let bytes = |dir: &tempfile::TempDir| std::fs::read(dir.path().join(EVENTS_FILE)).unwrap();
    assert_eq!(bytes(&b), bytes(&c), "the same seed, the same order");
    let rows = |dir: &tempfile::TempDir| {
        let log = read_log(&dir.path().join(EVENTS_FILE));
        (0..log.time.len())
            .map(|i| {
                (
                    log.time[i],
                    log.user[i],
                    log.item[i],
                    log.label[i].to_bits(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (sorted, mut unsorted) = (rows(&a), rows(&b));
    assert!(unsorted.windows(2).filter(|w| w[1].0 < w[0].0).count() > 5_000);
    unsorted.sort_unstable();
    let mut expected = sorted.clone();
    expected.sort_unstable();
    assert_eq!(unsorted, expected);
    let readme = std::fs::read_to_string(b.path().join(README_FILE)).unwrap();
    assert!(readme.contains("--click-bias -1.2 --out"), "{readme}");
    assert!(readme.contains(" --shuffle\n"), "{readme}");
    assert!(
        readme.contains("in a random order drawn from the seed (--shuffle)"),
        "{readme}"
    );
}

#[test]
fn a_click_log_has_binary_labels_that_read_as_clicks() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        label: LabelKind::Click,
        ..SynthConfig::new(50_000)
    };
    let summary = generate(&config, dir.path(), false).unwrap();
    let batches = read_parquet(&dir.path().join(EVENTS_FILE)).unwrap();
    assert_eq!(batches[0].schema().field(2).name(), "click");
    let log = read_log(&dir.path().join(EVENTS_FILE));
    assert!(log.label.iter().all(|&l| l == 0.0 || l == 1.0));
    let rate = log.label.iter().map(|&l| f64::from(l)).sum::<f64>() / 50_000.0;
    assert!((0.1..0.45).contains(&rate), "click rate {rate}");
    assert!((summary.mean_label - rate).abs() < 1e-9);
    let (mut users, mut items) = (IdMap::new(), IdMap::new());
    let source = event_source(dir.path().join(EVENTS_FILE), "click", LabelKind::Click);
    assert_eq!(
        read_events(&source, &mut users, &mut items, None)
            .unwrap()
            .len(),
        50_000
    );
}

#[test]
fn schemas_match_the_movielens_importer() {
    // A two-line MovieLens CSV release, imported; the synthetic files must have the same
    // Arrow schemas so that pipelines read both alike.
    let release = tempfile::tempdir().unwrap();
    std::fs::write(
        release.path().join("ratings.csv"),
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n",
    )
    .unwrap();
    std::fs::write(
        release.path().join("movies.csv"),
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n",
    )
    .unwrap();
    let imported = tempfile::tempdir().unwrap();
    import_movielens(release.path(), imported.path()).unwrap();
    let synthetic = tempfile::tempdir().unwrap();
    generate(&SynthConfig::new(1_000), synthetic.path(), false).unwrap();
    let schema = |dir: &Path, file: &str| -> arrow::datatypes::SchemaRef {
        let batches: Vec<RecordBatch> = read_parquet(&dir.join(file)).unwrap();
        batches[0].schema()
    };
    for file in ["ratings.parquet", "items.parquet"] {
        assert_eq!(
            schema(imported.path(), file),
            schema(synthetic.path(), file),
            "{file}"
        );
    }
}

#[test]
fn an_occupied_folder_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig::new(2_000);
    generate(&config, dir.path(), false).unwrap();
    let err = generate(&config, dir.path(), false).unwrap_err();
    assert!(err.is_user_error());
    assert_eq!(
        err.to_string(),
        format!(
            "output directory {} is not empty; pass --force to overwrite, or choose another --out",
            dir.path().display()
        )
    );
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let summary = generate(&SynthConfig { seed: 1, ..config }, dir.path(), true).unwrap();
    assert_eq!(summary.files.len(), 3);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "mine"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "README.txt",
            "items.parquet",
            "notes.txt",
            "ratings.parquet"
        ]
    );
}

#[test]
fn invalid_settings_name_their_flag() {
    let cases: Vec<(SynthConfig, &str)> = vec![
        (SynthConfig::new(0), "--events must be at least 1"),
        (
            SynthConfig {
                users: Some(0),
                ..SynthConfig::new(10)
            },
            "--users must be between 1 and 4294967294",
        ),
        (
            SynthConfig {
                dim: 0,
                ..SynthConfig::new(10)
            },
            "--dim must be between 1 and 1024, got 0",
        ),
        (
            SynthConfig {
                span_secs: 60,
                ..SynthConfig::new(10)
            },
            "--span-days must be between 1 hour and 49710 days, got 60 s",
        ),
        (
            SynthConfig {
                zipf_exponent: -1.0,
                ..SynthConfig::new(10)
            },
            "--zipf must be a finite number >= 0, got -1",
        ),
        (
            SynthConfig {
                text_signal: 1.5,
                ..SynthConfig::new(10)
            },
            "--text-signal must be between 0 and 1, got 1.5",
        ),
        (
            SynthConfig {
                start: i64::MAX - 10,
                ..SynthConfig::new(10)
            },
            "--start 9223372036854775797 plus the span overflows",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (config, message) in cases {
        let err = generate(&config, &dir.path().join("out"), false).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert!(err.is_user_error());
    }
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written for a bad setting"
    );
}

#[test]
fn tiny_logs_work() {
    for events in [1, 7, 100] {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(&SynthConfig::new(events), dir.path(), false).unwrap();
        assert_eq!(summary.events, events);
        assert_eq!(
            read_log(&dir.path().join(EVENTS_FILE)).user.len() as u64,
            events
        );
    }
}

#[test]
fn item_counts_follow_the_configured_zipf_exponent() {
    // Where rating-once does not bind (every user equally active, many items) and every
    // item exists all along, an item's count is proportional to its Zipf propensity:
    // log(count) against log(propensity rank) has slope -zipf_exponent.
    for (zipf, ranks) in [(0.8, 100..3000), (1.2, 100..1500)] {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            items: Some(20_000),
            zipf_exponent: zipf,
            activity_sigma: 0.0,
            catalog_at_start: 1.0,
            ..SynthConfig::new(1_000_000)
        };
        generate(&config, dir.path(), false).unwrap();
        let log = read_log(&dir.path().join(EVENTS_FILE));
        let mut counts = vec![0u64; 20_000];
        for &i in &log.item {
            counts[(i - 1) as usize] += 1;
        }
        let catalogue = catalog::Items::generate(&config);
        let mut by_propensity: Vec<usize> = (0..catalogue.len()).collect();
        by_propensity.sort_by(|&a, &b| catalogue.popularity[b].total_cmp(&catalogue.popularity[a]));
        let points: Vec<(f64, f64)> = ranks
            .map(|r| {
                let count = counts[by_propensity[r - 1]].max(1);
                ((r as f64).ln(), (count as f64).ln())
            })
            .collect();
        let slope = regression_slope(&points);
        assert!((slope + zipf).abs() < 0.1, "zipf {zipf}: slope {slope}");
    }
}

#[test]
fn default_counts_follow_movielens_ratios_and_leave_room_in_small_logs() {
    let counts = |events| {
        let config = SynthConfig::new(events);
        (config.user_count(), config.item_count())
    };
    assert_eq!(counts(1), (1, 1));
    assert_eq!(counts(100_000_000), (666_667, 63_096));
    assert_eq!(counts(1_000_000), (6_667, 3_981));
    // Small: the mean user rates a tenth of the items, not 150 of 166.
    assert_eq!(counts(5_000), (301, 166));
    assert_eq!(counts(100_000), (1_000, 1_000));
    // A small log has (almost) no repeated pairs.
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&SynthConfig::new(5_000), dir.path(), false).unwrap();
    assert!(summary.repeated_pairs < 10, "{}", summary.repeated_pairs);
}
