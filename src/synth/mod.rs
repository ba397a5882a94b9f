//! Synthetic interaction logs (`recsift gen`): a realistic ratings or clicks log of any size,
//! written as Parquet in the MovieLens importer's layout, so benchmarks can run at 10M-100M
//! events without a download.
//!
//! [`generate`] writes into a folder:
//!
//! - `ratings.parquet`: `user_id: Int64, item_id: Int64, rating: Float32, timestamp: Int64`
//!   (with `label: click`, a 0/1 `click: Float32` column instead of `rating`), in
//!   timestamp order, row groups of [`ROW_GROUP_ROWS`](crate::io::parquet_file::ROW_GROUP_ROWS);
//!   with `shuffle`, the same rows in a seeded random order, as real logs are often stored
//!   (this holds the whole log in memory, about 40 bytes per event);
//! - `items.parquet`: `item_id: Int64, title: Utf8, genres: List<Utf8>`, every item;
//! - `README.txt`: the command and every parameter that produced the files.
//!
//! # The model
//!
//! - **Users** (ids `1..=users`, in order of arrival) are active in a window whose length is
//!   log-uniform between an hour and the whole span, placed uniformly, so new users appear
//!   all along the log; how much a user logs is log-normal (`activity_sigma`), a heavy tail
//!   of very active users as in MovieLens (where the top 10% of users log about half the
//!   ratings). A user's events fall uniformly inside their window.
//! - **Items** (ids `1..=items`, in order of release): `catalog_at_start` of them exist when
//!   the log starts, the rest are released uniformly over the span; popularity follows
//!   Zipf's law, `rank^-zipf_exponent` over a random ranking. An item has 1-3 MovieLens
//!   genres and a title built from its genres' words and its release year.
//! - **Labels** come from a latent-factor model: user factors `p_u ~ N(0, 0.6^2 I)`, item
//!   factors `q_i = sqrt(text_signal) t_i + sqrt(1 - text_signal) z_i` where `t_i` is the unit
//!   direction of the item's genres and title words (so the text predicts most of the
//!   item) and `z_i` noise; biases `b_u ~ N(0, 0.35^2)`, `b_i` = the item's genres' mean
//!   rating shift + `N(0, 0.3^2)`. A rating is
//!   `clamp(round_to_half(3.55 + b_u + b_i + <p_u, q_i> + N(0, rating_noise^2)), 0.5, 5)`;
//!   a click is 1 with probability `sigmoid(click_bias + b_u + b_i + <p_u, q_i>)`.
//! - **Time**: the span is cut into slices; each slice's events are drawn and sorted on
//!   their own, then written, so the file is in time order without a global sort and
//!   memory stays at a few slices (see `timeline`). Generation and Parquet encoding run on
//!   two threads.
//!
//! Without `users`/`items`, their counts follow MovieLens' ratios: `events / 150` users
//! (ml-1m to ml-25m have 143-165 ratings per user) and `events^0.6` items (ml-1m: 3 706
//! movies for 1M ratings; ml-20m: 27 278 for 20M). Below about 300 000 events there are
//! more users, so that the mean user rates at most a tenth of the items (100 000 events:
//! 1 000 users and 1 000 items; ml-100k has 943 and 1 682).
//!
//! As in MovieLens, a user rates an item at most once: a user's items are drawn by
//! popularity without replacement (which flattens the head of the popularity curve, as real
//! logs show: the most popular item cannot get more events than there are users). Only a
//! user who has rated nearly every available item can repeat one; the summary counts such
//! repeats.
//!
//! The same configuration (seed included) gives byte-identical files: every random draw
//! comes from a stream named by the seed and what it is for (see `rng`).
//!
//! ```
//! use recsift::synth::{SynthConfig, generate};
//!
//! let dir = tempfile::tempdir()?;
//! let config = SynthConfig { seed: 7, ..SynthConfig::new(10_000) };
//! let summary = generate(&config, dir.path(), false)?;
//! assert_eq!(summary.events, 10_000);
//! assert!(dir.path().join("ratings.parquet").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod alias;
mod calendar;
mod catalog;
mod events;
mod rng;
mod timeline;
mod words;
mod write;

