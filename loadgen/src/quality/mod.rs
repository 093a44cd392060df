//! `loadgen quality`: how good the published estimates are, in one command.
//!
//! Plays a compressed morning rush three times, each against a fresh
//! in-process stack (private Redis, server, aggregator):
//!
//! 1. the default scenario (20 % noisy riders, 5 % hostile devices);
//! 2. the adversarial scenario, whose swarm of fresh devices tells one lie
//!    about one train;
//! 3. the adversarial scenario with an empty swarm, as the reference: what
//!    the swarm's target would have been estimated without the swarm (played
//!    from the same start, so that both runs learnt the same reputations).
//!
//! Each stack starts knowing the riders of the mornings before
//! (`--warm-up-days`, [`replay::warm_up`]), as a service in operation does,
//! and plays the half hour before the scored hour unscored
//! (`--lead-in-minutes`), so that scoring starts on a service that has
//! been following its trains, not one switched on with the rush under
//! way; the simulated day is fixed (`--date`), so a seed always means the
//! same morning.
//!
//! Accuracy rounds compare the estimates backed by at least
//! `--min-reporters` devices with the simulator's truth every simulated
//! minute and are added up ([`tally`]). With `--assert`, the run fails
//! unless the quality bar is met.
//!
//! - [`play`]: one scenario against one stack.
//! - [`replay`]: one scenario through the pure estimator, without a stack
//!   (`--offline`): seconds instead of minutes, to tune the estimator with.
//! - [`tally`]: the pure sums, the swarm's effect and the bar.

pub mod diagnose;
pub mod play;
pub mod replay;
pub mod tally;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use serde::Serialize;

use crate::sim::Scenario;
use play::{Plan, Played};
use tally::{Bar, Numbers, SwarmEffect, swarm_effect};

/// Options of `loadgen quality`.
#[derive(Debug, Clone, clap::Args)]
pub struct QualityArgs {
    /// Simulated time of day the rush starts at (HH:MM).
    #[arg(long, default_value = "07:45")]
    pub start: String,
    /// Simulated service day (YYYY-MM-DD). The simulated trains' loads are
    /// drawn from the seed and the day, so a fixed day makes a seed replay
    /// the same morning whenever it is run.
    #[arg(long, default_value = "2026-11-26")]
    pub date: String,
    /// Mornings played before the scored one, unscored, so that the service
    /// knows its regular riders as it would in operation (riders take the
    /// same train every day); only what it learnt of them is kept. 0 scores
    /// a service on its first morning, when nobody has standing yet.
    #[arg(long, default_value_t = 1)]
    pub warm_up_days: u32,
    /// Simulated minutes played before `--start`, unscored: a service in
    /// operation has been running all morning, so its trains and what the
    /// trains ahead said on each stretch are known when the scored hour
    /// starts. 0 scores a service started at `--start` with nothing.
    #[arg(long, default_value_t = 30)]
    pub lead_in_minutes: i64,
    /// Simulated minutes played per scenario.
    #[arg(long, default_value_t = 60)]
    pub minutes: i64,
    /// Simulated seconds per real second (the aggregator's half-life and
    /// window are compressed by the same factor).
    #[arg(long, default_value_t = 30.0)]
    pub speed: f64,
    /// Reports per simulated minute, all riders together.
    #[arg(long, default_value_t = 160.0)]
    pub reports_per_sim_minute: f64,
    /// Only estimates backed by at least this many devices are compared.
    #[arg(long, default_value_t = 3)]
    pub min_reporters: u32,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
    /// Exit non-zero unless the quality bar is met.
    #[arg(long)]
    pub assert: bool,
    /// Replay the scenarios through the pure estimator and reputation model
    /// instead of a stack: the same validation and model, in simulated time,
    /// without server, Redis or worker batching.
    #[arg(long)]
    pub offline: bool,
    /// Write the numbers as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// With `--offline`: also print where the error comes from (estimates
    /// next to oracles that each remove one source of error, see
    /// [`diagnose`]).
    #[arg(long)]
    pub diagnose: bool,
}

