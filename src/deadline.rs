//! The current call's deadline, visible to everything that runs in the call's
//! task: the transport sets it from `grpc-timeout`, and a backend reads the
//! time remaining to pass on as its own request timeout, so a call never
//! keeps Qdrant busy after its caller gave up.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `future` with `deadline` as the current call's deadline.
pub fn scope<F: Future>(deadline: Instant, future: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(deadline, future)
}

/// Time left before the current call's deadline; `None` if it has none.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// `fallback`, shortened to the current call's remaining time.
pub fn timeout_within(fallback: Duration) -> Duration {
    remaining().map_or(fallback, |left| left.min(fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remaining_time_shrinks_inside_the_scope_only() {
        assert_eq!(remaining(), None);
        assert_eq!(
            timeout_within(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        scope(deadline, async {
            assert_eq!(remaining(), Some(Duration::from_secs(2)));
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                timeout_within(Duration::from_secs(5)),
                Duration::from_millis(1500)
            );
            assert_eq!(
                timeout_within(Duration::from_secs(1)),
                Duration::from_secs(1)
            );
        })
        .await;
    }
}
