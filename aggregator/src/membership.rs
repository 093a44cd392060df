//! Who is aggregating, so that partitions spread evenly over the fleet.
//!
//! Every aggregator announces itself in one sorted set (`crowd:aggregators`,
//! member = its instance id, score = when the announcement expires) each
//! time it maintains its leases, and reads back who else is alive. Sorting
//! the live ids gives every aggregator the same ranking, hence a share of
//! the partitions that all agree on and that sums to the total: rank `r` of
//! `n` gets `P / n`, plus one if `r < P mod n`. An aggregator above its
//! share releases the extra leases after a commit (its memory then holds
//! only committed state, so nothing is lost: the next owner replays any
//! pending entries); one below its share takes free leases.
//!
//! A dead aggregator's announcement lasts as long as its leases (both are
//! written in the same maintenance, the announcement first), so by the time
//! its partitions are free the survivors no longer count it and take them.

use std::time::Duration;

use crowd_proto::connection::Connection;
use crowd_proto::layout::AGGREGATORS;

/// This aggregator's entry in the fleet.
#[derive(Debug)]
pub(crate) struct Membership {
    instance: String,
    ttl_ms: i64,
}

impl Membership {
    /// Announcements by `instance` last `ttl` (the lease TTL).
    pub(crate) fn new(instance: String, ttl: Duration) -> Membership {
        Membership {
            instance,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Announces this aggregator and returns its share of `partitions`.
    pub(crate) async fn share(
        &self,
        con: &mut Connection,
        now_ms: i64,
        partitions: u16,
    ) -> redis::RedisResult<usize> {
        let (members,): (Vec<String>,) = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(AGGREGATORS)
            .arg(now_ms.saturating_add(self.ttl_ms))
            .arg(&self.instance)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(AGGREGATORS)
            .arg("-inf")
            .arg(format!("({now_ms}"))
            .ignore()
            .cmd("ZRANGE")
            .arg(AGGREGATORS)
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await?;
        Ok(share_of(&self.instance, members, partitions))
    }

    /// Leaves the fleet at shutdown, so the others take over at once.
    pub(crate) async fn leave(&self, con: &mut Connection) -> redis::RedisResult<()> {
        redis::cmd("ZREM")
            .arg(AGGREGATORS)
            .arg(&self.instance)
            .query_async(con)
            .await
    }
}

/// The share of `instance` among `members` (itself counted even if absent).
pub(crate) fn share_of(instance: &str, mut members: Vec<String>, partitions: u16) -> usize {
    if !members.iter().any(|m| m == instance) {
        members.push(instance.to_owned());
    }
    members.sort_unstable();
    members.dedup();
    let n = members.len();
    let rank = members.iter().position(|m| m == instance).unwrap_or(0);
    let p = usize::from(partitions);
    p / n + usize::from(rank < p % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:016x}")).collect()
    }

    #[test]
    fn shares_sum_to_the_partitions_whatever_the_fleet() {
        for n in 1..=20 {
            for p in [1u16, 4, 16, 17, 64] {
                let members = ids(n);
                let total: usize = members
                    .iter()
                    .map(|m| share_of(m, members.clone(), p))
                    .sum();
                assert_eq!(total, usize::from(p), "n={n} p={p}");
                let shares: Vec<usize> = members
                    .iter()
                    .map(|m| share_of(m, members.clone(), p))
                    .collect();
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(hi.unwrap() - lo.unwrap() <= 1, "even: {shares:?}");
            }
        }
    }

    #[test]
    fn alone_it_takes_everything_and_counts_itself_if_missing() {
        assert_eq!(share_of("a", vec![], 16), 16);
        assert_eq!(share_of("a", vec!["b".into()], 16), 8);
        assert_eq!(
            share_of("a", vec!["a".into(), "b".into(), "c".into()], 4),
            2
        );
        assert_eq!(
            share_of("c", vec!["a".into(), "b".into(), "c".into()], 4),
            1
        );
    }
}