#[cfg(test)]
mod tests;

use crate::error::UserFixable;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use calendar::parse_start;

use crate::data::LabelKind;
use crate::io::IoError;
use crate::io::results::OutputDir;
use catalog::{Items, Users};
use timeline::Timeline;

/// The events file.
pub const EVENTS_FILE: &str = "ratings.parquet";
/// The items file.
pub const ITEMS_FILE: &str = "items.parquet";
/// How the files were made.
pub const README_FILE: &str = "README.txt";

/// Mean of the raw rating before noise and rounding (MovieLens' mean rating is about 3.5).
const GLOBAL_MEAN: f64 = 3.55;
/// Standard deviation of user biases.
const USER_BIAS_SD: f64 = 0.35;
/// Standard deviation of item biases around their genres' shift.
const ITEM_BIAS_SD: f64 = 0.3;
/// Standard deviation of each user factor component (the item factors have norm about 1,
/// so `<p_u, q_i>` has about this standard deviation).
const USER_FACTOR_SD: f64 = 0.6;
/// Shortest user activity window, in seconds.
const MIN_USER_WINDOW_SECS: i64 = 3_600;
/// Events per user when `users` is not given.
const EVENTS_PER_USER: f64 = 150.0;
/// When `users` is not given, the mean user rates at most this share of the items.
const MEAN_USER_ITEM_SHARE: f64 = 0.1;
/// Items are `events^ITEM_EXPONENT` when `items` is not given.
const ITEM_EXPONENT: f64 = 0.6;
/// Longest span: timestamps are sorted as 32-bit second offsets.
const MAX_SPAN_SECS: i64 = u32::MAX as i64;

/// What to generate. Build one with [`SynthConfig::new`] and change fields as needed;
/// [`generate`] checks it. Errors name a field by its `recsift gen` flag.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SynthConfig {
    /// Events to generate (`--events`).
    pub events: u64,
    /// Users; `None` for `events / 150`, more in small logs (see [`SynthConfig::user_count`])
    /// (`--users`).
    pub users: Option<u32>,
    /// Items; `None` for `events^0.6` (`--items`).
    pub items: Option<u32>,
    /// Latent factor dimension (`--dim`).
    pub dim: usize,
    /// Seed of every random draw (`--seed`).
    pub seed: u64,
    /// First possible timestamp, Unix seconds (`--start`).
    pub start: i64,
    /// Length of the log in seconds; timestamps are in `start..start + span_secs`
    /// (`--span-days`).
    pub span_secs: i64,
    /// Ratings or clicks (`--label`).
    pub label: LabelKind,
    /// Zipf exponent of item popularity: `rank^-zipf_exponent` (`--zipf`).
    pub zipf_exponent: f64,
    /// Standard deviation of the log of user activity: larger gives a heavier tail
    /// (`--activity-sigma`).
    pub activity_sigma: f64,
    /// Share of the items that exist when the log starts; the others are released during
    /// it (`--catalog-at-start`).
    pub catalog_at_start: f64,
    /// Share of an item factor's variance that its text (genres and title) explains
    /// (`--text-signal`).
    pub text_signal: f64,
    /// Standard deviation of the rating noise (`--rating-noise`).
    pub rating_noise: f64,
    /// Logit offset of clicks: lower gives fewer clicks (`--click-bias`).
    pub click_bias: f64,
    /// Write the events in a seeded random order instead of time order (`--shuffle`).
    pub shuffle: bool,
}

