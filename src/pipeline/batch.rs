//! A batcher in the style of zebra's tower-batch-control: callers send single
//! items through a bounded queue; a worker task collects them into a batch
//! and hands the whole batch to an inner service in one call, then gives each
//! caller exactly its own result.
//!
//! A batch is flushed when it holds `max_batch_size` items or when
//! `max_delay` has passed since its first item arrived. With a zero delay the
//! worker still takes everything already queued, so under load batches form
//! by themselves while the backend is busy, and an idle service pays no delay
//! at all. Once it holds a first item, the worker waits for the inner service
//! to be ready and only then gathers the rest: everything that queued while
//! the backend was busy goes in one batch, an inner service limited to one
//! call at a time (writes) gets batches in queue order, and an idle worker
//! holds no capacity of the inner service (a concurrency permit) that a
//! caller could use directly.
//!
//! The queue is bounded and capacity is reserved in `poll_ready`, so a full
//! queue pushes back on callers (who wait within their own deadline) instead
//! of growing. Items whose caller has already given up are dropped before the
//! batch is sent. The caller's tracing span travels with its item, and the
//! batch span follows from every caller's span.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::PollSender;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use crate::error::{Error, Result};

/// When a batch is flushed and how many callers may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// A batch is flushed as soon as it holds this many items.
    pub max_batch_size: usize,
    /// A batch is flushed at most this long after its first item arrived.
    pub max_delay: Duration,
    /// Items that may wait in the queue before callers are pushed back.
    pub queue_capacity: usize,
}

/// What the inner service receives: the items of one batch, in queue order,
/// and the latest deadline among their callers (`None` if any has none).
#[derive(Debug)]
pub struct Batch<I> {
    pub items: Vec<I>,
    pub deadline: Option<Instant>,
}

/// One result per item, in the order of `Batch::items`.
pub type BatchResults<O> = Vec<Result<O>>;

struct Message<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O>>,
    span: tracing::Span,
    deadline: Option<Instant>,
}

/// The caller's side: a cloneable `Service<I>` that queues the item and
/// resolves to that item's own result.
pub struct Batcher<I, O> {
    tx: PollSender<Message<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

type ResponseFuture<O> = Pin<Box<dyn Future<Output = Result<O>> + Send>>;

impl<I, O> Service<I> for Batcher<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    type Response = O;
    type Error = Error;
    type Future = ResponseFuture<O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.tx.poll_reserve(cx).map_err(|_| stopped())
    }

    fn call(&mut self, item: I) -> Self::Future {
        let (reply, response) = oneshot::channel();
        let message = Message {
            item,
            reply,
            span: tracing::Span::current(),
            deadline: crate::deadline::remaining().map(|left| Instant::now() + left),
        };
        let sent = self.tx.send_item(message);
        Box::pin(async move {
            sent.map_err(|_| stopped())?;
            response.await.map_err(|_| stopped())?
        })
    }
}

fn stopped() -> Error {
    Error::Unavailable {
        message: "the request pipeline is shutting down".to_owned(),
        retry_after: Duration::from_millis(100),
    }
}

/// The worker's side: owns the queue's receiving end and the inner service.
pub struct Worker<S, I, O> {
    rx: mpsc::Receiver<Message<I, O>>,
    service: S,
    limits: BatchLimits,
    name: &'static str,
}

/// A batcher and its worker, not yet running. Tests drive `Worker::run`
/// themselves (under paused time); production code uses [`spawn`].
pub fn pair<S, I, O>(
    service: S,
    limits: BatchLimits,
    name: &'static str,
) -> (Batcher<I, O>, Worker<S, I, O>)
where
    I: Send + 'static,
    O: Send + 'static,
{
    let (tx, rx) = mpsc::channel(limits.queue_capacity.max(1));
    let batcher = Batcher {
        tx: PollSender::new(tx),
    };
    let worker = Worker {
        rx,
        service,
        limits,
        name,
    };
    (batcher, worker)
}

/// A batcher whose worker runs on the current tokio runtime until every
/// handle is dropped.
pub fn spawn<S, I, O>(service: S, limits: BatchLimits, name: &'static str) -> Batcher<I, O>
where
    S: Service<Batch<I>, Response = BatchResults<O>, Error = Error> + Send + 'static,
    S::Future: Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    let (batcher, worker) = pair(service, limits, name);
    tokio::spawn(worker.run());
    batcher
}

