//! Concurrent clients moving money: each worker sends one keyed operation at a time (a debit, a credit or a
//! transfer between two of the wallets, small random amounts), retries it until final, records it, and
//! starts the next, until told to stop. Seeded, so that a failing run can be replayed in shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::audit::{Effect, Operation};
use super::client::RetryingClient;

/// Relative weights of the kinds of operation.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub debit: u32,
    pub credit: u32,
    pub transfer: u32,
}

impl Mix {
    pub const DEBITS: Mix = Mix {
        debit: 1,
        credit: 0,
        transfer: 0,
    };
}

pub struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<Vec<Operation>>>,
}

/// A random effect of `mix` on `wallets`, 0.01 to 9.99.
fn random_effect(rng: &mut StdRng, mix: Mix, wallets: &[Uuid]) -> Effect {
    let amount = Decimal::new(rng.random_range(1..1000), 2);
    let wallet = wallets[rng.random_range(0..wallets.len())];
    let roll = rng.random_range(0..mix.debit + mix.credit + mix.transfer);
    if roll < mix.debit {
        Effect::Debit { wallet, amount }
    } else if roll < mix.debit + mix.credit || wallets.len() < 2 {
        Effect::Credit { wallet, amount }
    } else {
        let mut to = wallets[rng.random_range(0..wallets.len())];
        while to == wallet {
            to = wallets[rng.random_range(0..wallets.len())];
        }
        Effect::Transfer {
            from: wallet,
            to,
            amount,
        }
    }
}

impl Load {
    /// Starts `workers` workers of `mix` over `wallets`.
    pub fn start(client: Arc<RetryingClient>, workers: usize, mix: Mix, wallets: &[Uuid], seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let workers = (0..workers as u64)
            .map(|i| {
                let (client, stop, answered) = (client.clone(), stop.clone(), answered.clone());
                let wallets = wallets.to_vec();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i));
                    let mut done = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let effect = random_effect(&mut rng, mix, &wallets);
                        let outcome = client.until_final(effect.request(None)).await;
                        if outcome.final_answer.is_some() {
                            answered.fetch_add(1, Ordering::AcqRel);
                        }
                        done.push(Operation { effect, outcome });
                    }
                    done
                })
            })
            .collect();
        Load {
            stop,
            answered,
            workers,
        }
    }

    /// Operations that have had their final answer so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Acquire)
    }

    /// Lets every worker finish the operation it is on (retried to its final answer or its budget), then
    /// returns every operation.
    pub async fn finish(self) -> Vec<Operation> {
        self.stop.store(true, Ordering::Release);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.expect("a load worker"));
        }
        all
    }
}