impl SynthConfig {
    /// Default latent dimension.
    pub const DEFAULT_DIM: usize = 16;
    /// Default seed.
    pub const DEFAULT_SEED: u64 = 42;
    /// Default start: 2015-01-01T00:00:00Z.
    pub const DEFAULT_START: i64 = 1_420_070_400;
    /// Default span in days (five years).
    pub const DEFAULT_SPAN_DAYS: f64 = 1_826.0;
    /// Default Zipf exponent of item popularity.
    pub const DEFAULT_ZIPF_EXPONENT: f64 = 0.8;
    /// Default log-normal sigma of user activity.
    pub const DEFAULT_ACTIVITY_SIGMA: f64 = 1.2;
    /// Default share of items existing at the start.
    pub const DEFAULT_CATALOG_AT_START: f64 = 0.5;
    /// Default share of item factor variance explained by the text.
    pub const DEFAULT_TEXT_SIGNAL: f64 = 0.7;
    /// Default rating noise.
    pub const DEFAULT_RATING_NOISE: f64 = 0.7;
    /// Default click logit offset (about one click in four events).
    pub const DEFAULT_CLICK_BIAS: f64 = -1.2;

    /// A ratings log of `events` events with every other setting at its default.
    pub fn new(events: u64) -> Self {
        Self {
            events,
            users: None,
            items: None,
            dim: Self::DEFAULT_DIM,
            seed: Self::DEFAULT_SEED,
            start: Self::DEFAULT_START,
            span_secs: span_secs_of_days(Self::DEFAULT_SPAN_DAYS),
            label: LabelKind::Rating,
            zipf_exponent: Self::DEFAULT_ZIPF_EXPONENT,
            activity_sigma: Self::DEFAULT_ACTIVITY_SIGMA,
            catalog_at_start: Self::DEFAULT_CATALOG_AT_START,
            text_signal: Self::DEFAULT_TEXT_SIGNAL,
            rating_noise: Self::DEFAULT_RATING_NOISE,
            click_bias: Self::DEFAULT_CLICK_BIAS,
            shuffle: false,
        }
    }

    /// The number of users: as set, or `events / 150`, raised in small logs (below about
    /// 300 000 events) until the mean user rates at most a tenth of the items (at least 1,
    /// at most `events`).
    pub fn user_count(&self) -> u32 {
        self.users.unwrap_or_else(|| {
            let events = self.events as f64;
            let per_user = EVENTS_PER_USER.min(MEAN_USER_ITEM_SHARE * f64::from(self.item_count()));
            (events / per_user)
                .round()
                .min(events)
                .clamp(1.0, f64::from(u32::MAX - 1)) as u32
        })
    }

    /// The number of items: as set, or `events^0.6` (at least 1).
    pub fn item_count(&self) -> u32 {
        self.items.unwrap_or_else(|| {
            (self.events as f64)
                .powf(ITEM_EXPONENT)
                .round()
                .clamp(1.0, f64::from(u32::MAX - 1)) as u32
        })
    }

    /// Checks every setting; the first problem found, named by its flag.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad =
            |flag: &'static str, reason: String| Err(SynthError::InvalidSetting { flag, reason });
        if self.events == 0 {
            return bad("--events", "must be at least 1".into());
        }
        if self.users == Some(0) || self.users.is_some_and(|u| u == u32::MAX) {
            return bad("--users", format!("must be between 1 and {}", u32::MAX - 1));
        }
        if self.items == Some(0) || self.items.is_some_and(|i| i == u32::MAX) {
            return bad("--items", format!("must be between 1 and {}", u32::MAX - 1));
        }
        if !(1..=1024).contains(&self.dim) {
            return bad(
                "--dim",
                format!("must be between 1 and 1024, got {}", self.dim),
            );
        }
        if !(MIN_USER_WINDOW_SECS..=MAX_SPAN_SECS).contains(&self.span_secs) {
            return bad(
                "--span-days",
                format!(
                    "must be between 1 hour and {} days, got {} s",
                    MAX_SPAN_SECS / calendar::DAY,
                    self.span_secs
                ),
            );
        }
        if self.start.checked_add(self.span_secs).is_none() {
            return bad("--start", format!("{} plus the span overflows", self.start));
        }
        let non_negative = [
            ("--zipf", self.zipf_exponent),
            ("--activity-sigma", self.activity_sigma),
            ("--rating-noise", self.rating_noise),
        ];
        for (flag, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return bad(flag, format!("must be a finite number >= 0, got {value}"));
            }
        }
        for (flag, value) in [
            ("--catalog-at-start", self.catalog_at_start),
            ("--text-signal", self.text_signal),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return bad(flag, format!("must be between 0 and 1, got {value}"));
            }
        }
        if !self.click_bias.is_finite() {
            return bad(
                "--click-bias",
                format!("must be finite, got {}", self.click_bias),
            );
        }
        Ok(())
    }

    /// The `recsift gen` command that writes this log into `out`.
    pub fn command_line(&self, out: &Path) -> String {
        let mut command = format!("recsift gen --events {}", self.events);
        if let Some(users) = self.users {
            command += &format!(" --users {users}");
        }
        if let Some(items) = self.items {
            command += &format!(" --items {items}");
        }
        let label = match self.label {
            LabelKind::Rating => "rating",
            LabelKind::Click => "click",
        };
        command += &format!(
            " --dim {} --seed {} --label {label} --start {} --span-days {} --zipf {} \
             --activity-sigma {} --catalog-at-start {} --text-signal {} --rating-noise {} \
             --click-bias {} --out {}",
            self.dim,
            self.seed,
            self.start,
            self.span_secs as f64 / calendar::DAY as f64,
            self.zipf_exponent,
            self.activity_sigma,
            self.catalog_at_start,
            self.text_signal,
            self.rating_noise,
            self.click_bias,
            out.display()
        );
        if self.shuffle {
            command += " --shuffle";
        }
        command
    }
}

