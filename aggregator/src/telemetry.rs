//! Metric names of the aggregator, in one place so dashboards can rely on them.

/// Reports folded into a train's state (counter).
pub const REPORTS_APPLIED: &str = "crowd_aggregator_reports_applied_total";
/// Reports whose id was already counted (counter).
pub const DUPLICATES: &str = "crowd_aggregator_duplicates_total";
/// Entries that could not be decoded or had no valid level; acknowledged and skipped (counter).
pub const UNDECODABLE: &str = "crowd_aggregator_undecodable_total";
/// Entries moved to the partition's dead-letter stream, labelled by `reason`
/// (`undecodable`, `missing`, `wrong_partition`, `redelivered`) (counter).
pub const DEAD_LETTERS: &str = "crowd_aggregator_dead_letters_total";
/// Non-empty batches read (counter).
pub const BATCHES: &str = "crowd_aggregator_batches_total";
/// Entries per batch (histogram).
pub const BATCH_SIZE: &str = "crowd_aggregator_batch_size";
/// Commits that failed or were fenced (counter).
pub const COMMIT_ERRORS: &str = "crowd_aggregator_commit_errors_total";
/// Commits refused because the partition's lease had passed to another
/// aggregator (counter): each one is a stale owner kept from overwriting.
pub const COMMITS_FENCED: &str = "crowd_aggregator_commits_fenced_total";
/// Seconds between a batch's newest entry reaching Redis and its processing,
/// labelled by `partition` (gauge).
pub const LAG_SECONDS: &str = "crowd_aggregator_lag_seconds";
/// Partitions this process owns (gauge).
pub const PARTITIONS_OWNED: &str = "crowd_aggregator_partitions_owned";
/// Trains expired by the idle sweep (counter).
pub const TRAINS_EXPIRED: &str = "crowd_aggregator_trains_expired_total";
/// Redis errors outside commits: reads, leases, sweeps (counter).
pub const REDIS_ERRORS: &str = "crowd_aggregator_redis_errors_total";
/// Counted reports that lost weight as suspicious, labelled by `reason`
/// (`far_from_train`, `late_arrival`, `position_jump`, `many_trains`) (counter).
pub const FLAGGED_REPORTS: &str = "crowd_aggregator_flagged_reports_total";
