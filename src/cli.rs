//! Command-line arguments (clap) and what each subcommand does. Errors print their whole
//! message and exit with 2 when the user can fix them (bad YAML, missing file or column,
//! bad data), 1 for internal failures.

use recsift::error::UserFixable;
use recsift::results::is_train_loss;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use recsift::bench::embed::{EmbedBenchOptions, VectorDiff, bench_embed};
use recsift::bench::parity::{self, ParityOptions};
use recsift::bench::rank::{self, RankBenchConfig};
use recsift::bench::replay::{self, BenchWindow, ReplayBenchConfig};
use recsift::bench::rescore::{self, RescoreBenchConfig};
use recsift::data::LabelKind;
use recsift::driver::{self, RunOptions};
use recsift::io::movielens::import_movielens;
use recsift::io::sort::{SortOptions, parse_memory, sort_file};
use recsift::model::encoder::resolve_model_dir;
use recsift::plan::params::DeviceChoice;
use recsift::plan::{self, ClusterHosts, ClusterPlan, Plan};
use recsift::spec::LoadedSpec;
use recsift::study::{self, StudyPlan, plan_study};
use recsift::synth::{self, SynthConfig};

/// `print!` to stdout, ending the process quietly when stdout is closed (`recsift plan FILE
/// | head`) where `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

