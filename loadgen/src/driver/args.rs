//! `loadgen run` flags, and the checked plan they describe.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveTime;
use clap::Parser;
use serde::{Serialize, Serializer};

use super::arrivals::{Schedule, parse_duration};
use super::assert::Thresholds;
use super::source::ScenarioName;
use super::streams::MAX_BATCH;

/// Offered rate when neither `--rate` nor `--schedule` is given.
const DEFAULT_RATE: f64 = 1000.0;

/// Run length when neither `--duration` nor a schedule says.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Flags of `loadgen run` (the long help of the subcommand explains the
/// schedule and duration syntax).
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct RunArgs {
    /// gRPC address of the server under test.
    #[arg(long, env = "CROWD_TARGET", default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Offered reports per second, all streams together (default 1000).
    #[arg(long, conflicts_with = "schedule")]
    pub rate: Option<f64>,
    /// A varying rate, e.g. `step:10s@1000,10s@5000` or `ramp:1000..20000/60s`.
    #[arg(long, value_parser = Schedule::parse)]
    #[serde(serialize_with = "display_opt")]
    pub schedule: Option<Schedule>,
    /// How long to send (default 10s, or the schedule's length).
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "secs_opt")]
    pub duration: Option<Duration>,
    /// Concurrent report streams.
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Most reports per message: 1 sends each report on its own over
    /// StreamReports; more uses StreamReportBatches, each stream sending
    /// what is queued for it at once (never waiting to fill a batch), as a
    /// relay would. At most 500.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// With --batch above 1: how long a batch waits after its first report
    /// for more (e.g. 1ms), as a relay lingers to send fuller batches; 0
    /// sends what is queued at once.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub linger: Duration,
    /// HTTP/2 connections the streams share; 0 = one per 100 streams.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// WatchOccupancy subscribers measuring freshness.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Running trains each watcher follows.
    #[arg(long, default_value_t = 3)]
    pub watch_trips: usize,
    /// Open-loop GetOccupancy queries per second; 0 = none.
    #[arg(long, default_value_t = 0.0)]
    pub query_rate: f64,
    /// Compare estimates with the simulator's truth this often; 0 = only
    /// once, at the end.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub score_every: Duration,
    /// Simulated time of day when the run starts (HH:MM).
    #[arg(long, default_value = "07:30", value_parser = parse_time)]
    #[serde(serialize_with = "display")]
    pub sim_start: NaiveTime,
    /// Simulated seconds per real second (10 = a 6 min run covers an hour).
    #[arg(long, default_value_t = 1.0)]
    pub sim_speed: f64,
    /// Which riders the simulator plays.
    #[arg(long, value_enum, default_value = "default")]
    pub scenario: ScenarioName,
    /// A network file (TOML, see loadgen/networks/) to simulate instead of
    /// the built-in sample line B.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// Seed of the arrivals and the simulator: same seed, same reports.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up on an unreachable target after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub connect_timeout: Duration,
    /// After sending, wait at most this long for outstanding acks and updates.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub drain: Duration,
    /// A report leaving this much behind schedule counts as sent late.
    #[arg(long, default_value_t = 10.0, value_name = "MS")]
    pub late_ms: f64,
    /// The run is INVALID if the generator's p99 lag exceeds this.
    #[arg(long, default_value_t = 50.0, value_name = "MS")]
    pub max_lag_p99_ms: f64,
    /// The run is INVALID if more than this share of reports left late.
    #[arg(long, default_value_t = 0.01, value_name = "FRACTION")]
    pub max_late_fraction: f64,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub thresholds: Thresholds,
}

/// The checked schedule and length of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub schedule: Schedule,
    pub duration: Duration,
}

