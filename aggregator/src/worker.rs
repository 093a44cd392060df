//! The aggregator loop: keep leases, read owned partitions, fold reports into
//! train states, commit each partition's batch atomically, refresh estimates
//! that nobody reported on lately (so they fade), expire idle trains.
//!
//! Everything runs on one task, so a partition never has more than one batch
//! in flight: at the start of every cycle, memory holds only committed state.
//! Any error whose outcome is unknown resets the partition (memory dropped,
//! pending entries replayed), which is always safe because the commit is
//! atomic and report ids are deduplicated from the committed state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crowd_proto::codec::{encode_estimate, timestamp_from_ms};
use crowd_proto::connection::{Connection, Options, Target};
use crowd_proto::domain::TripKey;
use crowd_proto::layout::Layout;
use crowd_proto::pb::store::{StoredReport, TrainState};
use crowd_proto::pb::v1::{EstimateSource, OccupancyEstimate, TripRef};

use crate::admission::{DeadLetter, admit};
use crate::backoff::Backoff;
use crate::baseline_store::{Baselines, TrainMemo};
use crate::commit::{TrainWrite, WriteError, Writer, indexable};
use crate::estimator::{self, Applied, Ballot, Params, pace};
use crate::lease::Leases;
use crate::membership::Membership;
use crate::partition::{Partition, Phase, Train};
use crate::plausibility;
use crate::plausibility::devices::DeviceTracker;
use crate::profile::Profiles;
use crate::profile_store;
use crate::reputation::{Reputation, Verdict, judge, judge_on};
use crate::reputation_store::ReputationStore;
use crate::state_codec;
use crate::stream::{self, Entry, From, Reader};
use crate::{AggregatorError, Config, telemetry};

/// Response timeout of ordinary commands (scripts included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait to (re)connect to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra time granted to a blocking read beyond its BLOCK.
const READ_GRACE: Duration = Duration::from_secs(5);
/// Reads of `--batch-size` entries a partition's batch may take when its
/// stream has a backlog ([`Worker::read_backlog`]): at the default size,
/// batches of up to 16,384 reports (and commit scripts up to four times
/// the size of one read's).
const BACKLOG_READS: usize = 4;
/// How often route baselines and stretch profiles are written back (and
/// their routes read again, with the other aggregators' updates).
const ROUTE_FLUSH_INTERVAL: Duration = crate::baseline_store::FLUSH_INTERVAL;

/// Why a cycle did not complete.
#[derive(Debug)]
enum CycleError {
    /// Transient: log, back off, retry.
    Redis(redis::RedisError),
    /// The configured fault fired.
    Crash,
}

impl std::convert::From<redis::RedisError> for CycleError {
    fn from(e: redis::RedisError) -> Self {
        CycleError::Redis(e)
    }
}

/// The state of one running aggregator.
#[derive(Debug)]
pub(crate) struct Worker {
    config: Config,
    layout: Layout,
    params: Params,
    stop: CancellationToken,
    /// Commands: leases, loads, commits, sweeps.
    cmd: Connection,
    /// Blocking XREADGROUP only, with a response timeout longer than BLOCK.
    reader: Reader,
    leases: Leases,
    /// Our entry in the fleet, which sets our share of the partitions.
    membership: Membership,
    writer: Writer,
    owned: BTreeMap<u16, Partition>,
    /// Trust of devices; stays empty (everybody weighs 1) when disabled.
    reputation: Reputation,
    /// Where reputation is shared with other aggregators and restarts.
    reputation_store: ReputationStore,
    /// Each device's last reports across the trains we own: position jumps
    /// and one device on many trains at once.
    devices: DeviceTracker,
    /// Score changes not yet added to the shared scores.
    reputation_changes: HashMap<u64, f64>,
    /// [`Reputation::forgettings`] when devices were last looked up.
    reputation_forgettings: u64,
    /// Non-empty batches read so far (for fault injection).
    batches: u64,
    next_lease_at: Instant,
    next_sweep_at: Instant,
    next_refresh_at: Instant,
    /// The usual occupancy of the routes published, to compare estimates with.
    baselines: Baselines,
    /// What the trains ahead said on the stretches of those routes.
    profiles: Profiles,
    /// When baselines and profiles are next written back.
    next_route_flush_at: Instant,
    backoff: Backoff,
}