/// `println!` to stdout, ending the process quietly when stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => { write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Active learning and sample selection for recommender systems on pretrained language
/// models, as YAML pipelines run as incremental dataflow.
#[derive(Debug, Parser)]
#[command(name = "recsift", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline and write its results.
    Run {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Results directory (default: the pipeline's `output.dir`, else results/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Overwrite results in a non-empty output directory.
        #[arg(long)]
        force: bool,
        /// Continue an interrupted run from its results folder's checkpoint (with --force:
        /// start over when the folder holds no usable checkpoint).
        #[arg(long)]
        resume: bool,
        /// Timely worker threads (overrides `workers:`), per process.
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// No per-round progress lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Compare finished runs and studies (their folders) in one report: study.parquet,
    /// arms.parquet, learning_curves.svg, report.html and study.json in --out.
    Report {
        /// Run folders (holding summary.json) or study folders (holding runs/).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the report goes.
        #[arg(long, default_value = "results/report")]
        out: PathBuf,
        /// The arm the others are compared with [default: an arm named `random` (or
        /// `<study>/random`), else the first].
        #[arg(long)]
        baseline: Option<String>,
    },
    /// Check a pipeline and report every problem at once.
    Validate {
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Print the resolved plan: the node graph with every default filled in.
    Plan {
        #[command(flatten)]
        pipeline: PipelineArgs,
        /// Print Graphviz DOT instead of text (`recsift plan p.yaml --dot | dot -Tsvg`).
        #[arg(long)]
        dot: bool,
    },
    /// What a pipeline's nodes can say: every operator (with its options, types, defaults),
    /// strategy and metric; `recsift ops fuse` shows one.
    Ops {
        /// An operator, strategy or metric (`train`, `coreset`, `ndcg@K`).
        name: Option<String>,
        /// Print the README's pipeline reference tables (Markdown) instead.
        #[arg(long, conflicts_with = "name")]
        markdown: bool,
    },
    /// Print the JSON Schema of pipeline files (what docs/pipeline.schema.json holds), for
    /// editors that complete and check YAML.
    Schema,
    /// Measure a part of recsift against baselines in the same run.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
    /// Write a synthetic interaction log (ratings.parquet, items.parquet, README.txt).
    Gen(GenArgs),
    /// Convert a dataset release to recsift's Parquet layout.
    Import {
        #[command(subcommand)]
        dataset: ImportCommand,
    },
    /// Write a copy of a Parquet log sorted by its time column (stable: equal times keep
    /// their order), every column kept. Within --memory it sorts in memory, beyond it on
    /// disk (an external merge sort). A replay sorts an out-of-order log itself, on every
    /// run; sorting once saves that.
    Sort(SortArgs),
}

#[derive(Debug, Args)]
struct SortArgs {
    /// The log (Parquet).
    input: PathBuf,
    /// The sorted copy (Parquet); never the input.
    output: PathBuf,
    /// The time column: integer seconds (any integer type) or a Timestamp.
    #[arg(long, default_value = "timestamp", value_name = "COLUMN")]
    time: String,
    /// Memory the rows may take (`512MiB`, `4GiB`); a larger log is sorted in runs spilled
    /// to --temp-dir and merged.
    #[arg(long, default_value = "1GiB", value_parser = parse_memory_arg)]
    memory: u64,
    /// Where the runs of a sort on disk go (they take about as much disk as the log) [default:
    /// the system's temporary folder, TMPDIR].
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RescoreArgs {
    /// Pool samples.
    #[arg(long, default_value_t = 1_000_000)]
    samples: u32,
    /// Users (drawn uniformly per sample).
    #[arg(long, default_value_t = 100_000)]
    users: u32,
    /// Items (popularity follows a Zipf law, see --item-skew).
    #[arg(long, default_value_t = 10_000)]
    items: u32,
    /// Vector length of each member's row.
    #[arg(long, default_value_t = 32)]
    dim: usize,
    /// Ensemble members per row.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Fraction of the user rows each update replaces (0.01 = 1%).
    #[arg(long, default_value_t = 0.01)]
    touch: f64,
    /// Fraction of the item rows each update replaces.
    #[arg(long, default_value_t = 0.0)]
    touch_items: f64,
    /// Each update also changes the head shared by every sample (the dense case).
    #[arg(long)]
    head_change: bool,
    /// Timed updates.
    #[arg(long, default_value_t = 10)]
    updates: usize,
    /// The engine's worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Time each method's updates back to back (engine, then index, then full) instead of
    /// rotating the three methods within each update.
    #[arg(long)]
    sequential: bool,
    /// Zipf exponent of item popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    item_skew: f64,
    /// Seed of the pool and the updates.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Any MovieLens release (ml-100k, ml-1m, ml-10m, ml-latest-small, ml-20m, ml-25m, ...).
    Movielens {
        /// The unpacked release folder.
        src: PathBuf,
        /// Where to write ratings.parquet, items.parquet and the predefined splits.
        dest: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Encode a file of texts (one per line) with the sentence encoder: texts/s and peak
    /// memory. Compare with ../shared/tools/torch-encoder-speed.sh on the same file.
    /// With --check-reference and --compare-cpu it also says how far the vectors are from
    /// reference vectors and from the CPU's (the GPU check, see docs/gpu.md).
    Embed {
        /// The texts, one per line.
        #[arg(long)]
        texts: PathBuf,
        /// Model name (resolved through RECSIFT_MODEL_DIR, the Hugging Face cache, or a
        /// download).
        #[arg(long, default_value = recsift::model::encoder::DEFAULT_MODEL)]
        model: String,
        /// The model folder (config.json, tokenizer.json, model.safetensors), instead of
        /// resolving `--model`.
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Encoder threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Texts per forward batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Where the encoder runs: `cpu`, `cuda` or `cuda:N` (needs a build with
        /// `--features cuda`).
        #[arg(long, default_value = "cpu", value_parser = parse_device)]
        device: DeviceChoice,
        /// A reference_embeddings.json (`sentences` and their `embeddings`): encode its
        /// sentences and print the largest absolute difference from its vectors.
        #[arg(long, value_name = "FILE")]
        check_reference: Option<PathBuf>,
        /// Also encode the texts on the CPU and print the largest absolute difference
        /// between the --device vectors and the CPU's.
        #[arg(long)]
        compare_cpu: bool,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Incremental re-scoring (the engine) against a full re-score loop and a hand-written
    /// user/item -> samples index, per update, in the same run.
    Rescore(RescoreArgs),
    /// Full-catalogue top-K (the kernel of every ranking metric and of
    /// recommendations.parquet) against a NumPy reference (benches/rank_reference.py) on
    /// the same vectors, in the same run: users/s, GFLOP/s, peak memory, identical lists.
    Rank(RankArgs),
    /// Every model family (mf, text_mf, two_tower with members and with MC dropout, SGD and
    /// Adam) trained by one pipeline on the CPU and on --device, and the encoder's vectors
    /// of its item texts on both: a table of metric gaps and timings; exits 1 when a gap
    /// exceeds the tolerance (the GPU check, docs/gpu.md).
    Parity(ParityArgs),
    /// A whole replay (read, score, select, train) of a synthetic log of N events, through
    /// `recsift run` with pipelines/bench-replay.yaml: events/s and time per operator.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
struct ParityArgs {
    /// The device compared with the CPU: `cuda` or `cuda:N` (`cpu` checks the command
    /// itself: every gap is 0).
    #[arg(long, default_value = "cuda", value_parser = parse_device)]
    device: DeviceChoice,
    /// A pool pipeline with one train node, its score node and an evaluate node.
    #[arg(long, default_value = "pipelines/quickstart.yaml")]
    pipeline: PathBuf,
    /// Rounds after the initial fit.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Largest allowed absolute gap of a final metric (docs/gpu.md says where 0.01 comes
    /// from).
    #[arg(long, default_value_t = 0.01)]
    tolerance: f64,
    /// Largest allowed gap of an encoder vector component.
    #[arg(long, default_value_t = 1e-4)]
    encoder_tolerance: f32,
    /// The encoder's folder, instead of resolving the pipeline's model name.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Where the runs write their results.
    #[arg(long, default_value = "parity-runs")]
    out: PathBuf,
    /// Run only these cases (repeatable): mf/sgd, mf/adam, text_mf/sgd, text_mf/adam,
    /// two_tower/members/sgd, two_tower/members/adam, two_tower/mc_dropout/sgd,
    /// two_tower/mc_dropout/adam.
    #[arg(long)]
    only: Vec<String>,
    /// Encoder threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RankArgs {
    /// Users ranked.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Items in the catalogue.
    #[arg(long, default_value_t = 50_000)]
    items: usize,
    /// Vector length.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// List length.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// recsift's threads [default: the machine's cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Users per block of the reference's `U_b @ V.T`.
    #[arg(long, default_value_t = 1024)]
    block: usize,
    /// Seed of the vectors.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The reference script.
    #[arg(long, default_value = "benches/rank_reference.py")]
    reference: PathBuf,
    /// Rank with recsift alone.
    #[arg(long)]
    no_reference: bool,
    /// The Python interpreter that runs the reference.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Events of the synthetic log.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The engine's worker threads (per process with --processes).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Also replay on this many `recsift run` processes on 127.0.0.1, beside one process
    /// of processes x workers threads (what the network layer costs; docs/cluster.md).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Events per window [default: events / 10].
    #[arg(long, conflicts_with = "window")]
    window_events: Option<u64>,
    /// Windows of a span of time instead (`7d`, `12h`).
    #[arg(long)]
    window: Option<String>,
    /// Seed of the log and the run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Log folder: reused if it holds a log, else generated there [default: a folder keyed
    /// by events and seed in the system's temporary folder].
    #[arg(long)]
    log: Option<PathBuf>,
    /// Further pipeline overrides, as for `recsift run --set`. Repeatable.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    set: Vec<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `recsift gen`: every flag is a field of `SynthConfig` (see its docs for the model).
#[derive(Debug, Args)]
struct GenArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Users [default: events / 150, more below 300 000 events].
    #[arg(long)]
    users: Option<u32>,
    /// Items [default: events^0.6].
    #[arg(long)]
    items: Option<u32>,
    /// Latent factor dimension.
    #[arg(long, default_value_t = SynthConfig::DEFAULT_DIM)]
    dim: usize,
    /// Seed (the same flags write byte-identical files).
    #[arg(long, default_value_t = SynthConfig::DEFAULT_SEED)]
    seed: u64,
    /// Labels: ratings (0.5 to 5) or 0/1 clicks.
    #[arg(long, default_value = "rating", value_parser = ["rating", "click"])]
    label: String,
    /// First timestamp: Unix seconds or a UTC date (2015-01-01).
    #[arg(
        long,
        value_parser = synth::parse_start,
        default_value_t = SynthConfig::DEFAULT_START,
        allow_hyphen_values = true
    )]
    start: i64,
    /// Length of the log in days.
    #[arg(long, default_value_t = SynthConfig::DEFAULT_SPAN_DAYS)]
    span_days: f64,
    /// Zipf exponent of item popularity.
    #[arg(long, default_value_t = SynthConfig::DEFAULT_ZIPF_EXPONENT)]
    zipf: f64,
    /// Log-normal sigma of user activity (larger: heavier tail).
    #[arg(long, default_value_t = SynthConfig::DEFAULT_ACTIVITY_SIGMA)]
    activity_sigma: f64,
    /// Share of items that exist when the log starts.
    #[arg(long, default_value_t = SynthConfig::DEFAULT_CATALOG_AT_START)]
    catalog_at_start: f64,
    /// Share of item factor variance explained by the item text.
    #[arg(long, default_value_t = SynthConfig::DEFAULT_TEXT_SIGNAL)]
    text_signal: f64,
    /// Standard deviation of rating noise.
    #[arg(long, default_value_t = SynthConfig::DEFAULT_RATING_NOISE)]
    rating_noise: f64,
    /// Logit offset of clicks (lower: fewer clicks).
    #[arg(long, default_value_t = SynthConfig::DEFAULT_CLICK_BIAS, allow_hyphen_values = true)]
    click_bias: f64,
    /// Write the events in a seeded random order instead of time order, as real logs are
    /// often stored (holds the whole log in memory, about 40 bytes per event).
    #[arg(long)]
    shuffle: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Replace the files of a non-empty output folder.
    #[arg(long)]
    force: bool,
}

impl GenArgs {
    fn config(&self) -> SynthConfig {
        SynthConfig {
            events: self.events,
            users: self.users,
            items: self.items,
            dim: self.dim,
            seed: self.seed,
            start: self.start,
            span_secs: synth::span_secs_of_days(self.span_days),
            label: if self.label == "click" {
                LabelKind::Click
            } else {
                LabelKind::Rating
            },
            zipf_exponent: self.zipf,
            activity_sigma: self.activity_sigma,
            catalog_at_start: self.catalog_at_start,
            text_signal: self.text_signal,
            rating_noise: self.rating_noise,
            click_bias: self.click_bias,
            shuffle: self.shuffle,
        }
    }
}

#[derive(Debug, Args)]
struct PipelineArgs {
    /// The pipeline YAML file.
    file: PathBuf,
    /// Override a value: `--set nodes.pick.select.budget=200` (or `--set select.budget=200`
    /// when one node has that operator). Repeatable.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    set: Vec<String>,
}

/// `recsift run`'s cluster options (see docs/cluster.md); each wins over its `cluster:` key.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Run as one of N processes (timely's cluster mode; start every one of them).
    #[arg(long, value_name = "N")]
    processes: Option<usize>,
    /// This process's index, 0 to N-1; process 0 writes the results.
    #[arg(long, value_name = "I")]
    process: Option<usize>,
    /// A file of `host:port` lines, process 0 first [default: 127.0.0.1, ports 2101 + I].
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    /// Applies the options to `cluster`, checking the result.
    fn apply(&self, cluster: &mut ClusterPlan) -> Result<(), Failure> {
        if let Some(processes) = self.processes {
            cluster.processes = processes;
        }
        if let Some(process) = self.process {
            cluster.process = process;
        }
        if let Some(file) = &self.hostfile {
            cluster.hosts = ClusterHosts::File(file.clone());
        }
        match cluster.problem() {
            Some(problem) => Err(Failure::user(format!(
                "{problem}\n    help: --processes N and --process I (0 to N-1) override \
                 `cluster:`; start one process per index"
            ))),
            None => Ok(()),
        }
    }
}

/// A failed command: its message and exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The failure an error makes: its message, and the exit code it decides.
    fn of(error: impl UserFixable) -> Self {
        Self {
            code: error.exit_code(),
            message: error.to_string(),
        }
    }

    fn user(message: impl ToString) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }
}

/// Parses arguments, runs the command, prints errors; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run {
            pipeline,
            out,
            force,
            resume,
            workers,
            cluster,
            quiet,
        } => {
            if workers == Some(0) {
                return Err(Failure::user("--workers must be at least 1"));
            }
            if let Some(mut study) = load_study(&pipeline)? {
                if cluster.hostfile.is_some() {
                    return Err(Failure::user(
                        "--hostfile: the processes of a study do not connect to each other; \
                         they share the study folder (docs/cluster.md)\n    help: drop \
                         --hostfile and put the study's output folder on a filesystem every \
                         process shares",
                    ));
                }
                cluster.apply(&mut study.cluster)?;
                if let Some(out) = out {
                    study.set_out_dir(out);
                }
                if let Some(workers) = workers {
                    study.runs.iter_mut().for_each(|r| r.plan.workers = workers);
                }
                return run_study_command(&study, force, !quiet);
            }
            let mut plan = load_plan(&pipeline)?;
            if let Some(out) = out {
                plan.output.dir = out;
            }
            if let Some(workers) = workers {
                plan.workers = workers;
            }
            cluster.apply(&mut plan.cluster)?;
            let options = RunOptions {
                out_dir: plan.output.dir.clone(),
                force,
                progress: !quiet,
                resume,
            };
            let summary = driver::run(&plan, &options).map_err(Failure::of)?;
            let metrics: Vec<String> = summary
                .metrics
                .iter()
                .filter(|(name, _)| !is_train_loss(name))
                .map(|(name, value)| format!("{name} {value:.4}"))
                .collect();
            let written = if plan.cluster.writes_results() {
                options.out_dir.display().to_string()
            } else {
                format!(
                    "process {} of {} done; process 0 writes the results",
                    plan.cluster.process, plan.cluster.processes
                )
            };
            outln!(
                "{}: {} rounds, {} labels selected, {} in {:.1} s -> {written}",
                summary.name,
                summary.history.len().saturating_sub(1),
                summary.selected,
                metrics.join(", "),
                summary.wall_s,
            );
            Ok(())
        }
        Command::Validate { pipeline } => {
            if let Some(study) = load_study(&pipeline)? {
                outln!(
                    "{}: ok (a study of {} arms x {} seeds = {} runs: {})",
                    pipeline.file.display(),
                    study.arms.len(),
                    study.seeds.len(),
                    study.runs.len(),
                    study
                        .arms
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(());
            }
            let plan = load_plan(&pipeline)?;
            outln!(
                "{}: ok ({} nodes)",
                pipeline.file.display(),
                plan.graph.len()
            );
            Ok(())
        }
        Command::Plan { pipeline, dot } => {
            let plan = load_plan(&pipeline)?;
            if let Some(study) = load_study(&pipeline)?.filter(|_| !dot) {
                out!("{study}");
            }
            if dot {
                out!("{}", plan.to_dot());
            } else {
                out!("{plan}");
            }
            Ok(())
        }
        Command::Ops { name, markdown } => {
            if markdown {
                out!("{}", recsift::registry::markdown());
            } else {
                let text = recsift::registry::describe(name.as_deref()).map_err(Failure::user)?;
                out!("{text}");
            }
            Ok(())
        }
        Command::Schema => {
            let schema = recsift::spec::json_schema::pipeline_schema();
            outln!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(())
        }
        Command::Bench { bench } => run_bench(bench),
        Command::Report {
            dirs,
            out,
            baseline,
        } => report_command(&dirs, &out, baseline),
        Command::Gen(args) => {
            let summary =
                synth::generate(&args.config(), &args.out, args.force).map_err(Failure::of)?;
            out!("{summary}");
            Ok(())
        }
        Command::Sort(args) => {
            let mut options = SortOptions::new(args.memory);
            options.progress = !args.quiet;
            if let Some(dir) = args.temp_dir {
                options.temp_dir = dir;
            }
            let summary = sort_file(&args.input, &args.output, &args.time, args.force, &options)
                .map_err(Failure::of)?;
            outln!("{summary}");
            Ok(())
        }
        Command::Import {
            dataset: ImportCommand::Movielens { src, dest },
        } => {
            let summary = import_movielens(&src, &dest).map_err(Failure::of)?;
            outln!("{summary}");
            Ok(())
        }
    }
}

