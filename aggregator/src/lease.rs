//! Partition leases with fencing tokens.
//!
//! A lease is `crowd:{k}:lease = <instance>:<n>` with a TTL, where `n` comes
//! from `INCR crowd:{k}:fence`: every new owner holds a token no previous
//! owner held (the random instance id keeps this true even if Redis lost the
//! counter). The batch commit checks the token, so an owner that lost its
//! lease (paused, partitioned away) can never overwrite its successor's work.

use std::time::Duration;

use crowd_proto::connection::Connection;
use redis::Script;

/// Takes the lease if nobody holds it: returns the new token, or nil.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = ARGV[2] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
";

/// Extends the lease if it is still ours: 1, else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives the lease up if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The three lease scripts, loaded once.
#[derive(Debug)]
pub(crate) struct Leases {
    acquire: Script,
    renew: Script,
    release: Script,
    ttl_ms: u64,
    /// Random id of this process, the first half of its tokens.
    instance: String,
}

impl Leases {
    pub(crate) fn new(ttl: Duration) -> Leases {
        Leases {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            instance: instance_id(),
        }
    }

    /// The random id of this process, first half of its tokens.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// Tries to take the lease at `lease_key`; `Some(token)` on success.
    pub(crate) async fn acquire(
        &self,
        con: &mut Connection,
        lease_key: &str,
        fence_key: &str,
    ) -> redis::RedisResult<Option<String>> {
        self.acquire
            .key(lease_key)
            .key(fence_key)
            .arg(self.ttl_ms)
            .arg(&self.instance)
            .invoke_async(con)
            .await
    }

    /// Extends our lease; `false` when it is no longer ours.
    pub(crate) async fn renew(
        &self,
        con: &mut Connection,
        lease_key: &str,
        token: &str,
    ) -> redis::RedisResult<bool> {
        let renewed: i64 = self
            .renew
            .key(lease_key)
            .arg(token)
            .arg(self.ttl_ms)
            .invoke_async(con)
            .await?;
        Ok(renewed == 1)
    }

    /// Releases our lease so that another aggregator can take over at once.
    pub(crate) async fn release(
        &self,
        con: &mut Connection,
        lease_key: &str,
        token: &str,
    ) -> redis::RedisResult<()> {
        let _: i64 = self
            .release
            .key(lease_key)
            .arg(token)
            .invoke_async(con)
            .await?;
        Ok(())
    }
}

/// A random 64-bit id in hex, from the standard library's randomly keyed hasher.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}