impl Worker {
    /// Connects to Redis, retrying until it answers; `Ok(None)` if stopped first.
    pub(crate) async fn start(
        config: Config,
        stop: CancellationToken,
    ) -> Result<Option<Worker>, AggregatorError> {
        let target = Target::parse(&config.redis_url, config.redis_cluster)
            .map_err(AggregatorError::InvalidRedisUrl)?;
        let read_timeout = Duration::from_millis(config.block_ms) + READ_GRACE;
        let mut backoff = Backoff::new();
        let (cmd, reader) = loop {
            if stop.is_cancelled() {
                return Ok(None);
            }
            let cmd = target.connect(options(COMMAND_TIMEOUT)).await;
            let reader = Reader::connect(&target, options(read_timeout)).await;
            match (cmd, reader) {
                (Ok(c), Ok(r)) => break (c, r),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot connect to redis; retrying");
                    backoff.wait(&stop).await;
                }
            }
        };
        let layout = Layout::new(config.partitions);
        let now = Instant::now();
        let leases = Leases::new(config.lease_ttl());
        let utc_offset_secs = config.utc_offset_mins.saturating_mul(60);
        let half_life_ms = config.estimator_params().half_life_ms;
        Ok(Some(Worker {
            params: config.estimator_params(),
            membership: Membership::new(leases.instance().to_owned(), config.lease_ttl()),
            leases,
            writer: Writer::new(layout, config.train_idle_ms(), config.updates_maxlen),
            layout,
            config,
            stop,
            cmd,
            reader,
            owned: BTreeMap::new(),
            reputation: Reputation::new(),
            reputation_store: ReputationStore::new(),
            reputation_changes: HashMap::new(),
            reputation_forgettings: 0,
            devices: DeviceTracker::with_half_life(half_life_ms),
            batches: 0,
            next_lease_at: now,
            next_sweep_at: now,
            next_refresh_at: now,
            baselines: Baselines::new(utc_offset_secs),
            profiles: Profiles::default(),
            next_route_flush_at: now + ROUTE_FLUSH_INTERVAL,
            backoff,
        }))
    }

    /// Cycles until stopped; releases the leases on the way out.
    pub(crate) async fn run(&mut self) -> Result<(), AggregatorError> {
        while !self.stop.is_cancelled() {
            match self.cycle().await {
                Ok(()) => self.backoff.reset(),
                Err(CycleError::Crash) => {
                    tracing::warn!(batch = self.batches, "injected crash before commit");
                    return Err(AggregatorError::InjectedCrash);
                }
                Err(CycleError::Redis(e)) => {
                    metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
                    tracing::warn!(error = %e, "redis error; backing off");
                    self.backoff.wait(&self.stop).await;
                }
            }
        }
        self.release_all().await;
        Ok(())
    }

    async fn cycle(&mut self) -> Result<(), CycleError> {
        if Instant::now() >= self.next_lease_at {
            self.maintain_leases().await?;
        }
        if Instant::now() >= self.next_sweep_at {
            self.sweep().await?;
        }
        if Instant::now() >= self.next_refresh_at {
            self.refresh().await?;
        }
        self.ensure_groups().await?;

        let pending = self
            .owned
            .iter()
            .find(|(_, p)| p.phase == Phase::Pending)
            .map(|(k, _)| *k);
        if let Some(k) = pending {
            let keys = [self.layout.reports(k)];
            let read = stream::read(
                &mut self.reader,
                &keys,
                From::Pending,
                self.config.batch_size,
                None,
            )
            .await;
            let mut entries: Vec<Entry> = match read {
                Ok(r) => r.into_iter().flat_map(|(_, e)| e).collect(),
                Err(e) => {
                    self.reset(k);
                    return Err(e.into());
                }
            };
            // Replayed entries that keep coming back are set aside.
            if let Err(e) = stream::count_deliveries(&mut self.cmd, &keys[0], &mut entries).await {
                self.reset(k);
                return Err(e.into());
            }
            if entries.is_empty() {
                if let Some(p) = self.owned.get_mut(&k) {
                    p.phase = Phase::Live;
                }
                return Ok(());
            }
            return self.process(vec![(k, entries)]).await;
        }

        let live: Vec<u16> = self
            .owned
            .iter()
            .filter(|(_, p)| p.phase == Phase::Live)
            .map(|(k, _)| *k)
            .collect();
        if live.is_empty() {
            self.idle().await;
            return Ok(());
        }
        let keys: Vec<String> = live.iter().map(|k| self.layout.reports(*k)).collect();
        let read = stream::read(
            &mut self.reader,
            &keys,
            From::New,
            self.config.batch_size,
            Some(self.config.block_ms),
        )
        .await;
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                // Entries may have been delivered before the error: replay them.
                for k in live {
                    self.reset(k);
                }
                return Err(e.into());
            }
        };
        let by_key: HashMap<&str, u16> = keys.iter().map(String::as_str).zip(live).collect();
        let mut batch: Vec<(u16, Vec<Entry>)> = read
            .into_iter()
            .filter(|(_, entries)| !entries.is_empty())
            .filter_map(|(key, entries)| by_key.get(key.as_str()).map(|k| (*k, entries)))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.read_backlog(&mut batch).await {
            // Entries may have been delivered before the error: replay them.
            for (k, _) in batch {
                self.reset(k);
            }
            return Err(e.into());
        }
        self.process(batch).await
    }

    /// Extends a batch whose partitions have a backlog (their read came
    /// back full) with up to [`BACKLOG_READS`] − 1 more reads of them,
    /// without blocking: each train's estimate, state and commit are paid
    /// once per batch, so a backlog drains faster in larger batches, while
    /// under light load nothing changes (reads do not come back full).
    async fn read_backlog(&mut self, batch: &mut [(u16, Vec<Entry>)]) -> redis::RedisResult<()> {
        let size = self.config.batch_size.max(1);
        for reads in 1..BACKLOG_READS {
            let full: Vec<usize> = (0..batch.len())
                .filter(|i| batch[*i].1.len() >= size * reads)
                .collect();
            if full.is_empty() {
                break;
            }
            let keys: Vec<String> = full
                .iter()
                .map(|i| self.layout.reports(batch[*i].0))
                .collect();
            let read = stream::read(&mut self.reader, &keys, From::New, size, None).await?;
            for (key, entries) in read {
                if let Some(j) = keys.iter().position(|k| *k == key) {
                    batch[full[j]].1.extend(entries);
                }
            }
        }
        Ok(())
    }

    /// Nothing to read: wait for the next lease attempt.
    async fn idle(&self) {
        let until = self
            .next_lease_at
            .min(Instant::now() + Duration::from_millis(200));
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = self.stop.cancelled() => {}
        }
    }

    /// Applies a batch in memory, then commits it partition by partition.
    async fn process(&mut self, batch: Vec<(u16, Vec<Entry>)>) -> Result<(), CycleError> {
        self.batches += 1;
        let size: usize = batch.iter().map(|(_, e)| e.len()).sum();
        metrics::counter!(telemetry::BATCHES).increment(1);
        metrics::histogram!(telemetry::BATCH_SIZE).record(size as f64);

        let now = now_ms();
        let mut applied = Vec::with_capacity(batch.len());
        let mut first_error = None;
        for (k, entries) in batch {
            match self.apply_entries(k, &entries, now).await {
                Ok((touched, dead)) => {
                    let acks = entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
                    applied.push((k, touched, dead, acks));
                }
                Err(e) => {
                    self.reset(k);
                    first_error.get_or_insert(e);
                }
            }
        }

        if self.config.faults.crash_before_commit_of_batch == Some(self.batches) {
            return Err(CycleError::Crash);
        }
        if let Some((batch, pause)) = self.config.faults.stall_before_commit_of_batch
            && batch == self.batches
        {
            tracing::warn!(batch, ?pause, "injected stall before commit");
            tokio::time::sleep(pause).await;
        }

        for (k, touched, dead, acks) in applied {
            if let Err(e) = self.commit(k, &touched, &dead, &acks, now).await {
                first_error.get_or_insert(e);
            }
        }
        self.share_reputation().await;
        self.flush_routes().await;
        match first_error {
            Some(e) => Err(CycleError::Redis(e)),
            None => Ok(()),
        }
    }

    /// Loads the states the entries need, then folds the entries in.
    /// Returns the canonical keys of the trains that changed, and the
    /// entries to set aside (see [`admission`](crate::admission)).
    async fn apply_entries(
        &mut self,
        k: u16,
        entries: &[Entry],
        now: i64,
    ) -> Result<(BTreeSet<String>, Vec<DeadLetter>), redis::RedisError> {
        let mut dead = Vec::new();
        let reports: Vec<_> = entries
            .iter()
            .filter_map(
                |e| match admit(e, k, &self.layout, self.config.max_deliveries) {
                    Ok(r) => Some(r),
                    Err(letter) => {
                        tracing::warn!(id = %e.id, partition = k, reason = %letter.reason, "entry set aside");
                        metrics::counter!(telemetry::UNDECODABLE).increment(1);
                        metrics::counter!(telemetry::DEAD_LETTERS, "reason" => letter.label)
                            .increment(1);
                        dead.push(letter);
                        None
                    }
                },
            )
            .collect();
        if let Some(newest) = reports.iter().map(|r| r.received_at_ms).max() {
            metrics::gauge!(telemetry::LAG_SECONDS, "partition" => k.to_string())
                .set(now.saturating_sub(newest) as f64 / 1000.0);
        }

        // Each report's canonical train key is built once and keys every
        // lookup below; trip keys and state loads are per train.
        let keys: Vec<String> = reports.iter().map(canonical_of).collect();
        let mut trips: HashMap<&str, &StoredReport> = HashMap::new();
        for (key, r) in keys.iter().zip(&reports) {
            trips.entry(key.as_str()).or_insert(r);
        }
        let trips: Vec<(String, TripKey)> = trips
            .into_iter()
            .map(|(key, r)| (key.to_owned(), trip_of(r)))
            .collect();
        let loaded = self.load_states(k, &trips).await?;
        if self.config.reputation {
            self.load_reputation(k, &loaded, &reports).await;
        }

        let Some(partition) = self.owned.get_mut(&k) else {
            return Ok((BTreeSet::new(), Vec::new()));
        };
        let judgements = if self.config.reputation {
            judge_batch(
                &partition.trains,
                &keys,
                &reports,
                now,
                &self.params,
                &self.reputation,
            )
        } else {
            vec![Judgement::Done(None); reports.len()]
        };
        let mut touched = BTreeSet::new();
        // Counters are added up per batch: a metrics call per report costs
        // a registry lookup each.
        let mut counted = 0u64;
        let mut duplicates = 0u64;
        let mut rejected = 0u64;
        let mut flagged: BTreeMap<&'static str, u64> = BTreeMap::new();
        for ((key, r), judgement) in keys.iter().zip(&reports).zip(judgements) {
            let Some(train) = partition.trains.get_mut(key) else {
                continue;
            };
            let verdict = match judgement {
                Judgement::Done(verdict) => verdict,
                Judgement::Live => judge(&train.state, r, now, &self.params, &self.reputation),
            };
            let assessment =
                plausibility::assess(r, &train.state.recent_fixes, self.params.half_life_ms);
            let signals = self.devices.observe(r);
            match estimator::apply_assessed(
                &mut train.state,
                r,
                &self.params,
                &assessment,
                signals.factor_besides(&assessment),
            ) {
                Applied::Counted => {
                    counted += 1;
                    // A jump may be seen on this train and across trains: once.
                    let mut raised: Vec<_> = assessment.flags().chain(signals.flags()).collect();
                    raised.sort_unstable();
                    raised.dedup();
                    for flag in raised {
                        *train.flags.entry(flag.label()).or_default() += 1;
                        *flagged.entry(flag.label()).or_default() += 1;
                    }
                    if let Some(v) = verdict {
                        let delta = self.reputation.record(r.device, v);
                        *self.reputation_changes.entry(r.device).or_default() += delta;
                    }
                    if !touched.contains(key) {
                        touched.insert(key.clone());
                    }
                }
                Applied::Duplicate => duplicates += 1,
                Applied::Rejected => {
                    tracing::warn!(report = %r.report_id, level = r.level, "report without a valid level; skipped");
                    rejected += 1;
                }
            }
        }
        metrics::counter!(telemetry::REPORTS_APPLIED).increment(counted);
        for (reason, n) in flagged {
            metrics::counter!(telemetry::FLAGGED_REPORTS, "reason" => reason).increment(n);
        }
        if duplicates > 0 {
            metrics::counter!(telemetry::DUPLICATES).increment(duplicates);
        }
        if rejected > 0 {
            metrics::counter!(telemetry::UNDECODABLE).increment(rejected);
        }
        Ok((touched, dead))
    }

    /// Reads the scores of the devices that judging and estimating these
    /// reports' trains will weigh: the reporters, and the riders of the
    /// trains just `loaded` from Redis. The riders of trains already in
    /// memory were looked up when their reports came in, unless scores
    /// were forgotten since (then every train of the batch is looked at).
    /// Soft state: on failure, unknown devices weigh 1 for now and are read
    /// again next time.
    async fn load_reputation(&mut self, k: u16, loaded: &[String], reports: &[StoredReport]) {
        let Some(partition) = self.owned.get(&k) else {
            return;
        };
        let mut devices: Vec<u64> = reports.iter().map(|r| r.device).collect();
        let forgettings = self.reputation.forgettings();
        let riders_of = |key: &str| {
            partition
                .trains
                .get(key)
                .into_iter()
                .flat_map(|t| t.state.observations.iter().map(|o| o.device))
        };
        if forgettings == self.reputation_forgettings {
            for key in loaded {
                devices.extend(riders_of(key));
            }
        } else {
            let keys: BTreeSet<String> = reports.iter().map(canonical_of).collect();
            for key in &keys {
                devices.extend(riders_of(key));
            }
        }
        self.reputation_forgettings = forgettings;
        let loaded = self
            .reputation_store
            .load(&mut self.cmd, &mut self.reputation, devices)
            .await;
        if let Err(e) = loaded {
            metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
            tracing::warn!(error = %e, "cannot read device reputation; using defaults");
        }
    }

    /// Reads the baselines and stretch profiles of the routes of partition
    /// `k`'s `trains` not in memory. Soft state: on failure their estimates
    /// say nothing about the usual and go without the trains ahead for
    /// now, and they are read again next time.
    async fn load_routes(&mut self, k: u16, trains: &BTreeSet<String>) {
        let Some(partition) = self.owned.get(&k) else {
            return;
        };
        let routes: BTreeSet<&str> = trains
            .iter()
            .filter_map(|key| partition.trains.get(key))
            .map(|t| t.state.route_id.as_str())
            .collect();
        if let Err(e) = self
            .baselines
            .load(&mut self.cmd, routes.iter().copied())
            .await
        {
            metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
            tracing::warn!(error = %e, "cannot read route baselines");
        }
        let loaded = profile_store::load(&mut self.profiles, &mut self.cmd, routes).await;
        if let Err(e) = loaded {
            metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
            tracing::warn!(error = %e, "cannot read stretch profiles");
        }
    }

    /// Writes the baselines' and profiles' changed cells back, every
    /// [`ROUTE_FLUSH_INTERVAL`] (best effort).
    async fn flush_routes(&mut self) {
        if Instant::now() < self.next_route_flush_at {
            return;
        }
        self.next_route_flush_at = Instant::now() + ROUTE_FLUSH_INTERVAL;
        if let Err(e) = self.baselines.flush(&mut self.cmd).await {
            metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
            tracing::warn!(error = %e, "cannot write route baselines");
        }
        if let Err(e) = profile_store::flush(&mut self.profiles, &mut self.cmd).await {
            metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
            tracing::warn!(error = %e, "cannot write stretch profiles");
        }
    }

    /// Adds this batch's reputation changes to the shared scores (best effort).
    async fn share_reputation(&mut self) {
        if self.reputation_changes.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.reputation_changes);
        if let Err(e) = self.reputation_store.add(&mut self.cmd, &changes).await {
            metrics::counter!(telemetry::REDIS_ERRORS).increment(1);
            tracing::warn!(error = %e, devices = changes.len(), "cannot share device reputation");
        }
    }

    /// Reads the committed state of trains not yet in memory (one MGET)
    /// and returns their canonical keys. `trips` are distinct, by
    /// canonical key.
    async fn load_states(
        &mut self,
        k: u16,
        trips: &[(String, TripKey)],
    ) -> redis::RedisResult<Vec<String>> {
        let Some(partition) = self.owned.get(&k) else {
            return Ok(Vec::new());
        };
        let mut missing: Vec<TripKey> = trips
            .iter()
            .filter(|(key, _)| !partition.trains.contains_key(key))
            .map(|(_, trip)| trip.clone())
            .collect();
        missing.sort();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = missing.iter().map(|t| self.layout.state(k, t)).collect();
        let stored: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.cmd)
            .await?;
        let Some(partition) = self.owned.get_mut(&k) else {
            return Ok(Vec::new());
        };
        let mut loaded = Vec::with_capacity(missing.len());
        for (trip, bytes) in missing.into_iter().zip(stored) {
            let state = match bytes.map(|b| state_codec::decode(b.as_slice())) {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::error!(trip = %trip, error = %e, "undecodable train state; starting afresh");
                    TrainState::default()
                }
                None => TrainState::default(),
            };
            let key = trip.canonical();
            loaded.push(key.clone());
            partition.trains.insert(
                key,
                Train {
                    trip,
                    state,
                    touched_ms: 0,
                    published: false,
                    flags: BTreeMap::new(),
                    memo: TrainMemo::default(),
                },
            );
        }
        Ok(loaded)
    }

    /// Publishes the changed trains of partition `k`, sets `dead` aside and
    /// acknowledges `acks`.
    async fn commit(
        &mut self,
        k: u16,
        touched: &BTreeSet<String>,
        dead: &[DeadLetter],
        acks: &[String],
        now: i64,
    ) -> Result<(), redis::RedisError> {
        self.load_routes(k, touched).await;
        let Some(partition) = self.owned.get_mut(&k) else {
            return Ok(());
        };
        let mut writes = Vec::with_capacity(touched.len());
        let mut published = Vec::with_capacity(touched.len());
        for key in touched {
            let Some(train) = partition.trains.get_mut(key) else {
                continue;
            };
            estimator::prune(&mut train.state, now, &self.params);
            let estimate =
                self.profiles
                    .estimate(&train.state, now, &self.params, &self.reputation);
            let mut estimate = pace::publish(&mut train.state, estimate, now, &self.params);
            if let Some(e) = estimate.as_mut() {
                e.usual_comparison = self.baselines.judge(e, now, &mut train.memo) as i32;
            }
            let position = estimate
                .as_ref()
                .and_then(|e| e.position)
                .map(|p| (p.longitude, p.latitude))
                .filter(|(lon, lat)| indexable(*lon, *lat));
            let withdrawal = (estimate.is_none() && train.published)
                .then(|| encode_estimate(&withdrawal_notice(&train.state, now)));
            published.push((key, estimate.is_some()));
            writes.push(TrainWrite {
                trip: train.trip.clone(),
                state: state_codec::encode(&train.state),
                estimate: estimate.as_ref().map(encode_estimate),
                withdrawal,
                position,
                flags: std::mem::take(&mut train.flags).into_iter().collect(),
            });
        }
        let token = partition.token.clone();
        let result = self
            .writer
            .commit(&mut self.cmd, k, &token, now, &writes, dead, acks)
            .await;
        match result {
            Ok(()) => {
                if let Some(p) = self.owned.get_mut(&k) {
                    for (key, has_estimate) in published {
                        if let Some(t) = p.trains.get_mut(key) {
                            t.touched_ms = now;
                            t.published = has_estimate;
                        }
                    }
                }
                Ok(())
            }
            Err(WriteError::Fenced) => {
                metrics::counter!(telemetry::COMMIT_ERRORS).increment(1);
                metrics::counter!(telemetry::COMMITS_FENCED).increment(1);
                self.lose(k, "commit fenced");
                Ok(())
            }
            Err(WriteError::Redis(e)) => {
                metrics::counter!(telemetry::COMMIT_ERRORS).increment(1);
                self.reset(k);
                Err(e)
            }
        }
    }

    /// Renews our leases, hands over those beyond our share of the fleet's
    /// partitions, takes free ones up to it, and schedules a pending scan of
    /// every owned partition (entries a fenced former owner read but never
    /// committed are found there).
    ///
    /// Called between batches, when memory holds only committed state, so a
    /// partition handed over loses nothing.
    async fn maintain_leases(&mut self) -> Result<(), CycleError> {
        let mut first_error = None;
        let share = match self
            .membership
            .share(&mut self.cmd, now_ms(), self.layout.partitions())
            .await
        {
            Ok(share) => share,
            Err(e) => {
                // Unknown fleet: keep what we hold, take nothing new.
                first_error.get_or_insert(e);
                self.owned.len()
            }
        };
        let owned: Vec<(u16, String)> = self
            .owned
            .iter()
            .map(|(k, p)| (*k, p.token.clone()))
            .collect();
        for (k, token) in owned {
            match self
                .leases
                .renew(&mut self.cmd, &self.layout.lease(k), &token)
                .await
            {
                Ok(true) => {
                    if let Some(p) = self.owned.get_mut(&k)
                        && p.phase == Phase::Live
                    {
                        p.phase = Phase::Pending;
                    }
                }
                Ok(false) => self.lose(k, "lease expired"),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        while self.owned.len() > share {
            let Some((k, p)) = self.owned.pop_last() else {
                break;
            };
            tracing::info!(partition = k, share, "partition handed over to rebalance");
            let released = self
                .leases
                .release(&mut self.cmd, &self.layout.lease(k), &p.token)
                .await;
            if let Err(e) = released {
                tracing::warn!(partition = k, error = %e, "cannot release lease; it will lapse");
            }
        }
        for k in self.layout.all() {
            if self.owned.len() >= share {
                break;
            }
            if self.owned.contains_key(&k) {
                continue;
            }
            let acquired = self
                .leases
                .acquire(&mut self.cmd, &self.layout.lease(k), &self.layout.fence(k))
                .await;
            match acquired {
                Ok(Some(token)) => {
                    tracing::info!(partition = k, %token, "partition acquired");
                    self.owned.insert(k, Partition::new(token));
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                    break;
                }
            }
        }
        metrics::gauge!(telemetry::PARTITIONS_OWNED).set(self.owned.len() as f64);
        self.next_lease_at = Instant::now() + self.config.lease_ttl() / 3;
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// How often published estimates are recomputed without new reports:
    /// a sixth of the half-life (so a refresh moves weights by ~11%), within
    /// 1 s..30 s.
    fn refresh_interval(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.params.half_life_ms / 6).unwrap_or(0))
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// Republishes estimates nobody reported on lately, so that they fade
    /// (lower confidence) and disappear once their reports leave the window.
    async fn refresh(&mut self) -> Result<(), CycleError> {
        let interval = self.refresh_interval();
        self.next_refresh_at = Instant::now() + interval;
        let now = now_ms();
        let stale_before = now.saturating_sub(i64::try_from(interval.as_millis()).unwrap_or(0));
        let due: Vec<(u16, BTreeSet<String>)> = self
            .owned
            .iter()
            .map(|(k, p)| {
                let keys = p
                    .trains
                    .iter()
                    .filter(|(_, t)| t.published && t.touched_ms <= stale_before)
                    .map(|(key, _)| key.clone())
                    .collect();
                (*k, keys)
            })
            .filter(|(_, keys): &(u16, BTreeSet<String>)| !keys.is_empty())
            .collect();
        let mut first_error = None;
        for (k, keys) in due {
            if let Err(e) = self.commit(k, &keys, &[], &[], now).await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Expires trains idle for longer than the configured time.
    async fn sweep(&mut self) -> Result<(), CycleError> {
        let idle = self.config.train_idle_ms();
        let interval = Duration::from_millis(u64::try_from(idle / 4).unwrap_or(250))
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        self.next_sweep_at = Instant::now() + interval;
        let cutoff = now_ms().saturating_sub(idle);
        let owned: Vec<(u16, String)> = self
            .owned
            .iter()
            .map(|(k, p)| (*k, p.token.clone()))
            .collect();
        for (k, token) in owned {
            match self.writer.sweep(&mut self.cmd, k, &token, cutoff).await {
                Ok(removed) => {
                    metrics::counter!(telemetry::TRAINS_EXPIRED).increment(removed.len() as u64);
                    if let Some(p) = self.owned.get_mut(&k) {
                        for key in &removed {
                            p.trains.remove(key);
                        }
                        p.trains.retain(|_, t| t.touched_ms >= cutoff);
                    }
                }
                Err(WriteError::Fenced) => self.lose(k, "sweep fenced"),
                Err(WriteError::Redis(e)) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Creates the consumer group of partitions that need it.
    async fn ensure_groups(&mut self) -> Result<(), CycleError> {
        let needing: Vec<u16> = self
            .owned
            .iter()
            .filter(|(_, p)| p.phase == Phase::NeedsGroup)
            .map(|(k, _)| *k)
            .collect();
        for k in needing {
            stream::ensure_group(&mut self.cmd, &self.layout.reports(k)).await?;
            self.adopt_published(k).await?;
            if let Some(p) = self.owned.get_mut(&k) {
                p.phase = Phase::Pending;
            }
        }
        Ok(())
    }

    /// Takes over the trains published in partition `k` (its `trains`
    /// index), so that their estimates keep fading and are withdrawn by this
    /// owner even if none of their riders reports again.
    async fn adopt_published(&mut self, k: u16) -> redis::RedisResult<()> {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.layout.trains(k))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.cmd)
            .await?;
        let trips: Vec<(String, TripKey)> = members
            .into_iter()
            .filter_map(|m| TripKey::from_canonical(&m).map(|t| (m, t)))
            .collect();
        for chunk in trips.chunks(1000) {
            self.load_states(k, chunk).await?;
        }
        let now = now_ms();
        if let Some(p) = self.owned.get_mut(&k) {
            for (key, _) in &trips {
                if let Some(t) = p.trains.get_mut(key)
                    && !t.state.trip_id.is_empty()
                {
                    t.published = true;
                    // Kept in memory (refreshed) as if just committed.
                    t.touched_ms = now;
                }
            }
        }
        Ok(())
    }

    /// Drops memory of partition `k` and replays from its committed state.
    fn reset(&mut self, k: u16) {
        if let Some(p) = self.owned.get_mut(&k) {
            p.reset();
        }
    }

    /// Forgets partition `k`: somebody else owns it now.
    fn lose(&mut self, k: u16, why: &str) {
        if self.owned.remove(&k).is_some() {
            tracing::warn!(partition = k, why, "partition lost");
            metrics::gauge!(telemetry::PARTITIONS_OWNED).set(self.owned.len() as f64);
        }
    }

    /// Hands our partitions over at shutdown instead of letting leases lapse.
    async fn release_all(&mut self) {
        self.next_route_flush_at = Instant::now();
        self.flush_routes().await;
        if let Err(e) = self.membership.leave(&mut self.cmd).await {
            tracing::warn!(error = %e, "cannot leave the fleet; the entry will lapse");
        }
        let owned = std::mem::take(&mut self.owned);
        for (k, p) in owned {
            if let Err(e) = self
                .leases
                .release(&mut self.cmd, &self.layout.lease(k), &p.token)
                .await
            {
                tracing::warn!(partition = k, error = %e, "cannot release lease; it will lapse");
            }
        }
        metrics::gauge!(telemetry::PARTITIONS_OWNED).set(0.0);
    }
}

/// How the worker's connections connect: replies wait up to `timeout`.
fn options(timeout: Duration) -> Options {
    Options {
        connect_timeout: CONNECT_TIMEOUT,
        response_timeout: timeout,
        retries: 1,
    }
}

/// What watchers are told when a train's estimate is withdrawn (no report
/// counts any more): the train, with no level and no reporters.
fn withdrawal_notice(state: &TrainState, now_ms: i64) -> OccupancyEstimate {
    OccupancyEstimate {
        trip: Some(TripRef {
            trip_id: state.trip_id.clone(),
            start_date: state.start_date.clone(),
            route_id: state.route_id.clone(),
        }),
        updated_at: Some(timestamp_from_ms(now_ms)),
        source: EstimateSource::Crowd as i32,
        ..OccupancyEstimate::default()
    }
}

/// Observations a train must hold before a batch for the batch's reports
/// to be judged against its ballot; on a thinner train each report is
/// judged as it is applied, against the riders before it, batch or not:
/// the first riders of a train judge one another as they board (and that
/// costs little on a train so thin).
const BALLOT_MIN_OBSERVATIONS: usize = 32;

/// How a report of a batch is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// Already, against a ballot of its train taken before the batch.
    Done(Option<Verdict>),
    /// When it is applied, against its train as it stands then.
    Live,
}

/// How each of `reports` (whose trains' canonical keys are `keys`) is
/// judged: on a train holding [`BALLOT_MIN_OBSERVATIONS`] or more, against
/// a ballot of it taken before any of them is applied (see
/// [`crate::reputation`] for why), one ballot per train however many of
/// its reports the batch holds; on a thinner or unknown train, live.
fn judge_batch(
    trains: &HashMap<String, Train>,
    keys: &[String],
    reports: &[StoredReport],
    now_ms: i64,
    params: &Params,
    reputation: &Reputation,
) -> Vec<Judgement> {
    let mut ballots: HashMap<&str, Option<Ballot<'_>>> = HashMap::new();
    keys.iter()
        .zip(reports)
        .map(|(key, r)| {
            let ballot = ballots.entry(key.as_str()).or_insert_with(|| {
                trains
                    .get(key)
                    .filter(|t| t.state.observations.len() >= BALLOT_MIN_OBSERVATIONS)
                    .map(|t| Ballot::new(&t.state, now_ms, params, reputation))
            });
            match ballot {
                Some(b) => Judgement::Done(judge_on(b, r)),
                None => Judgement::Live,
            }
        })
        .collect()
}

fn trip_of(r: &StoredReport) -> TripKey {
    TripKey {
        trip_id: r.trip_id.clone(),
        start_date: r.start_date.clone(),
    }
}

/// The report's train as [`TripKey::canonical`] spells it, built in one
/// allocation (it keys every per-report lookup of a batch).
fn canonical_of(r: &StoredReport) -> String {
    let mut key = String::with_capacity(r.start_date.len() + 1 + r.trip_id.len());
    key.push_str(&r.start_date);
    key.push(':');
    key.push_str(&r.trip_id);
    key
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rider(device: u64, level: u32, at: i64) -> StoredReport {
        StoredReport {
            report_id: format!("r{device}-{at}"),
            device,
            trip_id: "T1".into(),
            start_date: "20261126".into(),
            carriage_sequence: 1,
            level,
            observed_at_ms: at,
            received_at_ms: at,
            ..StoredReport::default()
        }
    }

    #[test]
    fn a_batch_is_judged_against_its_trains_before_the_batch() {
        const NOW: i64 = 1_795_000_000_000;
        let params = Params::default();
        let mut reputation = Reputation::new();
        // Three established riders agree car 1 has many seats; the other
        // cars are busy enough for the train to be judged by ballot.
        let mut state = TrainState::default();
        for d in 1..=3 {
            reputation.remember(d, 4.0);
            estimator::apply(&mut state, &rider(d, 2, NOW - 5_000), &params);
        }
        for d in 100..(100 + BALLOT_MIN_OBSERVATIONS as u64) {
            let mut r = rider(d, 3, NOW - 5_000);
            r.carriage_sequence = 2 + (d % 7) as u32;
            estimator::apply(&mut state, &r, &params);
        }
        let train = |state: &TrainState| {
            let trip = TripKey {
                trip_id: "T1".into(),
                start_date: "20261126".into(),
            };
            let train = Train {
                trip: trip.clone(),
                state: state.clone(),
                touched_ms: 0,
                published: false,
                flags: BTreeMap::new(),
                memo: TrainMemo::default(),
            };
            HashMap::from([(trip.canonical(), train)])
        };
        let trains = train(&state);
        // Established riders report "full" on car 1 together in one batch:
        // each is judged against the three, not against the others.
        let batch: Vec<StoredReport> = (10..20)
            .map(|d| {
                reputation.remember(d, 4.0);
                rider(d, 6, NOW)
            })
            .collect();
        let keys = vec!["20261126:T1".to_owned(); batch.len()];
        let judged = judge_batch(&trains, &keys, &batch, NOW, &params, &reputation);
        for (r, j) in batch.iter().zip(&judged) {
            assert_eq!(
                *j,
                Judgement::Done(judge(&state, r, NOW, &params, &reputation))
            );
            assert_eq!(*j, Judgement::Done(Some(Verdict::Contradicts)));
        }
        // Applied one by one, the last of them would no longer have been
        // found to contradict anybody: the earlier ones outweigh the three.
        let mut after = state.clone();
        for r in &batch[..9] {
            estimator::apply(&mut after, r, &params);
        }
        assert_ne!(
            judge(&after, &batch[9], NOW, &params, &reputation),
            Some(Verdict::Contradicts)
        );
        // A thin train, and one nobody knows yet, are judged live.
        state.observations.truncate(BALLOT_MIN_OBSERVATIONS - 1);
        let thin = train(&state);
        assert_eq!(
            judge_batch(&thin, &keys[..1], &batch[..1], NOW, &params, &reputation),
            vec![Judgement::Live]
        );
        let elsewhere = vec!["20261126:T2".to_owned()];
        assert_eq!(
            judge_batch(&trains, &elsewhere, &batch[..1], NOW, &params, &reputation),
            vec![Judgement::Live]
        );
    }

    #[test]
    fn a_reports_key_is_its_trips_canonical_key() {
        let r = StoredReport {
            trip_id: "RER:B:1234".into(),
            start_date: "20261126".into(),
            ..StoredReport::default()
        };
        assert_eq!(canonical_of(&r), trip_of(&r).canonical());
    }
}