/// Simulated minutes during which the swarm's reports are judged (its
/// lie is at most a window old).
const SWARM_MINUTES: i64 = 15;

/// Everything a quality run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Default scenario, estimates with enough reporters.
    pub default: Numbers,
    /// Default scenario, every estimate (coverage of any answer).
    pub default_all: Numbers,
    /// Adversarial scenario, estimates with enough reporters.
    pub adversarial: Numbers,
    /// The swarm's effect on its target.
    pub swarm: SwarmEffect,
    /// The bar the numbers were held to.
    pub bar: Bar,
    /// Parts of the bar missed.
    pub failures: Vec<String>,
}

/// Runs the three scenarios and judges them.
pub async fn run(args: &QualityArgs) -> anyhow::Result<Quality> {
    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0,
        "--speed must be > 0"
    );
    anyhow::ensure!(args.minutes > 0, "--minutes must be > 0");
    anyhow::ensure!(
        (0..=24 * 60).contains(&args.lead_in_minutes),
        "--lead-in-minutes must be within 0..=1440"
    );
    let start = NaiveTime::parse_from_str(&args.start, "%H:%M")
        .map_err(|_| anyhow::anyhow!("--start {:?}: expected HH:MM", args.start))?;
    let date = NaiveDate::parse_from_str(&args.date, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("--date {:?}: expected YYYY-MM-DD", args.date))?;
    let from = NaiveDateTime::new(date, start);
    let until = from + TimeDelta::minutes(args.minutes);
    let plan = |scenario: Scenario| Plan {
        scenario,
        seed: args.seed,
        from,
        until,
        speed: args.speed,
        reports_per_sim_minute: args.reports_per_sim_minute,
        score_every_minutes: 1,
        min_reporters: args.min_reporters,
        follow: None,
        warm_up_days: args.warm_up_days,
        lead_in_minutes: args.lead_in_minutes,
    };

    if args.diagnose {
        for (name, scenario) in [
            ("honest", Scenario::honest()),
            ("default", Scenario::default()),
            ("adversarial", Scenario::adversarial()),
        ] {
            diagnose::diagnose(&plan(scenario), name);
        }
    }
    eprintln!(
        "quality: default scenario, {} simulated minutes scored after {} unscored",
        args.minutes, args.lead_in_minutes
    );
    let default = play_one(args, &plan(Scenario::default())).await?;
    print_acks("default", &default);

    eprintln!("quality: adversarial scenario with its swarm");
    let adversarial = Scenario::adversarial();
    let swarm_start = adversarial.swarm.map_or(0, |s| i64::from(s.at_minute));
    let attacked = play_one(args, &plan(adversarial.clone())).await?;
    print_acks("adversarial", &attacked);

    eprintln!("quality: adversarial scenario without its swarm (reference)");
    let mut quiet = adversarial;
    if let Some(swarm) = quiet.swarm.as_mut() {
        swarm.size = 0;
    }
    // The reference replays the same morning up to the end of the swarm's
    // effect, from the same start: the service learns whom to trust as the
    // morning goes on, so a reference started later (with no reputation)
    // would differ from the attacked run for reasons that are not the
    // swarm (hostile devices nobody has caught yet).
    let swarm_end =
        from.date().and_time(NaiveTime::MIN) + TimeDelta::minutes(swarm_start + SWARM_MINUTES + 1);
    let reference = play_one(
        args,
        &Plan {
            until: until.min(swarm_end.max(from + TimeDelta::minutes(1))),
            follow: attacked.target.clone(),
            ..plan(quiet)
        },
    )
    .await?;

    let swarm = swarm_effect(
        &attacked.trace,
        &reference.trace,
        swarm_start,
        SWARM_MINUTES,
    );
    let bar = Bar::default();
    let default_numbers = default.supported.numbers();
    let adversarial_numbers = attacked.supported.numbers();
    let mut failures = bar.check("default", &default_numbers);
    failures.extend(bar.check("adversarial", &adversarial_numbers));
    failures.extend(bar.check_swarm(&swarm));
    Ok(Quality {
        default: default_numbers,
        default_all: default.all.numbers(),
        adversarial: adversarial_numbers,
        swarm,
        bar,
        failures,
    })
}

