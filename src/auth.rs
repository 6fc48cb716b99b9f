//! The API-key check of every request: the original's PBKDF2 + Fernet scheme, made cheap by
//! caching successes and kept off the async workers.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use lru::LruCache;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::credentials::derive_key;
use crate::crypto::fernet;

/// How long a verified credential set is trusted after its last use without deriving again.
const CACHE_IDLE_TTL: Duration = Duration::from_secs(300);
/// How long a verified credential set is trusted at most, however often it is used, so that a
/// client in steady use still meets a revocation that no reload announced.
const CACHE_LIFETIME: Duration = Duration::from_secs(3600);
/// Most credential sets remembered at once.
const CACHE_CAPACITY: usize = 1024;
/// Key derivations running at once; each takes a core for tens of milliseconds.
const CONCURRENT_DERIVATIONS: usize = 2;
/// Longest wait for a free key derivation before the request is told to retry.
const DERIVATION_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Locks that make concurrent first requests with the same credentials derive once: one
/// derives, the others wait for its answer in the cache. Credentials map to a lock by their
/// fingerprint, so unrelated credentials rarely share one.
const SINGLE_FLIGHT_LOCKS: usize = 64;

/// The window over which failures are counted.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client address groups whose failures are remembered at once; past it the least recently
/// failing group is forgotten.
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

/// How accepted credentials were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// They were verified recently and remembered.
    Cached,
    /// A key derivation checked them now.
    Derived,
}

/// Why an `API_KEY` value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApiKeyError {
    /// The value holds no key at all.
    #[error("API_KEY is empty")]
    Empty,
    /// One of the comma-separated values is not a Fernet token.
    #[error("API_KEY entry {position} is not a Fernet token (it should start with gAAAAA)")]
    NotAToken {
        /// 1-based position of the entry.
        position: usize,
    },
}

/// The encrypted API keys a proxy accepts: `API_KEY` holds one or more Fernet tokens separated
/// by commas (a token contains none), so that credentials can roll over without a flag day.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeys(Arc<[Arc<str>]>);

impl FromStr for ApiKeys {
    type Err = ApiKeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(ApiKeyError::Empty);
        }
        let mut keys = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            if !entry.as_bytes().starts_with(fernet::TOKEN_TEXT_PREFIX) {
                return Err(ApiKeyError::NotAToken {
                    position: index + 1,
                });
            }
            keys.push(Arc::from(entry));
        }
        Ok(Self(keys.into()))
    }
}

impl ApiKeys {
    /// How many keys are accepted (at least one).
    pub fn count(&self) -> usize {
        self.0.len()
    }

    fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|accepted| **accepted == *key)
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.0.len())
    }
}

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

/// Recent failures of one client address group.
// A fixed window in an LRU rather than `governor`'s keyed limiter: its GCRA lets a spent
// address back in one attempt every 3 s instead of at the window's end, it can neither peek
// without spending (`check_throttle`) nor refund (`forgive_attempt`), its key map grows until
// `retain_recent` runs, and its clock is not tokio's, so paused-clock tests could not drive it.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// A credential set that opened one of the accepted API keys.
#[derive(Debug, Clone)]
struct Verified {
    api_key: Arc<str>,
    first: Instant,
    last: Instant,
}