fn run_bench(bench: BenchCommand) -> Result<(), Failure> {
    match bench {
        BenchCommand::Embed {
            texts,
            model,
            model_dir,
            threads,
            batch,
            device,
            check_reference,
            compare_cpu,
            json,
        } => {
            if threads == 0 || batch == 0 {
                return Err(Failure::user("--threads and --batch must be at least 1"));
            }
            if compare_cpu && device == DeviceChoice::Cpu {
                return Err(Failure::user(
                    "--compare-cpu compares another device's vectors with the CPU's: \
                     add --device cuda (or cuda:N)",
                ));
            }
            recsift::model::require_support(device).map_err(Failure::user)?;
            let dir = resolve_model_dir(&model, model_dir.as_deref()).map_err(Failure::user)?;
            let options = EmbedBenchOptions {
                device,
                threads,
                batch,
                reference: check_reference,
                compare_cpu,
            };
            let report = bench_embed(&texts, &dir, &options).map_err(Failure::user)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| Failure {
                        code: 1,
                        message: e.to_string()
                    })?
                );
            } else {
                let peak = report
                    .peak_rss_mb
                    .map(|m| format!("{m:.0} MiB"))
                    .unwrap_or_else(|| "n/a".into());
                outln!("model        {}", report.model);
                outln!("device       {}", report.device);
                outln!("texts        {} ({} tokens)", report.texts, report.tokens);
                outln!("threads      {}, batch {}", report.threads, report.batch);
                outln!("time         {:.2} s", report.seconds);
                outln!("throughput   {:.1} texts/s", report.texts_per_s);
                outln!("peak memory  {peak}");
                if let Some(diff) = report.reference {
                    outln!("vs reference {}", show_diff(&diff));
                }
                if let Some(diff) = report.cpu {
                    outln!("vs cpu       {}", show_diff(&diff));
                }
            }
            Ok(())
        }
        BenchCommand::Rescore(args) => bench_rescore(args),
        BenchCommand::Replay(args) => bench_replay(args),
        BenchCommand::Rank(args) => bench_rank(args),
        BenchCommand::Parity(args) => bench_parity(args),
    }
}

