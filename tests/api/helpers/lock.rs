//! A wallet row held `FOR UPDATE` by a connection of its own, as an operator's forgotten `psql` session
//! or a slow neighbour would: every write to that wallet waits for it (or times out on `lock_timeout`).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::database;

pub struct RowLock {
    task: Option<JoinHandle<Instant>>,
}

impl RowLock {
    /// `BEGIN; SELECT 1 FROM wallets WHERE wallet_id = $1 FOR UPDATE;`, then `COMMIT` after `hold`.
    /// Returns once the lock is held.
    pub async fn hold(database_url: &str, wallet: Uuid, hold: Duration) -> RowLock {
        let client = database::connect(database_url).await.expect("lock connection");
        let (taken_tx, taken_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            client.batch_execute("BEGIN").await.expect("BEGIN");
            let locked = client
                .query("SELECT 1 FROM wallets WHERE wallet_id = $1 FOR UPDATE", &[&wallet])
                .await
                .expect("SELECT ... FOR UPDATE");
            assert_eq!(locked.len(), 1, "the wallet row exists");
            let _ = taken_tx.send(());
            tokio::time::sleep(hold).await;
            client.batch_execute("COMMIT").await.expect("COMMIT");
            Instant::now()
        });
        taken_rx.await.expect("the row lock is taken");
        RowLock { task: Some(task) }
    }

    /// Waits until the lock is released (its `COMMIT` done); returns when that was.
    pub async fn released(mut self) -> Instant {
        self.task.take().expect("held").await.expect("the lock task")
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
