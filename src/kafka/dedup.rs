//! Which records were already published, so a record delivered again (after a crash before its offset was
//! committed, or by a rebalance, or to two members at once) reaches its rooms once. A capability chosen once at
//! start: [`RedisClaims`] in a cluster (the same claim keys as the Redis ingest channel, shared by all nodes,
//! taken by the publish script itself so a crash cannot fall between claim and publish), [`LocalClaims`] on an
//! embedded node (the last [`LOCAL_CLAIMS`] ids in memory; a crash loses them with the node's memory history).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use parking_lot::Mutex;

use crate::cluster::keys::Keys;
use crate::cluster::Redis;

/// How long a cluster claim is kept: far longer than a record can wait for its offset commit.
pub const CLAIM_TTL_MS: u64 = 10 * 60 * 1000;
/// Ids an embedded node remembers.
pub const LOCAL_CLAIMS: usize = 1_000_000;

/// The claims could not be read or written now.
#[derive(Debug, thiserror::Error)]
#[error("dedup claims unavailable: {0}")]
pub struct ClaimError(String);

/// Claims on record ids.
pub trait Claims: Send + Sync + 'static {
    /// Whether the claims are the cluster's, kept in Redis: the publish then takes a record's claim itself,
    /// in the same atomic step (see `EventLog::publish_once`), and [`Claims::claim`] is not used.
    fn shared(&self) -> bool {
        false
    }
    /// Claims `id` for publishing: true when nobody had (publish it), false when it was claimed before.
    fn claim<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, ClaimError>>;
    /// Gives a claim back (its publish failed and will be tried again).
    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ClaimError>>;
}

/// Claims in Redis, shared by the nodes of a cluster.
pub struct RedisClaims {
    redis: Arc<Redis>,
    keys: Keys,
}

impl RedisClaims {
    /// Claims under the cluster's keys.
    pub fn new(redis: Arc<Redis>, keys: Keys) -> RedisClaims {
        RedisClaims { redis, keys }
    }
}

impl Claims for RedisClaims {
    fn shared(&self) -> bool {
        true
    }

    fn claim<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, ClaimError>> {
        async move {
            let mut set = redis::cmd("SET");
            set.arg(self.keys.ingest_seen(id))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(CLAIM_TTL_MS);
            let claimed: Option<String> = self
                .redis
                .run(&set)
                .await
                .map_err(|e| ClaimError(e.to_string()))?;
            Ok(claimed.is_some())
        }
        .boxed()
    }

    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ClaimError>> {
        async move {
            self.redis
                .run::<i64>(redis::cmd("DEL").arg(self.keys.ingest_seen(id)))
                .await
                .map(|_| ())
                .map_err(|e| ClaimError(e.to_string()))
        }
        .boxed()
    }
}

/// Claims in this process: the most recent ids, oldest forgotten first.
#[derive(Default)]
pub struct LocalClaims {
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Claims for LocalClaims {
    fn claim<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, ClaimError>> {
        let mut seen = self.seen.lock();
        let fresh = seen.0.insert(id.to_owned());
        if fresh {
            seen.1.push_back(id.to_owned());
            if seen.1.len() > LOCAL_CLAIMS {
                if let Some(oldest) = seen.1.pop_front() {
                    seen.0.remove(&oldest);
                }
            }
        }
        futures_util::future::ready(Ok(fresh)).boxed()
    }

    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ClaimError>> {
        let mut seen = self.seen.lock();
        if seen.0.remove(id) {
            seen.1.retain(|kept| kept != id);
        }
        futures_util::future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_claims_once_and_releases() {
        let claims = LocalClaims::default();
        assert!(claims.claim("a").await.unwrap());
        assert!(!claims.claim("a").await.unwrap());
        claims.release("a").await.unwrap();
        assert!(claims.claim("a").await.unwrap());
    }
}