/// `--memory`'s value.
fn parse_memory_arg(text: &str) -> Result<u64, String> {
    match parse_memory(text) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(format!(
            "`{text}` is not a memory size: write a positive whole number and a unit, `B`, \
             `KiB`, `MiB`, `GiB` or `TiB` (e.g. `512MiB`)"
        )),
    }
}

/// `--device`'s value.
fn parse_device(text: &str) -> Result<DeviceChoice, String> {
    DeviceChoice::parse(text)
        .ok_or_else(|| format!("unknown device `{text}`: use `cpu`, `cuda` or `cuda:N`"))
}

/// One line of `bench embed`'s table for a [`VectorDiff`].
fn show_diff(diff: &VectorDiff) -> String {
    format!(
        "max abs diff {:.2e}, min cosine {:.6} over {} vectors",
        diff.max_abs_diff, diff.min_cosine, diff.vectors
    )
}

fn bench_rank(args: RankArgs) -> Result<(), Failure> {
    let config = RankBenchConfig {
        users: args.users,
        items: args.items,
        dim: args.dim,
        k: args.k,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        block: args.block,
        seed: args.seed,
        reference: (!args.no_reference).then_some(args.reference),
        python: args.python,
    };
    let report = rank::bench_rank(&config).map_err(Failure::of)?;
    print_report(&report, args.json)
}