impl Default for SynthConfig {
    /// One million ratings.
    fn default() -> Self {
        Self::new(1_000_000)
    }
}

/// Seconds in `days` days, rounded to the second (what `--span-days` sets).
pub fn span_secs_of_days(days: f64) -> i64 {
    (days * calendar::DAY as f64).round() as i64
}

/// Why a log could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A setting out of its range.
    #[error("{flag} {reason}")]
    InvalidSetting {
        /// The `recsift gen` flag of the setting.
        flag: &'static str,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// Writing a file failed (or the output folder is not empty and `force` was not given).
    #[error(transparent)]
    Io(#[from] IoError),
}

impl UserFixable for SynthError {
    /// Whether the user can fix this (a setting, the output folder) rather than an internal
    /// failure.
    fn is_user_error(&self) -> bool {
        match self {
            SynthError::InvalidSetting { .. } => true,
            SynthError::Io(e) => e.is_user_error(),
        }
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SynthSummary {
    /// Events written.
    pub events: u64,
    /// Ratings or clicks.
    pub label: LabelKind,
    /// Users generated (ids `1..=users`).
    pub users: u32,
    /// Users with at least one event.
    pub users_with_events: u32,
    /// Items generated (ids `1..=items`, all in the items file).
    pub items: u32,
    /// Items with at least one event.
    pub items_with_events: u32,
    /// Mean label (mean rating, or click rate).
    pub mean_label: f64,
    /// Events repeating a (user, item) pair of an earlier event: only users who acted on
    /// nearly every available item have them.
    pub repeated_pairs: u64,
    /// First timestamp.
    pub first_timestamp: i64,
    /// Last timestamp.
    pub last_timestamp: i64,
    /// Wall-clock seconds the generation took, files included.
    pub seconds: f64,
    /// The files written.
    pub files: Vec<PathBuf>,
}

impl SynthSummary {
    /// Events generated per second of wall-clock time.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, mean) = match self.label {
            LabelKind::Rating => ("ratings", "mean rating"),
            LabelKind::Click => ("events", "click rate"),
        };
        writeln!(
            f,
            "{} {what} ({mean} {:.3}) by {} of {} users on {} of {} items, {} to {}",
            self.events,
            self.mean_label,
            self.users_with_events,
            self.users,
            self.items_with_events,
            self.items,
            calendar::date_of(self.first_timestamp),
            calendar::date_of(self.last_timestamp),
        )?;
        if self.repeated_pairs > 0 {
            writeln!(
                f,
                "{} events repeat a (user, item) pair: their users had acted on nearly every \
                 item available; raise --items to avoid this",
                self.repeated_pairs
            )?;
        }
        writeln!(
            f,
            "generated in {:.1} s ({:.0} events/s)",
            self.seconds,
            self.events_per_second()
        )?;
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// Generates the log `config` describes into `dest_dir` (created if missing). An existing
/// folder must be empty unless `force`, as for `recsift run --out` (see
/// [`OutputDir::prepare`]); with `force` the three files are replaced, other files are left
/// alone. Each file is written atomically.
pub fn generate(
    config: &SynthConfig,
    dest_dir: &Path,
    force: bool,
) -> Result<SynthSummary, SynthError> {
    config.validate()?;
    let started = Instant::now();
    let out = OutputDir::prepare(dest_dir, force)?;

    let users = Users::generate(config);
    let items = Items::generate(config);
    let timeline = Timeline::new(config.events, config.span_secs, &users);

    let events_path = out.path().join(EVENTS_FILE);
    let stats = write::write_events(config, &users, &items, &timeline, &events_path)?;
    let items_path = out.path().join(ITEMS_FILE);
    write::write_items(&items_path, &items)?;

    let (first_timestamp, last_timestamp) =
        stats.time_range.unwrap_or((config.start, config.start));
    let mut summary = SynthSummary {
        events: stats.rows,
        label: config.label,
        users: users.len() as u32,
        users_with_events: stats.users_with_events,
        items: items.len() as u32,
        items_with_events: stats.items_with_events,
        mean_label: stats.label_sum / stats.rows.max(1) as f64,
        repeated_pairs: stats.repeats,
        first_timestamp,
        last_timestamp,
        seconds: 0.0,
        files: vec![events_path, items_path],
    };
    let readme = readme(config, dest_dir, &summary);
    summary
        .files
        .push(out.write_bytes(README_FILE, readme.as_bytes())?);
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The README written beside the files.
fn readme(config: &SynthConfig, dest_dir: &Path, summary: &SynthSummary) -> String {
    let label_column = match config.label {
        LabelKind::Rating => "rating: Float32 (0.5 to 5 in steps of 0.5)",
        LabelKind::Click => "click: Float32 (0 or 1)",
    };
    let parameters = serde_json::to_string_pretty(config).unwrap_or_default();
    format!(
        "Synthetic interaction log written by recsift {version} (`recsift gen`).\n\
         \n\
         Command:\n  {command}\n\
         Seed: {seed} (the same command writes byte-identical files)\n\
         \n\
         {events} events by {users_with} of {users} users on {items_with} of {items} items, \
         {first} to {last}.{repeats}\n\
         \n\
         Files:\n\
         - {events_file}: user_id: Int64, item_id: Int64, {label_column}, timestamp: Int64 \
         (Unix seconds), {order}\n\
         - {items_file}: item_id: Int64, title: Utf8, genres: List<Utf8>\n\
         \n\
         Users and items are synthetic: item popularity follows Zipf's law, user activity is \
         log-normal over per-user activity windows, labels come from a latent-factor model \
         whose item factors are mostly explained by the item's genres and title words. See \
         the documentation of recsift's `synth` module for the model.\n\
         \n\
         Parameters:\n{parameters}\n",
        version = env!("CARGO_PKG_VERSION"),
        command = config.command_line(dest_dir),
        seed = config.seed,
        events = summary.events,
        users_with = summary.users_with_events,
        users = summary.users,
        items_with = summary.items_with_events,
        items = summary.items,
        first = calendar::date_of(summary.first_timestamp),
        last = calendar::date_of(summary.last_timestamp),
        repeats = if summary.repeated_pairs > 0 {
            format!(
                " {} events repeat a (user, item) pair: their users had rated nearly every \
                 item available.",
                summary.repeated_pairs
            )
        } else {
            String::new()
        },
        events_file = EVENTS_FILE,
        order = if config.shuffle {
            "in a random order drawn from the seed (--shuffle)"
        } else {
            "in timestamp order"
        },
        items_file = ITEMS_FILE,
    )
}
