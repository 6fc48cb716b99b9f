//! The API-key check of every request: the original's PBKDF2 + Fernet scheme, made cheap by
//! caching successes and kept off the async workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::credentials::derive_key;
use crate::crypto::fernet;

/// How long a verified credential set is trusted without deriving again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most credential sets remembered at once.
const CACHE_CAPACITY: usize = 1024;
/// Key derivations running at once; each takes a core for tens of milliseconds.
const CONCURRENT_DERIVATIONS: usize = 2;

/// The window over which failures are counted.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered at once.
const TRACKED_ADDRESSES: usize = 10_000;

/// Why credentials were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    /// Wrong or missing credentials; deliberately without saying which.
    #[error("Authentication failed")]
    Failed,
    /// Key derivations are all taken for longer than a client should wait.
    #[error("authentication is busy; retry shortly")]
    Busy,
    /// Too many recent failures from this client address.
    #[error(
        "too many failed authentication attempts from this address; retry in {retry_after_secs} s"
    )]
    Throttled {
        /// Seconds until the address may try again.
        retry_after_secs: u64,
    },
}

/// Longest wait for a free key derivation before the request is told to retry.
const DERIVATION_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The unit failures are counted by: an IPv4 address, or an IPv6 /64 (one host usually holds a
/// whole /64, so counting single IPv6 addresses would be no limit at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ClientGroup(IpAddr);

impl ClientGroup {
    fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => Self(address),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// Recent failures of one client address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// The three header values a client sends.
#[derive(Debug, Clone, Copy)]
pub struct PresentedCredentials<'a> {
    /// `x-decryption-key`.
    pub decryption_key: &'a str,
    /// `x-salt`.
    pub salt: &'a str,
    /// `x-comparison-key`.
    pub comparison_key: &'a str,
}

/// Checks presented credentials against `API_KEY`.
pub struct Authenticator {
    api_key: Arc<str>,
    fingerprint_key: hmac::Key,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<ClientGroup, Failures>>,
    failures_per_window: Option<u32>,
    derivations: Semaphore,
}

impl Authenticator {
    /// An authenticator for the `API_KEY` token text.
    /// `failures_per_minute` wrong attempts from one address are allowed each minute; past them
    /// the address is refused without any work (0: no limit).
    pub fn new(api_key: &str, failures_per_minute: u32) -> Self {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("system random generator");
        Self {
            api_key: api_key.trim().into(),
            fingerprint_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            verified: Mutex::default(),
            failures: Mutex::default(),
            failures_per_window: (failures_per_minute > 0).then_some(failures_per_minute),
            derivations: Semaphore::new(CONCURRENT_DERIVATIONS),
        }
    }

    /// Accepts the credentials when `API_KEY` decrypts, under the key they derive, to the
    /// comparison key. Credentials verified recently are accepted from the cache; otherwise an
    /// address with too many recent failures is refused before any work is done.
    pub async fn verify(
        &self,
        presented: PresentedCredentials<'_>,
        client: IpAddr,
    ) -> Result<(), AuthError> {
        let PresentedCredentials {
            decryption_key,
            salt,
            comparison_key,
        } = presented;
        let fingerprint = self.fingerprint(presented);
        if self.is_cached(&fingerprint) {
            return Ok(());
        }
        let client = ClientGroup::of(client);
        self.check_throttle(client)?;
        if decryption_key.is_empty() || salt.is_empty() || comparison_key.is_empty() {
            self.reserve_attempt(client)?;
            return Err(AuthError::Failed);
        }
        let _permit = tokio::time::timeout(DERIVATION_QUEUE_WAIT, self.derivations.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        // Counted as a failure until it succeeds, so that concurrent attempts from one address
        // cannot together exceed the limit.
        self.reserve_attempt(client)?;
        let api_key = self.api_key.clone();
        let (decryption_key, salt, comparison_key) = (
            decryption_key.to_owned(),
            salt.to_owned(),
            comparison_key.to_owned(),
        );
        let accepted = tokio::task::spawn_blocking(move || {
            let derived = derive_key(&decryption_key, &salt);
            fernet::decrypt(&derived, api_key.as_bytes()).is_ok_and(|expected| {
                verify_slices_are_equal(&expected, comparison_key.as_bytes()).is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !accepted {
            return Err(AuthError::Failed);
        }
        self.forgive_attempt(client);
        self.remember(fingerprint);
        Ok(())
    }

    /// Refuses, without counting, an address whose budget is already spent.
    fn check_throttle(&self, client: ClientGroup) -> Result<(), AuthError> {
        let failures = self.failures.lock().expect("lock");
        match failures.get(&client) {
            Some(f) if self.spent(f) => {
                let left = FAILURE_WINDOW.saturating_sub(f.since.elapsed());
                Err(AuthError::Throttled {
                    retry_after_secs: left.as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    fn spent(&self, failures: &Failures) -> bool {
        self.failures_per_window.is_some_and(|limit| {
            failures.count >= limit && failures.since.elapsed() < FAILURE_WINDOW
        })
    }

    /// Counts an attempt against `client`, or refuses it when the window's budget is spent.
    fn reserve_attempt(&self, client: ClientGroup) -> Result<(), AuthError> {
        let mut failures = self.failures.lock().expect("lock");
        if failures.len() >= TRACKED_ADDRESSES {
            failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
        }
        if failures.len() >= TRACKED_ADDRESSES
            && let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, f)| f.since)
                .map(|(k, _)| *k)
        {
            failures.remove(&oldest);
        }
        let entry = failures.entry(client).or_insert(Failures {
            count: 0,
            since: Instant::now(),
        });
        if entry.since.elapsed() >= FAILURE_WINDOW {
            *entry = Failures {
                count: 0,
                since: Instant::now(),
            };
        }
        if self
            .failures_per_window
            .is_some_and(|limit| entry.count >= limit)
        {
            let left = FAILURE_WINDOW.saturating_sub(entry.since.elapsed());
            return Err(AuthError::Throttled {
                retry_after_secs: left.as_secs().max(1),
            });
        }
        entry.count += 1;
        Ok(())
    }

    /// Takes back an attempt that succeeded.
    fn forgive_attempt(&self, client: ClientGroup) {
        if let Some(entry) = self.failures.lock().expect("lock").get_mut(&client) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    /// A keyed hash of the three values, so the cache holds no secret that could be replayed.
    fn fingerprint(&self, presented: PresentedCredentials<'_>) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.fingerprint_key);
        for value in [
            presented.decryption_key,
            presented.salt,
            presented.comparison_key,
        ] {
            context.update(&(value.len() as u64).to_be_bytes());
            context.update(value.as_bytes());
        }
        context.sign().as_ref().try_into().expect("SHA-256 tag")
    }

    /// Whether these credentials were verified within [`CACHE_TTL`]; a hit extends the entry,
    /// so clients in steady use never derive again.
    fn is_cached(&self, fingerprint: &[u8; 32]) -> bool {
        // Looking up by fingerprint leaks nothing: without the per-process key nobody can
        // compute one, so timing differences say nothing about the secrets behind it.
        let mut verified = self.verified.lock().expect("lock");
        match verified.get_mut(fingerprint) {
            Some(at) if at.elapsed() < CACHE_TTL => {
                *at = Instant::now();
                true
            }
            _ => false,
        }
    }

    fn remember(&self, fingerprint: [u8; 32]) {
        let mut verified = self.verified.lock().expect("lock");
        if verified.len() >= CACHE_CAPACITY {
            verified.retain(|_, at| at.elapsed() < CACHE_TTL);
        }
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(fingerprint, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials;

    const FAILURES: u32 = 20;

    #[tokio::test]
    async fn accepts_generated_credentials_and_nothing_else() {
        let (secrets, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(&api_key, FAILURES);
        let client = IpAddr::from([10, 0, 0, 1]);
        let good = PresentedCredentials {
            decryption_key: &secrets.decryption_key,
            salt: &secrets.salt,
            comparison_key: &secrets.key,
        };
        assert_eq!(auth.verify(good, client).await, Ok(()));
        // Served from the cache the second time.
        assert_eq!(auth.verify(good, client).await, Ok(()));
        let wrong_key = PresentedCredentials {
            comparison_key: "x",
            ..good
        };
        assert_eq!(auth.verify(wrong_key, client).await, Err(AuthError::Failed));
        let wrong_salt = PresentedCredentials { salt: "00", ..good };
        assert_eq!(
            auth.verify(wrong_salt, client).await,
            Err(AuthError::Failed)
        );
        let empty = PresentedCredentials {
            decryption_key: "",
            ..good
        };
        assert_eq!(auth.verify(empty, client).await, Err(AuthError::Failed));
    }

    #[tokio::test]
    async fn repeated_failures_throttle_only_that_address_and_not_cached_clients() {
        let (client, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(&api_key, FAILURES);
        let good = PresentedCredentials {
            decryption_key: &client.decryption_key,
            salt: &client.salt,
            comparison_key: &client.key,
        };
        let attacker = IpAddr::from([10, 0, 0, 2]);
        auth.verify(good, attacker).await.unwrap();
        let wrong = PresentedCredentials {
            comparison_key: "",
            ..good
        };
        for _ in 0..FAILURES {
            assert_eq!(auth.verify(wrong, attacker).await, Err(AuthError::Failed));
        }
        assert!(matches!(
            auth.verify(wrong, attacker).await,
            Err(AuthError::Throttled { retry_after_secs }) if retry_after_secs > 0
        ));
        // Credentials already verified still pass, and other addresses are not affected.
        assert_eq!(auth.verify(good, attacker).await, Ok(()));
        let other = IpAddr::from([10, 0, 0, 3]);
        assert_eq!(auth.verify(wrong, other).await, Err(AuthError::Failed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_wrong_attempts_never_exceed_the_budget() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = std::sync::Arc::new(Authenticator::new(&api_key, FAILURES));
        let attacker = IpAddr::from([10, 0, 0, 4]);
        let attempts = (0..3 * FAILURES).map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let wrong = format!("wrong-{i}");
                let presented = PresentedCredentials {
                    decryption_key: &wrong,
                    salt: "00",
                    comparison_key: "x",
                };
                auth.verify(presented, attacker).await
            })
        });
        let outcomes: Vec<_> = futures::future::join_all(attempts).await;
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Err(AuthError::Failed))))
            .count();
        assert_eq!(failed, FAILURES as usize);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientGroup::of(a), ClientGroup::of(b));
        assert_ne!(ClientGroup::of(a), ClientGroup::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            ClientGroup::of(mapped),
            ClientGroup::of(IpAddr::from([10, 0, 0, 1]))
        );
    }
}