fn bench_parity(args: ParityArgs) -> Result<(), Failure> {
    if args.rounds == 0 {
        return Err(Failure::user("--rounds must be at least 1"));
    }
    recsift::model::require_support(args.device).map_err(Failure::user)?;
    let options = ParityOptions {
        pipeline: args.pipeline,
        device: args.device,
        rounds: args.rounds,
        tolerance: args.tolerance,
        encoder_tolerance: args.encoder_tolerance,
        model_dir: args.model_dir,
        out: args.out,
        only: args.only,
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let report = parity::bench_parity(&options).map_err(Failure::of)?;
    print_report(&report, args.json)?;
    let failures = report.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: format!(
                "{} of the checks differ beyond the tolerance between cpu and {}",
                failures.len(),
                report.device
            ),
        })
    }
}

/// Prints a bench report as its table, or as one JSON object.
fn print_report<R: serde::Serialize + std::fmt::Display>(
    report: &R,
    json: bool,
) -> Result<(), Failure> {
    if json {
        let json = serde_json::to_string(report).map_err(|e| Failure {
            code: 1,
            message: format!("could not write the report as JSON: {e}"),
        })?;
        outln!("{json}");
    } else {
        outln!("{report}");
    }
    Ok(())
}

fn bench_replay(args: ReplayArgs) -> Result<(), Failure> {
    let mut config = ReplayBenchConfig::new(args.events);
    config.workers = args.workers;
    config.processes = args.processes;
    config.seed = args.seed;
    config.log = args.log;
    config.set = args.set;
    if let Some(span) = args.window {
        config.window = BenchWindow::Duration(span);
    } else if let Some(events) = args.window_events {
        config.window = BenchWindow::Events(events);
    }
    let report = replay::bench_replay(config).map_err(Failure::of)?;
    print_report(&report, args.json)
}

