//! Wiring and lifecycle: builds every part from the [`Config`], serves gRPC
//! and HTTP, and on shutdown drains in order (stop accepting, let in-flight
//! reports get their ack, close watches, flush writers) within the drain
//! deadline.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crowd_proto::connection::Target;
use crowd_proto::pb::v1::occupancy_service_server::OccupancyServiceServer;
use crowd_proto::pb::v1::report_service_server::ReportServiceServer;

use crate::config::{Config, DEV_DEVICE_SECRET};
use crate::error::ServerError;
use crate::estimates::Estimates;
use crate::health::{self, RedisUp};
use crate::hub::Hub;
use crate::ingest::{Ingest, IngestConfig};
use crate::operator::OperatorSetup;
use crate::queries::Queries;
use crate::store::Store;
use crate::writer::{self, WriterConfig};

/// How long a client may stay silent after a keepalive ping.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the crowd API on `grpc` and `/healthz` on `http` until `shutdown`
/// completes, then drains within `config.drain_timeout_secs`.
///
/// Redis need not be up: calls answer UNAVAILABLE until it is.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if config.device_secret == DEV_DEVICE_SECRET {
        tracing::warn!(
            "using the development device secret; set CROWD_DEVICE_SECRET in production"
        );
    }
    // Before anything records a metric.
    let metrics = crate::telemetry::router();
    let token = CancellationToken::new();
    let layout = config.layout();
    let target =
        Target::parse(&config.redis_url, config.redis_cluster).map_err(ServerError::RedisUrl)?;
    // Two connections: the writers' large XADD pipelines on one, reads
    // (queries, health, counters) on the other, so a query never waits
    // behind a batch of writes in the same socket.
    let store = Store::new(&target, config.redis_timeout()).map_err(ServerError::RedisUrl)?;
    let writes = Store::new(&target, config.redis_timeout()).map_err(ServerError::RedisUrl)?;

    let open_streams = crate::open_streams::OpenStreams::new(config.max_open_streams);
    let (queue, mut writers) = writer::spawn(
        writes,
        &WriterConfig {
            capacity: config.write_queue,
            writers: config.writers,
            batch: config.write_batch,
            maxlen: config.stream_maxlen,
            retention: config.retention(),
        },
    );
    // The latest estimates in memory, kept by the tail of changes.
    let cache = crate::estimate_cache::EstimateCache::new(
        layout,
        config.estimate_ttl_ms(),
        config.estimate_cache,
    );
    let (hub, hub_task) = Hub::spawn_feeding(
        target,
        layout,
        config.redis_timeout(),
        config.watch_buffer,
        cache.clone(),
        token.clone(),
    );
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let up = RedisUp::default();
    // Not serving until Redis has answered once.
    health::set_all(&reporter, tonic_health::ServingStatus::NotServing).await;
    let health_task = tokio::spawn(health::monitor(
        store.clone(),
        reporter,
        up.clone(),
        token.clone(),
    ));

    let operators = OperatorSetup::load(&config).await?;
    // The nudge of ACCEPTED acks: viewers per train, counts per device.
    let audience = crate::audience::Audience::default();
    let (contributions, contributions_task) =
        crate::contributions::spawn(store.clone(), config.write_queue);
    let audience_task = tokio::spawn(crate::audience::share::run(
        audience.clone(),
        store.clone(),
        crate::audience::share::PERIOD,
        token.clone(),
    ));
    let ingest = Ingest::new(
        IngestConfig {
            limits: config.limits(),
            layout,
            devices: config.device_hasher(),
            // Queue wait plus one pipeline, with room for a reconnection.
            ack_timeout: config.redis_timeout() * 2,
            max_inflight: config.max_inflight_per_stream.max(1),
            stream_idle: config.stream_idle(),
            dedup_capacity: config.dedup_capacity,
            device_rate_per_min: config.device_rate_per_min,
            device_burst: config.device_burst,
            rejects: operators.rejects.clone(),
            schedule: operators.schedule.clone(),
            strict_trips: config.gtfs_strict,
            audience: audience.clone(),
            contributions,
            open_streams: open_streams.clone(),
        },
        queue,
        token.clone(),
    );
    let estimates = Estimates { store, layout };
    let feed = crate::feed::router(crate::feed::Feed {
        estimates: estimates.clone(),
        cars: std::sync::Arc::new(config.cars_per_route.clone()),
    });
    let web = crate::web::router(crate::web::Web {
        estimates: estimates.clone(),
        hub: hub.clone(),
        lines: std::sync::Arc::new(
            operators
                .schedule
                .as_deref()
                .map(crate::web::Lines::from_schedule)
                .unwrap_or_default(),
        ),
        cars: std::sync::Arc::new(config.cars_per_route.clone()),
        shutdown: token.clone(),
        audience: audience.clone(),
        open_streams: open_streams.clone(),
    });
    let operator = operators.service(estimates.clone(), config.max_message_bytes);
    let queries = Queries {
        reads: crate::estimate_reads::EstimateReads {
            estimates: estimates.clone(),
            cache,
        },
        estimates,
        hub,
        max_trips: config.max_trips,
        shutdown: token.clone(),
        audience,
        open_streams,
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crowd_proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let grpc_addr = grpc.local_addr().map_err(ServerError::Listener)?;
    let http_addr = http.local_addr().map_err(ServerError::Listener)?;
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(config.keepalive_secs.max(1))))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .layer(crate::rpc_timer::RpcTimerLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            ReportServiceServer::new(ingest).max_decoding_message_size(config.max_message_bytes),
        )
        .add_service(
            OccupancyServiceServer::new(queries)
                .max_decoding_message_size(config.max_message_bytes),
        )
        .add_service(operator)
        .serve_with_incoming_shutdown(incoming, token.clone().cancelled_owned());
    let http_server = crate::http::serve(http, up, feed.merge(web).merge(metrics), token.clone());
    tracing::info!(%grpc_addr, %http_addr, partitions = layout.partitions(), "crowd server listening");

    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        trigger.cancel();
    });

    let drain = config.drain_timeout();
    // One deadline for the whole drain, set when shutdown starts.
    let mut deadline = None;
    let served = {
        let servers = async {
            tokio::try_join!(
                async { grpc_server.await.map_err(ServerError::from) },
                http_server
            )
            .map(|_| ())
        };
        tokio::pin!(servers);
        tokio::select! {
            result = &mut servers => result,
            _ = token.cancelled() => match tokio::time::timeout_at(
                *deadline.insert(Instant::now() + drain),
                &mut servers,
            )
            .await
            {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(?drain, "drain deadline passed; closing remaining calls");
                    Ok(())
                }
            },
        }
        // The services, and with them the write queue, are dropped here.
    };
    token.cancel();
    let deadline = deadline.unwrap_or_else(|| Instant::now() + drain);
    let flushed = async { while writers.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, flushed).await.is_err() {
        tracing::warn!("writers still busy at the drain deadline");
        writers.abort_all();
    }
    let _ = tokio::time::timeout_at(deadline, contributions_task).await;
    let _ = tokio::time::timeout_at(deadline, audience_task).await;
    let _ = tokio::time::timeout_at(deadline, hub_task).await;
    let _ = tokio::time::timeout_at(deadline, health_task).await;
    tracing::info!("crowd server stopped");
    served
}
