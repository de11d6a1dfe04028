//! One Event publisher shared by every kind. Publishing never fails a reconcile: a lost Event
//! is logged, not retried.
//!
//! Repeats of the same Event (same object, type, reason *and note*) within [`SERIES_WINDOW`]
//! are folded into one `events.k8s.io/v1` Event whose `series.count` grows, so a retried
//! failure does not flood the namespace. kube-runtime's `Recorder` folds by reason alone and
//! keeps the first note, which would show "updated versioning" for a later "updated tags";
//! that is why kaws keys on the note too.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::names::CONTROLLER_NAME;

/// How long repeats of one Event are folded into a series.
const SERIES_WINDOW: Duration = Duration::from_secs(300);
/// The API server refuses notes longer than 1 kB.
const MAX_NOTE_BYTES: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    type_: EventType,
    reason: String,
    note: String,
}

#[derive(Clone, Debug)]
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

#[derive(Clone)]
pub struct Events {
    client: Client,
    instance: String,
    published: Arc<Mutex<HashMap<Key, Published>>>,
}

impl Events {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| CONTROLLER_NAME.to_string()),
            published: Arc::default(),
        }
    }

    pub async fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.publish(obj, EventType::Normal, reason, note).await;
    }

    pub async fn warning<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        note: String,
    ) {
        self.publish(obj, EventType::Warning, reason, note).await;
    }

    /// A Warning for a failure that is being retried: every repeat with the same reason within
    /// the series window counts into one Event, whatever its note (the first note stays — the API
    /// server keeps an Event's note immutable; the `Synced` condition carries the latest). A
    /// throttled account thus costs one Event per object and reason, not one per retry.
    pub async fn retrying<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        note: String,
    ) {
        self.publish_keyed(obj, EventType::Warning, reason, note, false)
            .await;
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.publish_keyed(obj, type_, reason, note, true).await;
    }

    async fn publish_keyed<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        by_note: bool,
    ) {
        let regarding = obj.object_ref(&());
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let note = truncate(note, MAX_NOTE_BYTES);
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            note: if by_note { note.clone() } else { String::new() },
        };
        let now = Timestamp::now();
        let repeat = {
            let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
            published.retain(|_, p| {
                now.duration_since(p.last).as_secs() < SERIES_WINDOW.as_secs() as i64
            });
            published.get_mut(&key).map(|p| {
                p.count += 1;
                p.last = now;
                p.clone()
            })
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let result = match repeat {
            Some(p) => {
                let series =
                    json!({"series": {"count": p.count, "lastObservedTime": MicroTime(now)}});
                api.patch(&p.name, &PatchParams::default(), &Patch::Merge(&series))
                    .await
                    .map(|_| ())
            }
            None => {
                let event = self.event(&key, note, regarding, namespace, now);
                let name = event.metadata.name.clone().unwrap_or_default();
                let created = api.create(&PostParams::default(), &event).await.map(|_| ());
                if created.is_ok() {
                    let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
                    published.insert(
                        key.clone(),
                        Published {
                            name,
                            count: 1,
                            last: now,
                        },
                    );
                }
                created
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, reason, "failed to publish event");
        }
    }

    fn event(
        &self,
        key: &Key,
        note: String,
        regarding: ObjectReference,
        namespace: String,
        now: Timestamp,
    ) -> Event {
        let object = regarding
            .name
            .clone()
            .unwrap_or_else(|| CONTROLLER_NAME.to_string());
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Reconcile".to_string()),
            reason: Some(key.reason.clone()),
            note: Some(note),
            type_: Some(format!("{:?}", key.type_)),
            regarding: Some(regarding),
            reporting_controller: Some(CONTROLLER_NAME.to_string()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let note = "é".repeat(600);
        let cut = truncate(note, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short".into(), MAX_NOTE_BYTES), "short");
    }
}
