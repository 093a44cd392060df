//! The shared Redis connection of request handlers and writers: a lazily
//! connecting, self-reconnecting [`Connection`] (one node or a cluster), with
//! every command bounded by the configured reply timeout so that no call ever
//! hangs while Redis is away.

use std::time::Duration;

use redis::{FromRedisValue, Pipeline};

use crowd_proto::connection::{Connection, Options, Target};

use crate::error::StoreError;

/// A cheap-to-clone handle on Redis.
#[derive(Clone, Debug)]
pub struct Store {
    /// Multiplexed, reconnecting connection shared by every handler.
    conn: Connection,
    /// Longest wait for any reply.
    timeout: Duration,
}

impl Store {
    /// A handle that connects on first use, so the server starts (and answers
    /// UNAVAILABLE) while Redis is down.
    pub fn new(target: &Target, timeout: Duration) -> Result<Store, redis::RedisError> {
        let conn = target.connect_lazily(Options {
            connect_timeout: timeout,
            response_timeout: timeout,
            // Few, short retries: callers time out anyway, and a failed
            // reconnection is retried on the next command.
            retries: 2,
        })?;
        Ok(Store { conn, timeout })
    }

    /// Runs one command, bounded by the reply timeout.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        bounded(op, self.timeout, cmd.query_async(&mut conn)).await
    }

    /// Runs a pipeline, bounded by the reply timeout. On a cluster its
    /// commands may span slots: each is then routed on its own.
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        bounded(op, self.timeout, pipe.query_async(&mut conn)).await
    }

    /// Whether Redis answers PING in time.
    pub async fn ping(&self) -> bool {
        self.query::<String>("PING", &redis::cmd("PING"))
            .await
            .is_ok()
    }
}

/// Awaits a Redis reply for at most `timeout`.
pub async fn bounded<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => {
            metrics::counter!("crowd_server_redis_errors_total", "op" => op).increment(1);
            Err(StoreError::Redis { op, source })
        }
        Err(_) => {
            metrics::counter!("crowd_server_redis_errors_total", "op" => op).increment(1);
            Err(StoreError::Timeout {
                op,
                ms: timeout.as_millis(),
            })
        }
    }
}