fn bench_rescore(args: RescoreArgs) -> Result<(), Failure> {
    let config = RescoreBenchConfig {
        samples: args.samples,
        users: args.users,
        items: args.items,
        dim: args.dim,
        members: args.members,
        touch_users: args.touch,
        touch_items: args.touch_items,
        head_change: args.head_change,
        updates: args.updates,
        workers: args.workers,
        sequential: args.sequential,
        item_skew: args.item_skew,
        seed: args.seed,
    };
    let report = rescore::bench_rescore(config).map_err(Failure::of)?;
    print_report(&report, args.json)
}

/// The study the pipeline describes, if it has a `study:` section (every arm validated).
fn load_study(args: &PipelineArgs) -> Result<Option<StudyPlan>, Failure> {
    plan_study(&args.file, &args.set).map_err(Failure::user)
}

/// `recsift run` of a study: every run, then the analysis and report.
fn run_study_command(study: &StudyPlan, force: bool, progress: bool) -> Result<(), Failure> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome =
        study::run_and_report(study, force, progress, &command_line).map_err(Failure::of)?;
    outln!("{outcome}");
    Ok(())
}

/// `recsift report`: the study files from runs the user chose.
fn report_command(dirs: &[PathBuf], out: &Path, baseline: Option<String>) -> Result<(), Failure> {
    let collected = study::collect::collect_runs(dirs).map_err(Failure::of)?;
    let baseline = baseline.unwrap_or_else(|| {
        let arms: Vec<&str> = collected.curves.iter().map(|c| c.arm.as_str()).collect();
        arms.iter()
            .find(|a| **a == "random" || a.ends_with("/random"))
            .or(arms.first())
            .map(|a| a.to_string())
            .unwrap_or_default()
    });
    let context = study::ReportContext {
        title: "recsift report".into(),
        plan: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        versions: study::output::versions(),
    };
    let input = study::StudyInput {
        name: "report",
        plan: None,
        curves: &collected.curves,
        dirs: &collected.dirs,
        baseline: &baseline,
        metric_order: &[],
    };
    study::write_study(out, &input, &context).map_err(Failure::of)?;
    outln!(
        "{} runs compared against `{baseline}` -> {}",
        collected.curves.len(),
        out.join("report.html").display()
    );
    Ok(())
}

fn load_plan(args: &PipelineArgs) -> Result<Plan, Failure> {
    let loaded = LoadedSpec::load(&args.file, &args.set).map_err(Failure::user)?;
    plan::build(&loaded).map_err(Failure::user)
}

/// Writes `text` to stdout. A reader that went away (a closed pipe) ends the process with
/// success, as for other Unix tools; any other write failure ends it with an error.
fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
