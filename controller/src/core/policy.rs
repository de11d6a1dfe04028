//! The decision policy: one pure function from what a reconcile found (the status the object
//! carried, the outcome of this reconcile, its generation and the time) to what kaws says and
//! does about it — the `Ready` and `Synced` conditions, at most one Event, and when to look
//! again. Every path that ends a reconcile, success, failure, pause or deletion, goes through
//! [`decide`]; the driver only carries the decision out. Errors that escape a reconcile (a
//! status write that failed, a finalizer patch) are retried by [`retry_after_error`], the same
//! rule [`decide`] uses.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

use super::{
    api::CommonStatus,
    conditions::ConditionState,
    error::Error,
    names::{annotations, conditions, reasons},
};

/// What the apply path decided when it got as far as it could.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub ready: ConditionState,
    pub synced: ConditionState,
    /// `None`: at the object's resync period.
    pub requeue: Option<Duration>,
    /// What to tell about the step that ended the reconcile (`Updated`, `DriftCorrected`,
    /// a failed state, `NotConverging`), if anything.
    pub event: Option<Notice>,
}

/// How an Event is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
    /// A Warning for a failure being retried: repeats within the series window count into one
    /// Event (see `Events::retrying`).
    Retrying,
}

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub severity: Severity,
    pub reason: String,
    pub message: String,
}

impl Notice {
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Normal, reason, message)
    }
    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, reason, message)
    }
    fn new(severity: Severity, reason: &str, message: impl Into<String>) -> Self {
        Self {
            severity,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// How a reconcile ended.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The apply path finished this step.
    Applied(Progress),
    /// The apply path failed.
    ApplyFailed(&'a Error),
    /// `kaws.io/paused` is set; `deleting` when the object is being deleted.
    Paused { deleting: bool },
    /// Deletion is under way in AWS, or failed; the finalizer stays.
    CleanupFailed(&'a Error),
}

/// What the policy reads besides the outcome.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a, R> {
    /// The status the object carried when the reconcile started.
    pub previous: Option<&'a CommonStatus<R>>,
    /// The status as this reconcile built it so far (the handled reconcile token recorded).
    pub current: &'a CommonStatus<R>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    pub now: Timestamp,
    /// How messages name the AWS resource, e.g. `S3 bucket "logs"`.
    pub what: &'a str,
}

/// When to reconcile again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// At the object's resync period (jittered by the driver).
    Resync,
    After(Duration),
    /// Exponential backoff per object, capped at `cap` when given.
    Backoff {
        cap: Option<Duration>,
    },
    /// Only when the object changes.
    AwaitChange,
}

/// What the driver does at the end of a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `None`: `Ready` stays as it was.
    pub ready: Option<ConditionState>,
    pub synced: ConditionState,
    /// Overrides `Synced.lastTransitionTime`: the first failure of an error with a grace period,
    /// from which the grace period is measured.
    pub synced_since: Option<Timestamp>,
    pub event: Option<Notice>,
    pub requeue: Requeue,
    /// Success: the object's exponential backoff starts over.
    pub reset_backoff: bool,
    /// The error category counted in `kaws_errors_total`, when this reconcile failed.
    pub error: Option<&'static str>,
}

/// The decision for one reconcile.
pub fn decide<R>(facts: &Facts<'_, R>, outcome: Outcome<'_>) -> Decision {
    match outcome {
        Outcome::Applied(progress) => Decision {
            ready: Some(progress.ready),
            synced: progress.synced,
            synced_since: None,
            event: progress.event,
            requeue: progress.requeue.map_or(Requeue::Resync, Requeue::After),
            reset_backoff: true,
            error: None,
        },
        Outcome::ApplyFailed(err) => apply_failed(facts, err),
        Outcome::Paused { deleting } => {
            let message = if deleting {
                format!(
                    "deletion of {} is paused by the annotation {}; the finalizer stays",
                    facts.what,
                    annotations::PAUSED
                )
            } else {
                format!(
                    "reconciliation is paused by the annotation {}",
                    annotations::PAUSED
                )
            };
            // Nothing was observed: Ready stays as it was.
            Decision {
                ready: None,
                synced: ConditionState::no(reasons::PAUSED, message),
                synced_since: None,
                event: None,
                requeue: Requeue::AwaitChange,
                reset_backoff: false,
                error: None,
            }
        }
        Outcome::CleanupFailed(err) => {
            let category = err.category();
            let state = ConditionState::no(category, err.to_string());
            if matches!(err, Error::StillDeleting(_)) {
                // Not a failure: the delete was accepted and AWS is working on it.
                Decision {
                    ready: Some(state),
                    synced: ConditionState::yes(reasons::DELETING, "deleting"),
                    synced_since: None,
                    event: None,
                    requeue: retry_after_error(err),
                    reset_backoff: false,
                    error: None,
                }
            } else {
                Decision {
                    ready: Some(state.clone()),
                    event: Some(Notice::warning(category, err.to_string())),
                    synced: state,
                    synced_since: None,
                    requeue: retry_after_error(err),
                    reset_backoff: false,
                    error: Some(category),
                }
            }
        }
    }
}

