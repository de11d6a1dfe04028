//! The reconcile error type: every error knows whether it is terminal and which category
//! (metric label, condition and Event reason) it belongs to.

use std::time::Duration;

use super::names::reasons;

/// Why a reconcile did not reach the desired state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be applied as written; fixing it is up to the user.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An AWS resource with this identity exists and no kaws object owns it.
    #[error(
        "{0} already exists in AWS and is not managed by kaws; set the annotation kaws.io/adopt: \"true\" to take it over"
    )]
    AlreadyExists(String),
    /// The AWS resource belongs to another kaws object, cluster or AWS account.
    #[error("{resource} is owned by {owner}; kaws will not change or delete it")]
    OwnedByOther { resource: String, owner: String },
    /// AWS refused the credentials kaws runs with.
    #[error("access denied by AWS during {operation}: {message}")]
    AccessDenied { operation: String, message: String },
    /// AWS rejected the request as invalid; retrying the same request cannot succeed.
    #[error("AWS rejected {operation}: {message}")]
    AwsRejected { operation: String, message: String },
    /// AWS asked kaws to slow down.
    #[error("throttled by AWS during {operation}")]
    Throttled { operation: String },
    /// A failure that may go away by itself: 5xx, timeouts, connection errors.
    #[error("failed to call AWS {operation}: {message}")]
    AwsTransient { operation: String, message: String },
    /// The AWS resource is in a state that blocks the next step (e.g. a non-empty bucket on delete).
    /// Retried on a slow schedule, since it usually needs a person to act.
    #[error("{message}")]
    Blocked {
        reason: &'static str,
        message: String,
    },
    /// `kaws.io/paused` stops deletion too; the finalizer stays until the annotation goes.
    #[error("paused by the annotation kaws.io/paused")]
    Paused,
    /// Deletion has started in AWS and is not finished yet; not a failure.
    #[error("waiting for AWS to finish deleting {0}")]
    StillDeleting(String),
    /// A call to the Kubernetes API failed.
    #[error("failed to call the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// AWS is busy with another change to the resource (e.g. Lambda's `ResourceConflictException`
    /// while an update is in progress). Not a failure of the spec: retried on a short fixed
    /// cadence, without exponential backoff.
    #[error("AWS is busy with another change during {operation}: {message}")]
    Busy { operation: String, message: String },
    /// AWS rejected the request for a reason that may heal by itself for a while, such as a role
    /// IAM has not propagated yet. Transient (backoff) until `grace` has passed since the first
    /// such failure of this generation, then terminal; the driver keeps the first failure in the
    /// `Synced` condition's `lastTransitionTime`.
    #[error("AWS rejected {operation}: {message}")]
    RejectedWithGrace {
        reason: &'static str,
        operation: String,
        message: String,
        grace: Duration,
    },
    /// A Secret (or a key in it) the spec references does not exist yet. Transient: retried with
    /// backoff, and a watch on the Secret triggers a reconcile once it appears. The message names
    /// the Secret and key, never any of its content.
    #[error("{}", match key {
        Some(key) => format!("Secret {name:?} has no key {key:?}"),
        None => format!("Secret {name:?} not found"),
    })]
    SecretNotFound { name: String, key: Option<String> },
    /// A Secret kaws would write (a connection Secret) belongs to another object, or was not
    /// written by kaws: refused, never overwritten. Terminal; a change to that Secret (e.g. its
    /// deletion with its owner) triggers a reconcile through the Secret watch.
    #[error(
        "Secret {secret:?} is owned by {owner}; kaws will not read or overwrite it: name another Secret"
    )]
    SecretOwnedByOther { secret: String, owner: String },
    /// Another kaws object the spec references (e.g. a Function's `code.bucketRef`) is missing or
    /// not Ready. Transient: a watch on that kind triggers a reconcile as soon as it changes.
    #[error("{0}")]
    DependencyNotReady(String),
}

impl Error {
    /// Terminal errors are not retried until the object changes.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_)
                | Error::AlreadyExists(_)
                | Error::OwnedByOther { .. }
                | Error::AccessDenied { .. }
                | Error::AwsRejected { .. }
                | Error::SecretOwnedByOther { .. }
                | Error::Paused
        )
    }

    /// Metric label, condition reason and Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::AlreadyExists(_) => "AlreadyExists",
            Error::OwnedByOther { .. } => "OwnedByOther",
            Error::AccessDenied { .. } => "AccessDenied",
            Error::AwsRejected { .. } => "AwsError",
            Error::Throttled { .. } => "Throttled",
            Error::AwsTransient { .. } => "AwsError",
            Error::Blocked { reason, .. } => reason,
            Error::Paused => "Paused",
            Error::StillDeleting(_) => "Deleting",
            Error::Kube(_) => "KubernetesError",
            Error::SecretNotFound { .. } => reasons::SECRET_NOT_FOUND,
            Error::SecretOwnedByOther { .. } => "SecretOwnedByOther",
            Error::DependencyNotReady(_) => reasons::DEPENDENCY_NOT_READY,
            Error::Busy { .. } => "Busy",
            Error::RejectedWithGrace { reason, .. } => reason,
        }
    }

    /// How long to wait before retrying a non-terminal error, when it has a fixed cadence
    /// rather than exponential backoff.
    pub fn fixed_retry(&self) -> Option<Duration> {
        match self {
            Error::StillDeleting(_) => Some(Duration::from_secs(5)),
            Error::Blocked { .. } => Some(Duration::from_secs(60)),
            Error::Busy { .. } => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// The highest exponential backoff for this error, when lower than the controller's: AWS
    /// throttling and server errors clear within seconds to a minute, and a long ceiling only
    /// delays recovery after they stop (the SDK already retried inside the reconcile).
    pub fn backoff_cap(&self) -> Option<Duration> {
        match self {
            Error::Throttled { .. } | Error::AwsTransient { .. } => Some(Duration::from_secs(30)),
            _ => None,
        }
    }

    /// For errors that are transient only for a while: how long after the first failure they
    /// become terminal (see [`Error::RejectedWithGrace`]). `None` for every other error.
    pub fn grace_period(&self) -> Option<Duration> {
        match self {
            Error::RejectedWithGrace { grace, .. } => Some(*grace),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
