//! Opening a role's connection again after it dropped: each attempt goes to the next node of `--url`
//! (round-robin; with one node, the same one, which may be restarting), with the same token subject and `device`
//! in the CONNECT auth, waiting longer between failed attempts, until the end of the run.

use std::time::Duration;

use tokio::time::Instant;

use super::args::{DmPlan, Role};
use super::conn::{self, Conn};
use super::ledger::Ledger;

/// Wait after the first failed attempt; it doubles after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where a role stands in its connection attempts.
pub struct Redial {
    role: Role,
    /// Attempts made so far, the first connection included: it picks the next node.
    attempts: u64,
    /// No attempt starts after this.
    until: Instant,
}

impl Redial {
    /// For `role`, whose first connection was attempt 0, retrying until `until`.
    pub fn new(role: Role, until: Instant) -> Redial {
        Redial {
            role,
            attempts: 1,
            until,
        }
    }

    /// Opens the role's connection again: the first attempt at once (another node may be up), then with a
    /// doubling wait. `None` once the run is over. Successes and failures are counted in `ledger`.
    pub async fn connect(&mut self, plan: &DmPlan, ledger: &Ledger) -> Option<Conn> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if Instant::now() >= self.until {
                return None;
            }
            let target = plan.target_at(self.role, self.attempts);
            self.attempts += 1;
            let reason = match plan.auth_of(self.role) {
                Ok(auth) => {
                    let open = conn::open(target, plan.source_of(self.role), &auth);
                    match tokio::time::timeout(plan.connect_timeout, open).await {
                        Ok(Ok(conn)) => {
                            ledger.reconnected();
                            return Some(conn);
                        }
                        Ok(Err(reason)) => reason,
                        Err(_) => "connect timeout".to_owned(),
                    }
                }
                Err(e) => format!("token: {e}"),
            };
            ledger.reconnect_failed(&reason);
            let left = self.until.saturating_duration_since(Instant::now());
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