/// One scenario, against a stack or (`--offline`) through the pure model.
async fn play_one(args: &QualityArgs, plan: &Plan) -> anyhow::Result<Played> {
    if args.offline {
        Ok(replay::replay(plan))
    } else {
        play::play(plan).await
    }
}

fn print_acks(name: &str, played: &Played) {
    let (accepted, rejected, duplicate) = played.acks;
    eprintln!("quality: {name}: {accepted} accepted, {rejected} rejected, {duplicate} duplicate");
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "default scenario (estimates with ≥ 3 reporters):")?;
        write!(f, "{}", self.default)?;
        writeln!(
            f,
            "  any estimate: coverage {:.1}%, trains exact {:.1}%, within one {:.1}%",
            self.default_all.coverage * 100.0,
            self.default_all.trains.exact * 100.0,
            self.default_all.trains.within_one * 100.0
        )?;
        writeln!(f, "adversarial scenario (estimates with ≥ 3 reporters):")?;
        write!(f, "{}", self.adversarial)?;
        writeln!(
            f,
            "swarm of fresh devices on one train: {} rounds; target off the truth by ≤ {} \
             level(s) (≤ {} before the swarm), off its estimate without the swarm by ≤ {}",
            self.swarm.rounds,
            self.swarm.max_error_vs_truth,
            self.swarm.max_error_before,
            self.swarm.max_shift_vs_honest
        )?;
        if self.failures.is_empty() {
            writeln!(f, "quality bar: met")
        } else {
            for failure in &self.failures {
                writeln!(f, "quality bar missed: {failure}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        quality: QualityArgs,
    }

    /// The reference morning (seed 11 on the default day, scored from a
    /// standing start: no lead-in), replayed offline: deterministic, so any
    /// change of the model that loses a part of the bar it meets there, or
    /// much of the rest, fails here first.
    /// (The exact level, 85 %, is out of reach of these reports: see the
    /// README's oracles; its floor only guards against a regression.)
    #[tokio::test]
    async fn the_reference_morning_keeps_the_bar_items_it_meets() {
        let args = Cli::parse_from(["quality", "--offline", "--lead-in-minutes", "0"]).quality;
        let q = run(&args).await.expect("an offline run");
        let (d, a) = (&q.default.trains, &q.adversarial.trains);
        assert!(d.within_one >= q.bar.min_within_one, "{q}");
        assert!(d.mean_abs_error <= q.bar.max_mae, "{q}");
        assert!(a.mean_abs_error <= q.bar.max_mae, "{q}");
        assert!(
            q.default.confident_exact >= q.bar.min_confident_exact,
            "{q}"
        );
        assert!(q.swarm.max_shift_vs_honest <= q.bar.max_swarm_shift, "{q}");
        assert!(d.exact >= 0.70 && a.exact >= 0.70, "{q}");
        assert!(a.within_one >= 0.985, "{q}");
    }

    /// On this morning the swarm picks a quiet train whose few riders are
    /// all new to the service, and its first two devices report before
    /// there are enough of them to be recognised as a burst: two fresh
    /// devices against two, the newest win. The estimate may follow them
    /// one level, not flip the train (without pacing it showed five levels
    /// off for that round; with a lead-in, the train had a rider with
    /// standing by then).
    #[tokio::test]
    async fn the_first_devices_of_a_swarm_move_a_train_of_newcomers_one_level() {
        let args = Cli::parse_from([
            "quality",
            "--offline",
            "--date",
            "2026-11-28",
            "--lead-in-minutes",
            "0",
        ])
        .quality;
        let q = run(&args).await.expect("an offline run");
        assert!(q.swarm.rounds > 0, "{q}");
        assert!(q.swarm.max_shift_vs_honest <= q.bar.max_swarm_shift, "{q}");
    }
}
