//! Writes kaws makes to objects it also watches as triggers (a DBInstance's connection Secret).
//! The watch event such a write causes is kaws' own echo: it must not reconcile the object that
//! made the write, which already has what it wrote (each echo cost a full AWS observation and
//! held a `--concurrency` permit other objects were waiting for). Every other object that
//! references the written object is still reconciled, and so is the writer when someone else
//! changes or deletes what it wrote: only the exact version kaws wrote is recognised.
//!
//! The echo can arrive before the answer to the write that caused it (the test API server sends
//! it first; a real one may), so a write is registered before it is sent, and a watch event for
//! an object being written waits for the answer's `resourceVersion` ([`ECHO_WAIT`] at most).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{Resource, ResourceExt};
use tokio::sync::watch;

/// How long after kaws sent a write its watch events stop waiting for the answer and are taken
/// for someone else's change (and reconcile the writer too). Counted from the write, not from
/// each event, so one hung write holds a trigger stream this long at most.
pub const ECHO_WAIT: Duration = Duration::from_secs(5);

/// The last write kaws made of each object it writes and watches, and which kaws object made it.
#[derive(Debug, Default)]
pub struct OwnWrites {
    /// Key: kind, namespace and name of the written object. One entry per object kaws wrote,
    /// replaced by each later write, removed when the object is deleted.
    last: Mutex<HashMap<String, Write>>,
}

#[derive(Debug)]
struct Write {
    /// The writer's key (`Kind/namespace/name`).
    writer: String,
    /// The written object's `resourceVersion` once the API server answered; `None` before.
    version: watch::Receiver<Option<String>>,
    /// When the write was sent.
    sent: Instant,
}

/// A write under way; [`Writing::wrote`] with the API server's answer, or dropped on failure.
#[must_use = "a write under way is settled by `wrote`"]
pub struct Writing(watch::Sender<Option<String>>);

impl Writing {
    /// The object as the API server returned it from the write.
    pub fn wrote<R: Resource>(self, written: &R) {
        self.0.send_replace(written.resource_version());
    }
}

fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

fn key_of<R: Resource<DynamicType = ()>>(obj: &R) -> String {
    key(
        &R::kind(&()),
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
    )
}

impl OwnWrites {
    /// Registers a write of the `R` named `ns`/`name` by the kaws object `writer`, before it is
    /// sent.
    pub fn begin<R: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        writer: String,
    ) -> Writing {
        let (tx, version) = watch::channel(None);
        self.lock().insert(
            key(&R::kind(&()), ns, name),
            Write {
                writer,
                version,
                sent: Instant::now(),
            },
        );
        Writing(tx)
    }

    /// The kaws object whose write `seen` (from a watch) is, if it is exactly the version kaws
    /// wrote last: the echo of that write. Waits for the answer of a write still under way.
    pub async fn writer_of<R: Resource<DynamicType = ()>>(&self, seen: &R) -> Option<String> {
        self.writer_within(seen, ECHO_WAIT).await
    }

    async fn writer_within<R: Resource<DynamicType = ()>>(
        &self,
        seen: &R,
        wait: Duration,
    ) -> Option<String> {
        let version = seen.resource_version()?;
        let (writer, mut written, sent) = {
            let last = self.lock();
            let write = last.get(&key_of(seen))?;
            (write.writer.clone(), write.version.clone(), write.sent)
        };
        // A failed write (its `Writing` dropped unanswered) and a late answer are not echoes.
        let left = wait.saturating_sub(sent.elapsed());
        let written = tokio::time::timeout(left, written.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?
            .clone();
        (written.as_deref() == Some(version.as_str())).then_some(writer)
    }

    /// Forgets what kaws wrote of `gone`, deleted since: its deletion is never an echo, whatever
    /// version the watch shows it with.
    pub fn forget<R: Resource<DynamicType = ()>>(&self, gone: &R) {
        self.lock().remove(&key_of(gone));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Write>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(ns: &str, name: &str, version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn write(writes: &OwnWrites, ns: &str, name: &str, version: &str) {
        writes
            .begin::<Secret>(ns, name, format!("DBInstance/{ns}/db"))
            .wrote(&secret(ns, name, version));
    }

    #[tokio::test]
    async fn only_the_version_kaws_wrote_is_its_echo() {
        let writes = OwnWrites::default();
        write(&writes, "a", "conn", "7");
        assert_eq!(
            writes.writer_of(&secret("a", "conn", "7")).await.as_deref(),
            Some("DBInstance/a/db")
        );
        // Changed after kaws' write (an edit): not an echo.
        assert_eq!(writes.writer_of(&secret("a", "conn", "8")).await, None);
        // Same name elsewhere.
        assert_eq!(writes.writer_of(&secret("b", "conn", "7")).await, None);
        // A later write replaces the earlier one.
        write(&writes, "a", "conn", "9");
        assert_eq!(writes.writer_of(&secret("a", "conn", "7")).await, None);
        assert!(writes.writer_of(&secret("a", "conn", "9")).await.is_some());
        // Deleted: whatever version the watch shows, the writer hears of it.
        writes.forget(&secret("a", "conn", "9"));
        assert_eq!(writes.writer_of(&secret("a", "conn", "9")).await, None);
    }

    #[tokio::test]
    async fn an_echo_ahead_of_the_answer_waits_for_it() {
        let writes = std::sync::Arc::new(OwnWrites::default());
        let writing = writes.begin::<Secret>("a", "conn", "DBInstance/a/db".into());
        let seen = {
            let writes = writes.clone();
            tokio::spawn(async move { writes.writer_of(&secret("a", "conn", "4")).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!seen.is_finished(), "waits for the answer");
        writing.wrote(&secret("a", "conn", "4"));
        assert_eq!(
            seen.await.expect("joined").as_deref(),
            Some("DBInstance/a/db")
        );
    }

    #[tokio::test]
    async fn a_failed_write_has_no_echo() {
        let writes = OwnWrites::default();
        drop(writes.begin::<Secret>("a", "conn", "DBInstance/a/db".into()));
        assert_eq!(writes.writer_of(&secret("a", "conn", "1")).await, None);
        let mut unversioned = secret("a", "conn", "1");
        unversioned.metadata.resource_version = None;
        writes
            .begin::<Secret>("a", "conn", "DBInstance/a/db".into())
            .wrote(&unversioned);
        assert_eq!(writes.writer_of(&secret("a", "conn", "1")).await, None);
    }

    #[tokio::test]
    async fn an_answer_that_never_comes_lets_the_event_through() {
        let writes = OwnWrites::default();
        let _writing = writes.begin::<Secret>("a", "conn", "DBInstance/a/db".into());
        let seen = secret("a", "conn", "1");
        let wait = Duration::from_millis(300);
        assert_eq!(writes.writer_within(&seen, wait).await, None);
        // The wait counts from the write: later events of the same hung write do not wait again.
        let started = Instant::now();
        assert_eq!(writes.writer_within(&seen, wait).await, None);
        assert!(started.elapsed() < wait / 2, "{:?}", started.elapsed());
    }
}
