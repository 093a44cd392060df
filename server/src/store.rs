//! The shared Redis connection of request handlers and writers: a lazily
//! connecting, self-reconnecting `ConnectionManager`, with every command
//! bounded by the configured reply timeout so that no call ever hangs while
//! Redis is away.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Pipeline};

use crate::error::StoreError;

/// A cheap-to-clone handle on Redis.
#[derive(Clone, Debug)]
pub struct Store {
    /// Multiplexed, reconnecting connection shared by every handler.
    conn: ConnectionManager,
    /// Longest wait for any reply.
    timeout: Duration,
}

impl Store {
    /// A handle that connects on first use, so the server starts (and answers
    /// UNAVAILABLE) while Redis is down.
    pub fn new(client: redis::Client, timeout: Duration) -> Result<Store, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Few, short retries: callers time out anyway, and a failed
            // reconnection is retried on the next command.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
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

    /// Runs a pipeline, bounded by the reply timeout.
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
