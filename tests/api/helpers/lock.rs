//! A wallet row held `FOR UPDATE` by a connection of its own, as an operator's forgotten `psql` session
//! or a slow neighbour would: every write to that wallet waits for it (or times out on `lock_timeout`).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::database;

pub struct RowLock {
    release_now: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Instant>>,
}

impl RowLock {
    /// `BEGIN; SELECT 1 FROM wallets WHERE wallet_id = $1 FOR UPDATE;`, then `COMMIT` after `hold` (or at
    /// [`RowLock::release`]). Returns once the lock is held.
    pub async fn hold(database_url: &str, wallet: Uuid, hold: Duration) -> RowLock {
        let client = database::connect(database_url).await.expect("lock connection");
        let (taken_tx, taken_rx) = oneshot::channel();
        let (release_now, released) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            client.batch_execute("BEGIN").await.expect("BEGIN");
            let locked = client
                .query("SELECT 1 FROM wallets WHERE wallet_id = $1 FOR UPDATE", &[&wallet])
                .await
                .expect("SELECT ... FOR UPDATE");
            assert_eq!(locked.len(), 1, "the wallet row exists");
            let _ = taken_tx.send(());
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = released => {}
            }
            client.batch_execute("COMMIT").await.expect("COMMIT");
            Instant::now()
        });
        taken_rx.await.expect("the row lock is taken");
        RowLock {
            release_now: Some(release_now),
            task: Some(task),
        }
    }

    /// Held until [`RowLock::release`] (or the end of the test).
    pub async fn take(database_url: &str, wallet: Uuid) -> RowLock {
        RowLock::hold(database_url, wallet, Duration::MAX).await
    }

    /// Waits until the lock is released (its `COMMIT` done); returns when that was.
    pub async fn released(mut self) -> Instant {
        self.task.take().expect("held").await.expect("the lock task")
    }

    /// Releases the lock now; returns once it is released.
    pub async fn release(mut self) -> Instant {
        if let Some(tx) = self.release_now.take() {
            let _ = tx.send(());
        }
        self.released().await
    }
}

impl Drop for RowLock {
    fn drop(&mut self) {
        // Dropping the connection rolls the transaction back and frees the row.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