impl RunArgs {
    /// Parses flags as `loadgen run` would (without the program name), for
    /// tests and benchmark runners that drive the load generator in-process.
    pub fn from_flags<I, S>(flags: I) -> anyhow::Result<RunArgs>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Command {
            #[command(flatten)]
            args: RunArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("loadgen-run"))
            .chain(flags.into_iter().map(Into::into));
        Ok(Command::try_parse_from(argv)?.args)
    }

    /// Checks the flags together and resolves defaults.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let schedule = match (&self.schedule, self.rate) {
            (Some(schedule), _) => schedule.clone(),
            (None, rate) => Schedule::Constant(rate.unwrap_or(DEFAULT_RATE)),
        };
        schedule.validate().context("--rate/--schedule")?;
        let duration = self
            .duration
            .or(schedule.natural_length())
            .unwrap_or(DEFAULT_DURATION);
        anyhow::ensure!(!duration.is_zero(), "--duration must be longer than 0");
        anyhow::ensure!(self.streams > 0, "--streams must be at least 1");
        anyhow::ensure!(
            (1..=MAX_BATCH).contains(&self.batch),
            "--batch must be from 1 to {MAX_BATCH} (got {})",
            self.batch
        );
        anyhow::ensure!(
            self.sim_speed.is_finite() && self.sim_speed > 0.0,
            "--sim-speed must be greater than 0 (got {})",
            self.sim_speed
        );
        anyhow::ensure!(
            self.query_rate.is_finite() && self.query_rate >= 0.0,
            "--query-rate must be 0 or more (got {})",
            self.query_rate
        );
        Ok(Plan { schedule, duration })
    }
}

fn parse_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M:%S"))
        .map_err(|_| format!("{text:?}: expected HH:MM, e.g. 07:30"))
}

fn secs<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

fn secs_opt<S: Serializer>(duration: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => secs(duration, s),
        None => s.serialize_none(),
    }
}

fn display<T: std::fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_opt<T: std::fmt::Display, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => display(value, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_plan_a_ten_second_run_at_1000_per_second() {
        let args = RunArgs::from_flags(["--target", "http://127.0.0.1:1"]).unwrap();
        let plan = args.plan().unwrap();
        assert_eq!(plan.schedule, Schedule::Constant(1000.0));
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(args.sim_start, NaiveTime::from_hms_opt(7, 30, 0).unwrap());
    }

    #[test]
    fn a_schedule_sets_the_default_duration() {
        let args = RunArgs::from_flags(["--schedule", "step:10s@1000,5s@5000"]).unwrap();
        assert_eq!(args.plan().unwrap().duration, Duration::from_secs(15));
        let args =
            RunArgs::from_flags(["--schedule", "ramp:1..10/60s", "--duration", "2m"]).unwrap();
        assert_eq!(args.plan().unwrap().duration, Duration::from_secs(120));
    }

    #[test]
    fn rate_zero_is_a_clear_error() {
        let args = RunArgs::from_flags(["--rate", "0"]).unwrap();
        let error = format!("{:#}", args.plan().unwrap_err());
        assert!(error.contains("rate must be greater than 0"), "{error}");
    }

    #[test]
    fn bad_flags_are_rejected_at_parse_time() {
        for flags in [
            vec!["--schedule", "sometimes"],
            vec!["--rate", "5", "--schedule", "ramp:1..2/1s"],
            vec!["--duration", "forever"],
            vec!["--sim-start", "25:99"],
        ] {
            assert!(RunArgs::from_flags(flags.clone()).is_err(), "{flags:?}");
        }
        let args = RunArgs::from_flags(["--streams", "0"]).unwrap();
        assert!(args.plan().is_err());
    }

    #[test]
    fn batch_defaults_to_one_report_per_message_and_is_bounded() {
        let args = RunArgs::from_flags(["--target", "http://127.0.0.1:1"]).unwrap();
        assert_eq!(args.batch, 1);
        let args = RunArgs::from_flags(["--batch", "64"]).unwrap();
        assert_eq!(args.batch, 64);
        assert!(args.plan().is_ok());
        assert_eq!(serde_json::to_value(&args).unwrap()["batch"], 64);
        for batch in ["0", "501"] {
            let args = RunArgs::from_flags(["--batch", batch]).unwrap();
            let error = format!("{:#}", args.plan().unwrap_err());
            assert!(error.contains("--batch must be from 1 to 500"), "{error}");
        }
    }

    #[test]
    fn config_serializes_with_readable_values() {
        let args =
            RunArgs::from_flags(["--schedule", "ramp:1..10/60s", "--max-p99-ms", "25"]).unwrap();
        let json = serde_json::to_value(&args).unwrap();
        assert_eq!(json["schedule"], "ramp:1..10/60s");
        assert_eq!(json["score_every"], 5.0);
        assert_eq!(json["sim_start"], "07:30:00");
        assert_eq!(json["scenario"], "default");
        assert_eq!(json["thresholds"]["max_p99_ms"], 25.0);
    }
}