/// The accepted keys and the successes under them, behind one lock so that a success verified
/// under a key that has just been removed is never remembered.
struct Accepted {
    api_keys: ApiKeys,
    verified: LruCache<[u8; 32], Verified>,
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

/// Checks presented credentials against the accepted API keys.
pub struct Authenticator {
    fingerprint_key: hmac::Key,
    accepted: Mutex<Accepted>,
    failures: Mutex<LruCache<ClientGroup, Failures>>,
    failures_per_window: Option<u32>,
    derivations: Semaphore,
    single_flight: [tokio::sync::Mutex<()>; SINGLE_FLIGHT_LOCKS],
}

impl Authenticator {
    /// An authenticator for these API keys.
    /// `failures_per_minute` wrong attempts from one address are allowed each minute; past them
    /// the address is refused without any work (0: no limit).
    pub fn new(api_keys: ApiKeys, failures_per_minute: u32) -> Self {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).expect("system random generator");
        Self {
            fingerprint_key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            accepted: Mutex::new(Accepted {
                api_keys,
                verified: LruCache::new(NonZeroUsize::new(CACHE_CAPACITY).expect("nonzero")),
            }),
            failures: Mutex::new(LruCache::new(
                NonZeroUsize::new(TRACKED_ADDRESSES).expect("nonzero"),
            )),
            failures_per_window: (failures_per_minute > 0).then_some(failures_per_minute),
            derivations: Semaphore::new(CONCURRENT_DERIVATIONS),
            single_flight: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    /// Accepts from now on exactly `api_keys`; successes remembered under a key no longer
    /// accepted are forgotten, so their clients must open a remaining key to get in again.
    pub fn replace_api_keys(&self, api_keys: ApiKeys) {
        let mut accepted = self.accepted.lock().expect("lock");
        let revoked: Vec<[u8; 32]> = accepted
            .verified
            .iter()
            .filter(|(_, entry)| !api_keys.contains(&entry.api_key))
            .map(|(fingerprint, _)| *fingerprint)
            .collect();
        for fingerprint in revoked {
            accepted.verified.pop(&fingerprint);
        }
        accepted.api_keys = api_keys;
    }

    /// Accepts the credentials when one of the API keys decrypts, under the key they derive, to
    /// the comparison key. Credentials verified recently are accepted from the cache; requests
    /// missing a value are refused without any work or record; otherwise an address with too
    /// many recent failures is refused before any derivation.
    pub async fn verify(
        &self,
        presented: PresentedCredentials<'_>,
        client: IpAddr,
    ) -> Result<Verification, AuthError> {
        let fingerprint = self.fingerprint(presented);
        if self.is_cached(&fingerprint) {
            return Ok(Verification::Cached);
        }
        let PresentedCredentials {
            decryption_key,
            salt,
            comparison_key,
        } = presented;
        if decryption_key.is_empty() || salt.is_empty() || comparison_key.is_empty() {
            return Err(AuthError::Failed);
        }
        let client = ClientGroup::of(client);
        // Before queueing for a derivation: a throttled flood must not take the queue from
        // clients whose credentials are merely not cached yet.
        self.check_throttle(client)?;
        let lock = &self.single_flight[usize::from(fingerprint[0]) % SINGLE_FLIGHT_LOCKS];
        let _turn = tokio::time::timeout(2 * DERIVATION_QUEUE_WAIT, lock.lock())
            .await
            .map_err(|_| AuthError::Busy)?;
        if self.is_cached(&fingerprint) {
            return Ok(Verification::Cached);
        }
        let _permit = tokio::time::timeout(DERIVATION_QUEUE_WAIT, self.derivations.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        // Counted as a failure until it succeeds, so that concurrent attempts from one address
        // cannot together exceed the limit.
        self.reserve_attempt(client)?;
        let api_keys = self.accepted.lock().expect("lock").api_keys.clone();
        let (decryption_key, salt, comparison_key) = (
            decryption_key.to_owned(),
            salt.to_owned(),
            comparison_key.to_owned(),
        );
        let opened = tokio::task::spawn_blocking(move || {
            let derived = derive_key(&decryption_key, &salt);
            api_keys.0.iter().find_map(|api_key| {
                fernet::decrypt(&derived, api_key.as_bytes())
                    .is_ok_and(|expected| {
                        verify_slices_are_equal(&expected, comparison_key.as_bytes()).is_ok()
                    })
                    .then(|| api_key.clone())
            })
        })
        .await
        .ok()
        .flatten();
        let Some(api_key) = opened else {
            return Err(AuthError::Failed);
        };
        self.forgive_attempt(client);
        self.remember(fingerprint, api_key);
        Ok(Verification::Derived)
    }

    /// Refuses, without counting, an address whose budget is already spent.
    fn check_throttle(&self, client: ClientGroup) -> Result<(), AuthError> {
        let failures = self.failures.lock().expect("lock");
        match failures.peek(&client) {
            Some(f) if self.spent(f) => Err(throttled(f)),
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
        let fresh = || Failures {
            count: 0,
            since: Instant::now(),
        };
        let entry = failures.get_or_insert_mut(client, fresh);
        if entry.since.elapsed() >= FAILURE_WINDOW {
            *entry = fresh();
        }
        if self.spent(entry) {
            return Err(throttled(entry));
        }
        entry.count += 1;
        Ok(())
    }

    /// Takes back an attempt that succeeded.
    fn forgive_attempt(&self, client: ClientGroup) {
        if let Some(entry) = self.failures.lock().expect("lock").peek_mut(&client) {
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

    /// Whether these credentials were verified within [`CACHE_IDLE_TTL`] of their last use and
    /// [`CACHE_LIFETIME`] of their derivation; a hit extends the idle time only.
    fn is_cached(&self, fingerprint: &[u8; 32]) -> bool {
        // Looking up by fingerprint leaks nothing: without the per-process key nobody can
        // compute one, so timing differences say nothing about the secrets behind it.
        let mut accepted = self.accepted.lock().expect("lock");
        let Some(entry) = accepted.verified.get_mut(fingerprint) else {
            return false;
        };
        if entry.last.elapsed() < CACHE_IDLE_TTL && entry.first.elapsed() < CACHE_LIFETIME {
            entry.last = Instant::now();
            return true;
        }
        accepted.verified.pop(fingerprint);
        false
    }

    /// Remembers a success, unless its key stopped being accepted while it was verified.
    fn remember(&self, fingerprint: [u8; 32], api_key: Arc<str>) {
        let mut accepted = self.accepted.lock().expect("lock");
        if accepted.api_keys.contains(&api_key) {
            let now = Instant::now();
            accepted.verified.put(
                fingerprint,
                Verified {
                    api_key,
                    first: now,
                    last: now,
                },
            );
        }
    }
}

/// The refusal for an address whose budget is spent, with the time left in its window.
fn throttled(failures: &Failures) -> AuthError {
    let left = FAILURE_WINDOW.saturating_sub(failures.since.elapsed());
    AuthError::Throttled {
        retry_after_secs: left.as_secs().max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{self, ClientCredentials};

    const FAILURES: u32 = 20;

    fn keys(api_keys: &[&str]) -> ApiKeys {
        api_keys.join(",").parse().unwrap()
    }

    fn presented(client: &ClientCredentials) -> PresentedCredentials<'_> {
        PresentedCredentials {
            decryption_key: &client.decryption_key,
            salt: &client.salt,
            comparison_key: &client.key,
        }
    }

    fn wrong(attempt: &str) -> PresentedCredentials<'_> {
        PresentedCredentials {
            decryption_key: attempt,
            salt: "00",
            comparison_key: "x",
        }
    }

    /// Takes every derivation slot: from then on only cached credentials can succeed, and
    /// uncached ones wait [`DERIVATION_QUEUE_WAIT`] for `Busy`.
    fn hold_derivations(auth: &Authenticator) -> tokio::sync::SemaphorePermit<'_> {
        auth.derivations
            .try_acquire_many(CONCURRENT_DERIVATIONS as u32)
            .unwrap()
    }

    async fn fail_times(auth: &Authenticator, client: IpAddr, times: u32) {
        for i in 0..times {
            let attempt = format!("wrong-{i}");
            assert_eq!(
                auth.verify(wrong(&attempt), client).await,
                Err(AuthError::Failed),
                "attempt {}",
                i + 1
            );
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[tokio::test]
    async fn accepts_generated_credentials_and_nothing_else() {
        let (secrets, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        let good = presented(&secrets);
        assert_eq!(auth.verify(good, CLIENT).await, Ok(Verification::Derived));
        // Served from the cache the second time.
        assert_eq!(auth.verify(good, CLIENT).await, Ok(Verification::Cached));
        let wrong_key = PresentedCredentials {
            comparison_key: "x",
            ..good
        };
        assert_eq!(auth.verify(wrong_key, CLIENT).await, Err(AuthError::Failed));
        let wrong_salt = PresentedCredentials { salt: "00", ..good };
        assert_eq!(
            auth.verify(wrong_salt, CLIENT).await,
            Err(AuthError::Failed)
        );
        for empty in [
            PresentedCredentials {
                decryption_key: "",
                ..good
            },
            PresentedCredentials { salt: "", ..good },
            PresentedCredentials {
                comparison_key: "",
                ..good
            },
        ] {
            assert_eq!(auth.verify(empty, CLIENT).await, Err(AuthError::Failed));
        }
    }

    #[tokio::test]
    async fn any_of_several_api_keys_opens() {
        let (first, first_key) = credentials::generate().unwrap();
        let (second, second_key) = credentials::generate().unwrap();
        let (stranger, _) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&first_key, &second_key]), FAILURES);
        assert_eq!(
            auth.verify(presented(&first), CLIENT).await,
            Ok(Verification::Derived)
        );
        assert_eq!(
            auth.verify(presented(&second), CLIENT).await,
            Ok(Verification::Derived)
        );
        assert_eq!(
            auth.verify(presented(&stranger), CLIENT).await,
            Err(AuthError::Failed)
        );
    }

    #[test]
    fn api_key_lists_split_on_commas_and_refuse_what_is_not_a_token() {
        let parsed: ApiKeys = " gAAAAAone, gAAAAAtwo,\ngAAAAAthree\n".parse().unwrap();
        assert_eq!(parsed.count(), 3);
        // Debug output, which may reach a log, names no key.
        assert_eq!(format!("{parsed:?}"), "ApiKeys(3 keys)");
        assert!(parsed.contains("gAAAAAtwo") && !parsed.contains("gAAAAA"));
        assert_eq!(" , ".parse::<ApiKeys>(), Err(ApiKeyError::Empty));
        assert_eq!(
            "gAAAAAone,secret".parse::<ApiKeys>(),
            Err(ApiKeyError::NotAToken { position: 2 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_twenty_first_failure_is_throttled_until_the_window_ends() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        fail_times(&auth, CLIENT, FAILURES).await;
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(
            auth.verify(wrong("one more"), CLIENT).await,
            Err(AuthError::Throttled {
                retry_after_secs: 15
            })
        );
        tokio::time::advance(Duration::from_millis(14_600)).await;
        assert_eq!(
            auth.verify(wrong("one more"), CLIENT).await,
            Err(AuthError::Throttled {
                retry_after_secs: 1
            })
        );
        // Another address is not affected.
        let other = IpAddr::from([10, 0, 0, 3]);
        assert_eq!(
            auth.verify(wrong("other"), other).await,
            Err(AuthError::Failed)
        );
        tokio::time::advance(Duration::from_millis(400)).await;
        // A new window: the budget is whole again.
        fail_times(&auth, CLIENT, FAILURES).await;
        assert!(matches!(
            auth.verify(wrong("again"), CLIENT).await,
            Err(AuthError::Throttled { .. })
        ));
    }

    #[tokio::test]
    async fn requests_missing_a_value_spend_no_budget() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        let missing_one = PresentedCredentials {
            salt: "",
            ..wrong("guess")
        };
        for _ in 0..3 * FAILURES {
            assert_eq!(
                auth.verify(missing_one, CLIENT).await,
                Err(AuthError::Failed)
            );
        }
        assert!(auth.failures.lock().unwrap().is_empty());
        fail_times(&auth, CLIENT, FAILURES).await;
    }

    #[tokio::test]
    async fn a_success_does_not_count_against_the_budget() {
        let (secrets, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        fail_times(&auth, CLIENT, FAILURES - 1).await;
        assert_eq!(
            auth.verify(presented(&secrets), CLIENT).await,
            Ok(Verification::Derived)
        );
        fail_times(&auth, CLIENT, 1).await;
        assert!(matches!(
            auth.verify(wrong("last"), CLIENT).await,
            Err(AuthError::Throttled { .. })
        ));
        // Credentials already verified still pass from a throttled address.
        assert_eq!(
            auth.verify(presented(&secrets), CLIENT).await,
            Ok(Verification::Cached)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_address_is_refused_without_queueing_for_a_derivation() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        fail_times(&auth, CLIENT, FAILURES).await;
        let _all = hold_derivations(&auth);
        let started = Instant::now();
        assert!(matches!(
            auth.verify(wrong("queued"), CLIENT).await,
            Err(AuthError::Throttled { .. })
        ));
        assert_eq!(started.elapsed(), Duration::ZERO);
        let other = IpAddr::from([10, 0, 0, 9]);
        assert_eq!(
            auth.verify(wrong("queued"), other).await,
            Err(AuthError::Busy)
        );
        assert_eq!(started.elapsed(), DERIVATION_QUEUE_WAIT);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_with_the_same_credentials_derive_once() {
        let (secrets, api_key) = credentials::generate().unwrap();
        let auth = Arc::new(Authenticator::new(keys(&[&api_key]), FAILURES));
        let attempts = (0..10).map(|_| {
            let (auth, secrets) = (auth.clone(), secrets.clone());
            tokio::spawn(async move { auth.verify(presented(&secrets), CLIENT).await })
        });
        let outcomes: Vec<_> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let count = |wanted: Verification| outcomes.iter().filter(|o| **o == Ok(wanted)).count();
        assert_eq!(
            (count(Verification::Derived), count(Verification::Cached)),
            (1, 9),
            "{outcomes:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_success_expires_when_idle_and_after_its_lifetime() {
        let (secrets, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        let good = presented(&secrets);
        assert_eq!(auth.verify(good, CLIENT).await, Ok(Verification::Derived));
        let all = hold_derivations(&auth);
        // Used within its idle time, the entry slides...
        let step = CACHE_IDLE_TTL - Duration::from_secs(1);
        let mut used = Duration::ZERO;
        while used + step < CACHE_LIFETIME {
            tokio::time::advance(step).await;
            used += step;
            assert_eq!(
                auth.verify(good, CLIENT).await,
                Ok(Verification::Cached),
                "after {used:?}"
            );
        }
        // ...but never past its lifetime.
        tokio::time::advance(CACHE_LIFETIME - used).await;
        assert_eq!(auth.verify(good, CLIENT).await, Err(AuthError::Busy));
        drop(all);
        assert_eq!(auth.verify(good, CLIENT).await, Ok(Verification::Derived));

        let all = hold_derivations(&auth);
        tokio::time::advance(CACHE_IDLE_TTL - Duration::from_millis(1)).await;
        assert_eq!(auth.verify(good, CLIENT).await, Ok(Verification::Cached));
        tokio::time::advance(CACHE_IDLE_TTL).await;
        assert_eq!(auth.verify(good, CLIENT).await, Err(AuthError::Busy));
        drop(all);
    }

    #[tokio::test]
    async fn removing_an_api_key_revokes_its_cached_successes() {
        let (old, old_key) = credentials::generate().unwrap();
        let (new, new_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&old_key]), FAILURES);
        assert_eq!(
            auth.verify(presented(&old), CLIENT).await,
            Ok(Verification::Derived)
        );
        auth.replace_api_keys(keys(&[&old_key, &new_key]));
        let _still_cached = hold_derivations(&auth);
        assert_eq!(
            auth.verify(presented(&old), CLIENT).await,
            Ok(Verification::Cached)
        );
        drop(_still_cached);
        assert_eq!(
            auth.verify(presented(&new), CLIENT).await,
            Ok(Verification::Derived)
        );
        auth.replace_api_keys(keys(&[&new_key]));
        assert_eq!(
            auth.verify(presented(&old), CLIENT).await,
            Err(AuthError::Failed)
        );
        assert_eq!(
            auth.verify(presented(&new), CLIENT).await,
            Ok(Verification::Cached)
        );
    }

    #[test]
    fn a_success_verified_under_a_key_removed_meanwhile_is_not_remembered() {
        let auth = Authenticator::new(keys(&["gAAAAAold"]), FAILURES);
        auth.replace_api_keys(keys(&["gAAAAAnew"]));
        auth.remember([1; 32], Arc::from("gAAAAAold"));
        assert!(!auth.is_cached(&[1; 32]));
        auth.remember([2; 32], Arc::from("gAAAAAnew"));
        assert!(auth.is_cached(&[2; 32]));
    }

    #[tokio::test]
    async fn a_full_cache_forgets_the_least_recently_used() {
        let auth = Authenticator::new(keys(&["gAAAAAkey"]), FAILURES);
        let key: Arc<str> = Arc::from("gAAAAAkey");
        let fingerprint = |i: usize| {
            let mut f = [0u8; 32];
            f[..8].copy_from_slice(&(i as u64).to_be_bytes());
            f
        };
        for i in 0..CACHE_CAPACITY {
            auth.remember(fingerprint(i), key.clone());
        }
        // Entry 0 is used again, so entry 1 is now the least recent.
        assert!(auth.is_cached(&fingerprint(0)));
        auth.remember(fingerprint(CACHE_CAPACITY), key.clone());
        assert!(!auth.is_cached(&fingerprint(1)));
        for i in [0, 2, CACHE_CAPACITY - 1, CACHE_CAPACITY] {
            assert!(auth.is_cached(&fingerprint(i)), "entry {i}");
        }
    }

    #[tokio::test]
    async fn a_full_failure_table_forgets_the_least_recent_address() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), FAILURES);
        let spend = |group: ClientGroup| {
            for _ in 0..FAILURES {
                auth.reserve_attempt(group).unwrap();
            }
        };
        let address = |i: u32| ClientGroup(IpAddr::from(i.to_be_bytes()));
        spend(address(0));
        for i in 1..TRACKED_ADDRESSES as u32 {
            auth.reserve_attempt(address(i)).unwrap();
        }
        // Address 0 failed again recently; address 1 is now the least recent.
        assert!(auth.reserve_attempt(address(0)).is_err());
        auth.reserve_attempt(address(TRACKED_ADDRESSES as u32))
            .unwrap();
        assert!(auth.check_throttle(address(0)).is_err());
        assert_eq!(auth.failures.lock().unwrap().len(), TRACKED_ADDRESSES);
        assert!(auth.failures.lock().unwrap().peek(&address(1)).is_none());
    }

    // A paused clock: however slow a loaded machine derives, no attempt times out as Busy.
    #[tokio::test(start_paused = true)]
    async fn concurrent_wrong_attempts_never_exceed_the_budget() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = Arc::new(Authenticator::new(keys(&[&api_key]), FAILURES));
        let attacker = IpAddr::from([10, 0, 0, 4]);
        let attempts = (0..3 * FAILURES).map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let attempt = format!("wrong-{i}");
                auth.verify(wrong(&attempt), attacker).await
            })
        });
        let outcomes: Vec<_> = futures::future::join_all(attempts).await;
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Err(AuthError::Failed))))
            .count();
        assert_eq!(failed, FAILURES as usize);
    }

    #[tokio::test]
    async fn no_limit_when_turned_off() {
        let (_, api_key) = credentials::generate().unwrap();
        let auth = Authenticator::new(keys(&[&api_key]), 0);
        fail_times(&auth, CLIENT, 2 * FAILURES).await;
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
