//! The one polling helper.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often a check is tried again.
const POLL: Duration = Duration::from_millis(50);

/// What a check of [`eventually`] answers: done, with a value, or not yet,
/// with what it saw when it says.
pub trait Done {
    type Value;
    /// `Ok(value)` when done; else what the check saw, if anything.
    fn done(self) -> Result<Self::Value, Option<String>>;
}

impl Done for bool {
    type Value = ();
    fn done(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Done for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Err` is what the check saw: the panic at the deadline shows the last one.
impl<T, E: Debug> Done for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(format!("{seen:?}")))
    }
}

/// Runs `check` until it is done (`true`, `Some(v)`, `Ok(v)`) and returns
/// its value; after `within`, panics with `what` and the last state the
/// check reported (its `Err`).
pub async fn eventually<F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
) -> <Fut::Output as Done>::Value
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Done,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = match check().await.done() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            match seen {
                Some(seen) => {
                    panic!("timed out after {within:?} waiting for {what}; last seen: {seen}")
                }
                None => panic!("timed out after {within:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a check that needs no `.await`.
pub async fn eventually_sync(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    eventually(what, within, || std::future::ready(check())).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_is_done() {
        let n = Cell::new(0);
        let got = eventually("the third try", Duration::from_secs(5), || {
            n.set(n.get() + 1);
            std::future::ready((n.get() == 3).then_some(n.get() * 10))
        })
        .await;
        assert_eq!(got, 30);
        let tries = Cell::new(0);
        eventually_sync("two tries", Duration::from_secs(5), || {
            tries.set(tries.get() + 1);
            tries.get() == 2
        })
        .await;
        assert_eq!(tries.get(), 2);
    }

    #[tokio::test]
    async fn the_deadline_panics_with_what_and_the_last_state_seen() {
        let waited = tokio::spawn(async move {
            let n = AtomicUsize::new(0);
            eventually("a miracle", Duration::from_millis(120), || {
                let try_ = n.fetch_add(1, Ordering::Relaxed) + 1;
                std::future::ready(Err::<(), _>(format!("try {try_}")))
            })
            .await;
        })
        .await
        .unwrap_err();
        let message = waited.into_panic();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("a miracle"), "{message}");
        assert!(message.contains("last seen: \"try "), "{message}");
    }
}