impl<S, I, O> Worker<S, I, O>
where
    S: Service<Batch<I>, Response = BatchResults<O>, Error = Error>,
    S::Future: Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Collects and flushes batches until every [`Batcher`] is dropped and
    /// the queue is empty.
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let flush_at = Instant::now() + self.limits.max_delay;
            if let Err(error) = self.service.ready().await {
                tracing::error!(batcher = self.name, %error, "batch service failed; stopping");
                return;
            }
            let batch = self.collect(first, flush_at).await;
            self.flush(batch);
        }
    }

    /// Gathers more items after `first` until the batch is full or its
    /// delay, which ends at `flush_at`, is over.
    async fn collect(&mut self, first: Message<I, O>, flush_at: Instant) -> Vec<Message<I, O>> {
        let mut batch = vec![first];
        while batch.len() < self.limits.max_batch_size {
            match self.rx.try_recv() {
                Ok(message) => batch.push(message),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if self.limits.max_delay.is_zero() => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(flush_at, self.rx.recv()).await {
                        Ok(Some(message)) => batch.push(message),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        batch
    }

    /// Sends the batch to the inner service and answers every caller when it
    /// completes, without holding up the next batch.
    fn flush(&mut self, mut batch: Vec<Message<I, O>>) {
        // A caller that gave up (deadline, disconnect) gets nothing written
        // or read on its behalf.
        batch.retain(|message| !message.reply.is_closed());
        if batch.is_empty() {
            return;
        }
        let span = tracing::debug_span!("batch", batcher = self.name, size = batch.len());
        for message in &batch {
            span.follows_from(&message.span);
        }
        let deadline = batch
            .iter()
            .map(|message| message.deadline)
            .try_fold(Instant::now(), |latest, deadline| {
                deadline.map(|deadline| latest.max(deadline))
            });
        let mut items = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for message in batch {
            items.push(message.item);
            replies.push(message.reply);
        }
        let size = items.len();
        let response = self.service.call(Batch { items, deadline });
        tokio::spawn(
            async move {
                match response.await {
                    Ok(results) if results.len() == size => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Ok(results) => {
                        let error = Error::internal(format!(
                            "batch of {size} items returned {} results",
                            results.len()
                        ));
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(error) => {
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;
    use tower::limit::ConcurrencyLimit;
    use tower::{Service, ServiceExt};
    use tower_test::mock;

    use super::*;

    type Mock = mock::Mock<Batch<u32>, BatchResults<u32>>;
    type Handle = mock::Handle<Batch<u32>, BatchResults<u32>>;

    fn limits(max_batch_size: usize, max_delay: Duration, queue_capacity: usize) -> BatchLimits {
        BatchLimits {
            max_batch_size,
            max_delay,
            queue_capacity,
        }
    }

    /// The mock's errors are boxed; the batcher's inner service speaks ours.
    fn inner(
        service: Mock,
    ) -> impl Service<Batch<u32>, Response = BatchResults<u32>, Error = Error, Future: Send> {
        service.map_err(Error::internal)
    }

    /// Queues `item` (reserving a slot first) and returns the pending answer.
    async fn send(batcher: &Batcher<u32, u32>, item: u32) -> tokio::task::JoinHandle<Result<u32>> {
        let mut batcher = batcher.clone();
        let answer = batcher.ready().await.expect("queue open").call(item);
        tokio::spawn(answer)
    }

    async fn next_batch(
        handle: &mut Handle,
    ) -> (Batch<u32>, mock::SendResponse<BatchResults<u32>>) {
        handle.next_request().await.expect("a batch")
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_when_full_without_waiting_for_the_delay() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let (batcher, worker) = pair(
            inner(service),
            limits(3, Duration::from_secs(10), 16),
            "test",
        );
        let started = Instant::now();
        tokio::spawn(worker.run());
        let answers = [
            send(&batcher, 1).await,
            send(&batcher, 2).await,
            send(&batcher, 3).await,
        ];

        let (batch, reply) = next_batch(&mut handle).await;
        assert_eq!(batch.items, vec![1, 2, 3]);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a full batch does not wait"
        );
        reply.send_response(vec![Ok(10), Ok(20), Ok(30)]);
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.expect("task").expect("answer"));
        }
        assert_eq!(got, vec![10, 20, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_a_partial_batch_after_the_delay() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let delay = Duration::from_millis(5);
        let (batcher, worker) = pair(inner(service), limits(10, delay, 16), "test");
        tokio::spawn(worker.run());
        let started = Instant::now();
        let first = send(&batcher, 1).await;
        let second = send(&batcher, 2).await;

        let (batch, reply) = next_batch(&mut handle).await;
        assert_eq!(batch.items, vec![1, 2]);
        assert_eq!(started.elapsed(), delay, "flushed when the delay ran out");
        reply.send_response(vec![Ok(1), Ok(2)]);
        assert_eq!(first.await.expect("task").expect("answer"), 1);
        assert_eq!(second.await.expect("task").expect("answer"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_delay_still_takes_everything_already_queued() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let (batcher, worker) = pair(inner(service), limits(10, Duration::ZERO, 16), "test");
        let answers = [
            send(&batcher, 1).await,
            send(&batcher, 2).await,
            send(&batcher, 3).await,
        ];
        // The worker starts only now, with three items waiting.
        tokio::spawn(worker.run());
        let (batch, reply) = next_batch(&mut handle).await;
        assert_eq!(batch.items, vec![1, 2, 3]);
        reply.send_response(vec![Ok(1), Ok(2), Ok(3)]);
        for answer in answers {
            answer.await.expect("task").expect("answer");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_caller_gets_its_own_result_or_error() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let (batcher, worker) = pair(inner(service), limits(3, Duration::ZERO, 16), "test");
        let answers = [
            send(&batcher, 1).await,
            send(&batcher, 2).await,
            send(&batcher, 3).await,
        ];
        tokio::spawn(worker.run());
        let (_, reply) = next_batch(&mut handle).await;
        reply.send_response(vec![Ok(1), Err(Error::invalid("vector", "bad")), Ok(3)]);
        let [first, second, third] = answers;
        assert_eq!(first.await.expect("task").expect("own result"), 1);
        let error = second.await.expect("task").expect_err("own error");
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        assert_eq!(third.await.expect("task").expect("own result"), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_fails_every_caller_with_its_error() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let (batcher, worker) = pair(inner(service), limits(2, Duration::ZERO, 16), "test");
        let answers = [send(&batcher, 1).await, send(&batcher, 2).await];
        tokio::spawn(worker.run());
        let (_, reply) = next_batch(&mut handle).await;
        reply.send_error("backend down");
        for answer in answers {
            let error = answer.await.expect("task").expect_err("batch failed");
            assert!(error.to_string().contains("backend down"), "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_pushes_back_until_the_worker_takes_items() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let (batcher, worker) = pair(inner(service), limits(10, Duration::ZERO, 2), "test");
        let queued = [send(&batcher, 1).await, send(&batcher, 2).await];

        let mut third = batcher.clone();
        let waited = tokio::time::timeout(Duration::from_secs(1), third.ready()).await;
        assert!(
            waited.is_err(),
            "a third caller must wait while the queue is full"
        );

        tokio::spawn(worker.run());
        let (batch, reply) = next_batch(&mut handle).await;
        assert_eq!(batch.items, vec![1, 2]);
        third
            .ready()
            .await
            .expect("room again once the worker took the items");
        reply.send_response(vec![Ok(1), Ok(2)]);
        for answer in queued {
            answer.await.expect("task").expect("answer");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_one_at_a_time_service_gets_batches_in_queue_order() {
        let (service, mut handle) = mock::pair();
        handle.allow(10);
        let (batcher, worker) = pair(
            ConcurrencyLimit::new(inner(service), 1),
            limits(2, Duration::ZERO, 16),
            "test",
        );
        let answers = [
            send(&batcher, 1).await,
            send(&batcher, 2).await,
            send(&batcher, 3).await,
            send(&batcher, 4).await,
        ];
        tokio::spawn(worker.run());

        let (first, reply) = next_batch(&mut handle).await;
        assert_eq!(first.items, vec![1, 2]);
        let early = tokio::time::timeout(Duration::from_secs(1), handle.next_request()).await;
        assert!(early.is_err(), "the next batch waits for the previous one");
        reply.send_response(vec![Ok(1), Ok(2)]);
        let (second, reply) = next_batch(&mut handle).await;
        assert_eq!(second.items, vec![3, 4]);
        reply.send_response(vec![Ok(3), Ok(4)]);
        for answer in answers {
            answer.await.expect("task").expect("answer");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn callers_that_gave_up_are_left_out_of_the_batch() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        let (batcher, worker) = pair(inner(service), limits(10, Duration::ZERO, 16), "test");
        let kept = send(&batcher, 1).await;
        let gone = send(&batcher, 2).await;
        gone.abort();
        let _ = gone.await;
        tokio::spawn(worker.run());
        let (batch, reply) = next_batch(&mut handle).await;
        assert_eq!(batch.items, vec![1]);
        reply.send_response(vec![Ok(1)]);
        kept.await.expect("task").expect("answer");
    }

    #[tokio::test(start_paused = true)]
    async fn the_batch_deadline_is_the_latest_of_its_callers() {
        let (service, mut handle) = mock::pair();
        handle.allow(1);
        // A long delay: the batch waits for both callers, whichever runs first.
        let (batcher, worker) = pair(
            inner(service),
            limits(2, Duration::from_secs(60), 16),
            "test",
        );
        let now = Instant::now();
        let mut answers = Vec::new();
        for (item, seconds) in [(1, 1), (2, 3)] {
            let mut batcher = batcher.clone();
            let deadline = now + Duration::from_secs(seconds);
            answers.push(tokio::spawn(crate::deadline::scope(deadline, async move {
                batcher.ready().await?.call(item).await
            })));
        }
        tokio::spawn(worker.run());
        let (batch, reply) = next_batch(&mut handle).await;
        assert_eq!(batch.deadline, Some(now + Duration::from_secs(3)));
        reply.send_response(vec![Ok(1), Ok(2)]);
        for answer in answers {
            answer.await.expect("task").expect("answer");
        }
    }
}
