//! Fault injection: failing, delaying and cutting off requests so tests can
//! check that clients retry, back off and resume watches.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::errors::ApiError;

struct Rule {
    re: regex::Regex,
    remaining: usize,
    status: u16,
    retry_after: Option<u64>,
}

/// Requests to hold before they are handled.
struct Hold {
    /// `None`: any method.
    method: Option<String>,
    re: regex::Regex,
    remaining: usize,
    delay: Duration,
}

struct Inner {
    rules: Mutex<Vec<Rule>>,
    holds: Mutex<Vec<Hold>>,
    latency_ms: AtomicU64,
    drops: tokio::sync::watch::Sender<u64>,
    connections: Mutex<CancellationToken>,
}

/// Cloneable handle to the server's fault switches.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

impl Faults {
    pub fn new() -> Self {
        let (drops, _) = tokio::sync::watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                rules: Mutex::new(Vec::new()),
                holds: Mutex::new(Vec::new()),
                latency_ms: AtomicU64::new(0),
                drops,
                connections: Mutex::new(CancellationToken::new()),
            }),
        }
    }

    /// Ends every open watch stream now (clients see the body end).
    pub fn drop_watches(&self) {
        self.inner.drops.send_modify(|v| *v += 1);
    }

    /// The next `count` requests whose path (with query) matches `path_regex`
    /// get `status` with a metav1.Status body; 429 also carries Retry-After.
    /// An invalid regex is matched literally.
    pub fn fail_next(
        &self,
        path_regex: &str,
        count: usize,
        status: u16,
        retry_after_secs: Option<u64>,
    ) {
        let mut rules = self.inner.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.push(Rule {
            re: pattern(path_regex),
            remaining: count,
            status,
            retry_after: retry_after_secs,
        });
    }

    /// The next `count` requests with `method` (any, if `None`) whose path (with query) matches
    /// `path_regex` are held for `delay` before they are handled (the others go on meanwhile).
    /// An invalid regex is matched literally.
    pub fn delay_next(
        &self,
        method: Option<&str>,
        path_regex: &str,
        count: usize,
        delay: Duration,
    ) {
        let mut holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.push(Hold {
            method: method.map(str::to_uppercase),
            re: pattern(path_regex),
            remaining: count,
            delay,
        });
    }

    /// Latency added before every (non-admin) request is handled.
    pub fn set_latency(&self, d: Duration) {
        self.inner
            .latency_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Simulates an apiserver restart: drops all connections and watches,
    /// keeps every object.
    pub fn restart(&self) {
        self.drop_watches();
        let old = {
            let mut tok = self
                .inner
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *tok, CancellationToken::new())
        };
        old.cancel();
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.inner.latency_ms.load(Ordering::SeqCst))
    }

    /// Consumes one matching failure rule, if any.
    pub(crate) fn take_failure(&self, path_and_query: &str) -> Option<ApiError> {
        let mut rules = self.inner.rules.lock().unwrap_or_else(|p| p.into_inner());
        let idx = rules
            .iter()
            .position(|r| r.remaining > 0 && r.re.is_match(path_and_query))?;
        let r = &mut rules[idx];
        r.remaining -= 1;
        let err = ApiError::for_code(
            r.status,
            r.retry_after
                .or(if r.status == 429 { Some(1) } else { None }),
        );
        rules.retain(|r| r.remaining > 0);
        Some(err)
    }

    /// Consumes one matching hold rule, if any: how long to hold the request.
    pub(crate) fn take_delay(&self, method: &str, path_and_query: &str) -> Option<Duration> {
        let mut holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
        let idx = holds.iter().position(|h| {
            h.remaining > 0
                && h.method.as_deref().is_none_or(|m| m == method)
                && h.re.is_match(path_and_query)
        })?;
        let h = &mut holds[idx];
        h.remaining -= 1;
        let delay = h.delay;
        holds.retain(|h| h.remaining > 0);
        Some(delay)
    }

    pub(crate) fn connection_token(&self) -> CancellationToken {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn watch_drops(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.drops.subscribe()
    }
}

/// `path_regex` as a regex; an invalid one is matched literally.
fn pattern(path_regex: &str) -> regex::Regex {
    regex::Regex::new(path_regex)
        .or_else(|_| regex::Regex::new(&regex::escape(path_regex)))
        .unwrap_or_else(|_| regex::Regex::new("$^").unwrap_or_else(|e| panic!("static regex: {e}")))
}