/// When to retry after `err`, grace periods aside: never by itself for a terminal error, on a
/// fixed cadence for errors that have one, else exponential backoff (capped for throttling and
/// server errors).
pub fn retry_after_error(err: &Error) -> Requeue {
    if err.is_terminal() {
        Requeue::AwaitChange
    } else if let Some(fixed) = err.fixed_retry() {
        Requeue::After(fixed)
    } else {
        Requeue::Backoff {
            cap: err.backoff_cap(),
        }
    }
}

fn apply_failed<R>(facts: &Facts<'_, R>, err: &Error) -> Decision {
    let category = err.category();
    let grace = err.grace_period().map(|grace| {
        let first = first_failure(
            category,
            facts.previous,
            facts.current,
            facts.generation,
            facts.now,
        );
        (first, grace)
    });
    let expired = grace.is_some_and(|(first, grace)| grace_expired(first, grace, facts.now));
    let terminal = err.is_terminal() || expired;
    let message = match grace {
        Some((_, grace)) if expired => format!(
            "{err}; still failing {}s after the first failure, so kaws stops retrying until the object changes",
            grace.as_secs()
        ),
        _ => err.to_string(),
    };
    let synced = ConditionState::no(category, message.clone());
    let current = facts.current;
    let had_ready = find(&current.conditions, conditions::READY).is_some();
    // Terminal errors mean the resource is not what the spec asks for; a transient error says
    // nothing about the resource, so an existing Ready condition is kept — unless the spec
    // changed since it was set: with `observedGeneration` moving on, a kept Ready=True would tell
    // kstatus (Argo CD, Flux, kubectl wait) the change is applied.
    let spec_changed = current.observed_generation != facts.generation;
    let ready =
        (terminal || !had_ready || spec_changed).then(|| ConditionState::no(category, &message));
    let event = if terminal {
        // A terminal error is told once, not again at every event that re-reconciles it.
        let told = find(&current.conditions, conditions::SYNCED)
            .is_some_and(|c| c.reason == category && c.message == message);
        (!told).then(|| Notice::warning(category, message))
    } else {
        Some(Notice::new(Severity::Retrying, category, message))
    };
    Decision {
        ready,
        synced,
        synced_since: grace.map(|(first, _)| first),
        event,
        requeue: if expired {
            Requeue::AwaitChange
        } else {
            retry_after_error(err)
        },
        reset_backoff: false,
        error: Some(category),
    }
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// When an error with a grace period (see [`Error::grace_period`]) first failed: the `Synced`
/// condition's `lastTransitionTime` when the previous reconcile failed the same way for the same
/// generation, else `now`. A spec change or a new `kaws.io/reconcile-requested-at` token starts
/// a new grace period, so fixing the cause and asking again gets a fresh chance.
fn first_failure<R>(
    category: &str,
    previous: Option<&CommonStatus<R>>,
    current: &CommonStatus<R>,
    generation: Option<i64>,
    now: Timestamp,
) -> Timestamp {
    previous
        .filter(|p| p.last_handled_reconcile_at == current.last_handled_reconcile_at)
        .and_then(|p| find(&p.conditions, conditions::SYNCED))
        .filter(|c| {
            c.status == "False" && c.reason == category && c.observed_generation == generation
        })
        .map_or(now, |c| c.last_transition_time.0)
}

fn grace_expired(first: Timestamp, grace: Duration, now: Timestamp) -> bool {
    now.as_second().saturating_sub(first.as_second())
        >= i64::try_from(grace.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
