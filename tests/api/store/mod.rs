//! The store under the engine, driven directly (not over HTTP): the claim fence of Idempotency-Keys, the
//! shared group committer, and the periodic upkeep (partitions, pruning).

mod claims;
mod group_commit;
mod upkeep;
