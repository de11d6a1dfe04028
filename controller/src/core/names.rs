//! Every annotation, tag, finalizer, condition and reason name kaws uses, defined once.

/// Finalizer kaws puts on every managed object before its first AWS write.
pub const FINALIZER: &str = "kaws.io/finalizer";

/// Field manager used for every server-side apply kaws makes.
pub const FIELD_MANAGER: &str = "kaws";

/// Name kaws reports Events under.
pub const CONTROLLER_NAME: &str = "kaws";

pub mod annotations {
    /// `"true"`: make no AWS calls at all for this object.
    pub const PAUSED: &str = "kaws.io/paused";
    /// `"true"`: allowed to take over an existing AWS resource that no kaws object owns.
    pub const ADOPT: &str = "kaws.io/adopt";
    /// Any new value forces one reconcile; echoed to `status.lastHandledReconcileAt`.
    pub const RECONCILE_REQUESTED_AT: &str = "kaws.io/reconcile-requested-at";
    /// Per-object drift-check period, e.g. `10m`.
    pub const RESYNC_PERIOD: &str = "kaws.io/resync-period";

    /// kaws' own annotations (`kaws.io/…`, `<kind>.kaws.io/…`): the only ones it reads.
    pub fn is_kaws(key: &str) -> bool {
        key.split_once('/')
            .is_some_and(|(prefix, _)| prefix == "kaws.io" || prefix.ends_with(".kaws.io"))
    }
}

pub mod tags {
    /// `<cluster-id>/<namespace>/<name>` of the object that owns the AWS resource.
    pub const OWNER: &str = "kaws.io/owner";
    /// `metadata.uid` of the object that created or adopted the AWS resource.
    pub const UID: &str = "kaws.io/uid";
    /// Prefix of every tag kaws writes itself.
    pub const KAWS_PREFIX: &str = "kaws.io/";
    /// Prefix of tags AWS reserves for itself; they can be neither written nor removed.
    pub const AWS_RESERVED_PREFIX: &str = "aws:";

    /// Tags kaws writes itself: never shown as drift, never clobbered by user tags.
    pub fn is_system(key: &str) -> bool {
        key == OWNER || key == UID
    }
}

pub mod conditions {
    pub const READY: &str = "Ready";
    pub const SYNCED: &str = "Synced";
}

/// Condition reasons and Event reasons.
pub mod reasons {
    pub const AVAILABLE: &str = "Available";
    pub const CREATING: &str = "Creating";
    pub const UPDATING: &str = "Updating";
    pub const DELETING: &str = "Deleting";
    pub const UNAVAILABLE: &str = "Unavailable";
    pub const NOT_FOUND: &str = "NotFound";
    pub const RECONCILE_SUCCESS: &str = "ReconcileSuccess";
    pub const OBSERVED: &str = "Observed";
    pub const PAUSED: &str = "Paused";
    pub const CREATED: &str = "Created";
    pub const UPDATED: &str = "Updated";
    pub const ADOPTED: &str = "Adopted";
    /// Deleting released the object without AWS calls: nothing was ever created for it.
    pub const NOTHING_TO_DELETE: &str = "NothingToDelete";
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    pub const DELETED: &str = "Deleted";
    pub const RETAINED: &str = "Retained";
    /// The same change was applied repeatedly and AWS does not show it: writing is held.
    pub const NOT_CONVERGING: &str = "NotConverging";
    /// A Secret the spec references (or a key in it) does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A kaws object (or an S3 object) the spec references is not there or not ready yet.
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
}
