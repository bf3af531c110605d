//! The Prometheus Secrets a Release names, checked as soon as the Release is seen: not only
//! when a canary's first analysis fails on them.
//!
//! The controller may only `get` Secrets (no list, no watch: it reads one by name where it is
//! granted, see `config/rbac/secret_reader_role.yaml`), so a check is a GET per Secret. It is
//! made when this process first sees a generation of the Release, and again every
//! [`CREDENTIALS_RECHECK`] while a Secret is missing (the core asks to be woken then); an
//! analysis run, which reads the Secrets anyway, refreshes the answer. Not on every reconcile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use kube::runtime::reflector::ObjectRef;

use crate::api::Release;
use crate::rollout::{CREDENTIALS_RECHECK, CredentialsCheck};

/// One answer: for which object and generation of the Release, and when it was found.
#[derive(Clone, Debug)]
struct Checked {
    uid: Option<String>,
    generation: Option<i64>,
    at: Instant,
    found: CredentialsCheck,
}

/// The last answer per Release.
#[derive(Debug, Default)]
pub struct CredentialChecks {
    checked: Mutex<HashMap<ObjectRef<Release>, Checked>>,
}

impl CredentialChecks {
    /// The last answer for `release`, if it still holds at `now` (see [`still_holds`]). `None`:
    /// ask the API server.
    pub fn fresh(&self, release: &Release, now: Instant) -> Option<CredentialsCheck> {
        let checked = self.checked.lock().ok()?;
        let last = checked.get(&ObjectRef::from_obj(release))?;
        still_holds(last, release, now).then(|| last.found.clone())
    }

    /// Remember what the API server answered for `release` at `now`. An answer it could not
    /// give ([`CredentialsCheck::Unknown`]) is not remembered: the next reconcile asks again.
    pub fn record(&self, release: &Release, now: Instant, found: CredentialsCheck) {
        if found == CredentialsCheck::Unknown {
            return;
        }
        if let Ok(mut checked) = self.checked.lock() {
            checked.insert(
                ObjectRef::from_obj(release),
                Checked {
                    uid: release.metadata.uid.clone(),
                    generation: release.metadata.generation,
                    at: now,
                    found,
                },
            );
        }
    }

    /// Forget a deleted Release.
    pub fn forget(&self, release: &ObjectRef<Release>) {
        if let Ok(mut checked) = self.checked.lock() {
            checked.remove(release);
        }
    }
}

/// The caching rule: an answer holds for the object and generation it was found for (a spec
/// change, or a Release deleted and created again, is checked afresh); a missing Secret is
/// read again after [`CREDENTIALS_RECHECK`], so that creating it clears the condition.
fn still_holds(last: &Checked, release: &Release, now: Instant) -> bool {
    last.uid == release.metadata.uid
        && last.generation == release.metadata.generation
        && match last.found {
            CredentialsCheck::Missing(_) => {
                now.saturating_duration_since(last.at) < CREDENTIALS_RECHECK
            }
            CredentialsCheck::Found | CredentialsCheck::Unknown => true,
        }
}

/// Whether `release` names a Secret for Prometheus at all.
pub fn names_a_secret(release: &Release) -> bool {
    release
        .spec
        .analysis
        .as_ref()
        .is_some_and(|analysis| analysis.prometheus.names_a_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ReleaseBuilder;
    use std::time::Duration;

    /// `shop/checkout` at `generation`, object `uid`.
    fn release(uid: &str, generation: i64) -> Release {
        let mut release = ReleaseBuilder::gateway().build();
        release.metadata.uid = Some(uid.into());
        release.metadata.generation = Some(generation);
        release
    }

    fn missing() -> CredentialsCheck {
        CredentialsCheck::Missing("Secret shop/prometheus-token: not found".into())
    }

    #[test]
    fn a_found_secret_is_not_read_again_until_the_generation_changes() {
        let checks = CredentialChecks::default();
        let now = Instant::now();
        assert_eq!(checks.fresh(&release("a", 3), now), None, "never asked");
        checks.record(&release("a", 3), now, CredentialsCheck::Found);
        let a_day = now + Duration::from_secs(86_400);
        assert_eq!(
            checks.fresh(&release("a", 3), a_day),
            Some(CredentialsCheck::Found)
        );
        assert_eq!(
            checks.fresh(&release("a", 4), now),
            None,
            "a new generation"
        );
        assert_eq!(
            checks.fresh(&release("b", 3), now),
            None,
            "deleted and created again"
        );
    }

    #[test]
    fn a_missing_secret_is_read_again_after_the_recheck_interval() {
        let checks = CredentialChecks::default();
        let now = Instant::now();
        checks.record(&release("a", 3), now, missing());
        let just_before = now + CREDENTIALS_RECHECK - Duration::from_millis(1);
        assert_eq!(checks.fresh(&release("a", 3), just_before), Some(missing()));
        let due = now + CREDENTIALS_RECHECK;
        assert_eq!(checks.fresh(&release("a", 3), due), None);
        assert_eq!(
            checks.fresh(&release("a", 4), now),
            None,
            "a new generation"
        );
        // Created since: found, and then kept.
        checks.record(&release("a", 3), due, CredentialsCheck::Found);
        assert_eq!(
            checks.fresh(&release("a", 3), due + CREDENTIALS_RECHECK * 10),
            Some(CredentialsCheck::Found)
        );
    }

    #[test]
    fn an_unanswered_check_is_not_remembered_and_a_deleted_release_is_forgotten() {
        let checks = CredentialChecks::default();
        let now = Instant::now();
        checks.record(&release("a", 1), now, CredentialsCheck::Found);
        checks.record(&release("a", 1), now, CredentialsCheck::Unknown);
        assert_eq!(
            checks.fresh(&release("a", 1), now),
            Some(CredentialsCheck::Found),
            "an API error does not overwrite what was found"
        );
        checks.forget(&ObjectRef::new("checkout").within("shop"));
        assert_eq!(checks.fresh(&release("a", 1), now), None);
    }
}
