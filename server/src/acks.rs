//! The response side of a report stream.
//!
//! A stream's pump hands over every ack that is ready at once as one batch
//! (one channel send, one wakeup of the response task, instead of one per
//! report); [`AckStream`] gives them back one message at a time. tonic
//! encodes all the messages a stream yields without pausing into one
//! buffer, so a batch leaves as one HTTP/2 DATA frame and one write.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

use crowd_proto::pb::v1::ReportAck;

/// One response message (a [`ReportAck`], or a `ReportAckBatch` on a
/// batched stream), or the status ending the stream.
pub type AckItem<T = ReportAck> = Result<T, Status>;

/// Response messages that became ready together, oldest first.
pub type AckBatch<T = ReportAck> = Vec<AckItem<T>>;

/// Batches of acks waiting for the response task. Small: a batch holds
/// every ready ack already, and a full channel is what makes the pump stop
/// reading a client that does not read its acks.
pub const BATCHES_BUFFERED: usize = 2;

/// The sending side, owned by the stream's pump.
pub type AckSender<T = ReportAck> = mpsc::Sender<AckBatch<T>>;

/// A new ack channel: the pump's sender and the response stream.
pub fn channel<T>() -> (AckSender<T>, AckStream<T>) {
    let (tx, rx) = mpsc::channel(BATCHES_BUFFERED);
    (
        tx,
        AckStream {
            rx,
            batch: Vec::new().into_iter(),
        },
    )
}

/// The acks of one report stream, one message at a time, in order.
#[derive(Debug)]
pub struct AckStream<T = ReportAck> {
    rx: mpsc::Receiver<AckBatch<T>>,
    /// What is left of the batch being yielded.
    batch: std::vec::IntoIter<AckItem<T>>,
}

impl<T: Unpin> Stream for AckStream<T> {
    type Item = AckItem<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AckItem<T>>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.batch.next() {
                return Poll::Ready(Some(item));
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => this.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowd_proto::pb::v1::AckStatus;
    use futures::StreamExt;

    fn ack(id: &str) -> AckItem {
        Ok(ReportAck {
            report_id: id.to_owned(),
            status: AckStatus::Accepted as i32,
            ..ReportAck::default()
        })
    }

    fn id(item: AckItem) -> String {
        item.map(|a| a.report_id)
            .unwrap_or_else(|s| s.message().to_owned())
    }

    #[tokio::test]
    async fn batches_come_out_one_message_at_a_time_in_order() {
        let (tx, mut acks) = channel();
        // More batches than the channel holds: sent while they are read.
        let sending = tokio::spawn(async move {
            tx.send(vec![ack("a"), ack("b")]).await.unwrap();
            tx.send(Vec::new()).await.unwrap();
            tx.send(vec![ack("c"), Err(Status::unavailable("end"))])
                .await
                .unwrap();
        });
        let mut seen = Vec::new();
        while let Some(item) = acks.next().await {
            seen.push(id(item));
        }
        sending.await.unwrap();
        assert_eq!(seen, ["a", "b", "c", "end"]);
    }

    #[tokio::test]
    async fn a_client_not_reading_fills_the_channel() {
        let (tx, _acks) = channel();
        for i in 0..BATCHES_BUFFERED {
            tx.try_send(vec![ack(&i.to_string())]).unwrap();
        }
        assert!(tx.try_send(vec![ack("more")]).is_err());
    }
}
