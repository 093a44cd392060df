//! Health: Redis is pinged every second; the result drives the gRPC health
//! service (SERVING / NOT_SERVING, overall and per service) and the HTTP
//! `/healthz` endpoint, so load balancers route around a server that cannot
//! reach Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crowd_proto::pb::v1::{
    occupancy_service_server, operator_service_server, report_service_server,
};

use crate::store::Store;

/// The standard gRPC health protocol (messages and client), for probes and
/// tools written in Rust that check this server.
pub use tonic_health::pb as protocol;

/// Interval between two checks.
const INTERVAL: Duration = Duration::from_secs(1);

/// Whether Redis answered the last check; read by `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct RedisUp(Arc<AtomicBool>);

impl RedisUp {
    /// True when the last PING was answered in time.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
}

/// Checks Redis until shutdown, then reports NOT_SERVING.
pub async fn monitor(
    store: Store,
    reporter: HealthReporter,
    up: RedisUp,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Callers mark everything NOT_SERVING before serving (see `set_all`).
    let mut last = Some(false);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let serving = tokio::select! {
            _ = shutdown.cancelled() => break,
            ok = store.ping() => ok,
        };
        up.set(serving);
        if last != Some(serving) {
            if serving {
                tracing::info!("redis reachable: serving");
            } else {
                tracing::warn!("redis unreachable: not serving");
            }
            set_all(&reporter, status(serving)).await;
            last = Some(serving);
        }
        metrics::gauge!("crowd_server_redis_up").set(if serving { 1.0 } else { 0.0 });
    }
    up.set(false);
    set_all(&reporter, ServingStatus::NotServing).await;
}

fn status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Sets the overall status and that of each crowd service.
pub(crate) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in [
        "",
        report_service_server::SERVICE_NAME,
        occupancy_service_server::SERVICE_NAME,
        operator_service_server::SERVICE_NAME,
    ] {
        reporter.set_service_status(name, status).await;
    }
}
