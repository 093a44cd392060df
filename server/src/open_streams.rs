//! The server-wide cap on open streaming calls (report streams and watches).
//!
//! HTTP/2 already bounds the calls of one connection
//! (`--max-concurrent-streams`); this bounds them across all connections, so
//! a crowd of clients cannot grow memory without limit. Past the cap a new
//! stream is refused at once with RESOURCE_EXHAUSTED (clients retry later,
//! or elsewhere) instead of being queued. A stream holds its place until
//! its response stream is dropped, however the call ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Places for open streams, shared by every service of the process.
#[derive(Debug, Clone)]
pub struct OpenStreams {
    places: Arc<Semaphore>,
    max: usize,
}

impl OpenStreams {
    /// Room for `max` streams at once (at least 1).
    pub fn new(max: usize) -> OpenStreams {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        OpenStreams {
            places: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Takes a place for one more stream, or says why not.
    pub fn open(&self) -> Result<Place, Status> {
        let permit = self.places.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("crowd_server_streams_refused_total").increment(1);
            Status::resource_exhausted(format!(
                "server at its limit of {} open streams; retry later",
                self.max
            ))
        })?;
        self.record();
        Ok(Place {
            _permit: permit,
            streams: self.clone(),
        })
    }

    /// Streams open now.
    pub fn open_now(&self) -> usize {
        self.max - self.places.available_permits()
    }

    fn record(&self) {
        metrics::gauge!("crowd_server_open_streams").set(self.open_now() as f64);
    }
}

/// One stream's place, given back when dropped.
#[derive(Debug)]
pub struct Place {
    _permit: OwnedSemaphorePermit,
    streams: OpenStreams,
}

impl Place {
    /// `inner`, holding this place for as long as it lives.
    pub fn hold<S>(self, inner: S) -> Held<S> {
        Held {
            inner,
            _place: self,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        // The permit goes back right after this: count it as gone.
        let open = self.streams.open_now().saturating_sub(1);
        metrics::gauge!("crowd_server_open_streams").set(open as f64);
    }
}

/// A response stream that holds its place among the open streams.
#[derive(Debug)]
pub struct Held<S> {
    inner: S,
    _place: Place,
}

impl<S: Stream + Unpin> Stream for Held<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn past_the_cap_streams_are_refused_until_one_closes() {
        let streams = OpenStreams::new(2);
        let a = streams.open().unwrap().hold(futures::stream::iter([1, 2]));
        let b = streams.open().unwrap();
        assert_eq!(streams.open_now(), 2);
        let refused = streams.open().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("limit of 2 open streams"),
            "{refused:?}"
        );
        drop(b);
        let c = streams.open().unwrap();
        drop((a, c));
        assert_eq!(streams.open_now(), 0);
    }

    #[tokio::test]
    async fn a_held_stream_yields_its_items() {
        let streams = OpenStreams::new(1);
        let held = streams
            .open()
            .unwrap()
            .hold(futures::stream::iter([1, 2, 3]));
        assert_eq!(held.collect::<Vec<_>>().await, [1, 2, 3]);
        assert_eq!(streams.open_now(), 0, "given back when dropped");
    }
}
