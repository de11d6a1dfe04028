//! The decision policy as a table: each case is a status the object carried, an outcome, the
//! generation and the time, and what kaws must say and do — with the reason it must.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::*;

const WHAT: &str = "S3 bucket \"b\"";
const GRACE: Duration = Duration::from_secs(120);
const NOW: i64 = 1000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("valid timestamp")
}

/// A condition as an earlier reconcile left it.
fn cond(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    since: i64,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: Time(at(since)),
    }
}

/// The status the object carried: its conditions, their generation and the handled token.
fn carried(conditions: Vec<Condition>, generation: i64, token: Option<&str>) -> CommonStatus {
    CommonStatus {
        observed_generation: (!conditions.is_empty()).then_some(generation),
        conditions,
        last_handled_reconcile_at: token.map(str::to_string),
        ..Default::default()
    }
}

fn ready_ok(generation: i64) -> Vec<Condition> {
    vec![
        cond("Ready", true, "Available", "available", generation, 10),
        cond(
            "Synced",
            true,
            "ReconcileSuccess",
            "AWS matches the spec",
            generation,
            10,
        ),
    ]
}

fn failing(reason: &str, message: &str, generation: i64, since: i64) -> Vec<Condition> {
    vec![
        cond("Ready", false, reason, message, generation, since),
        cond("Synced", false, reason, message, generation, since),
    ]
}

fn rejected_with_grace() -> Error {
    Error::RejectedWithGrace {
        reason: "InvalidRole",
        operation: "CreateFunction".into(),
        message: "The role defined for the function cannot be assumed by Lambda.".into(),
        grace: GRACE,
    }
}

fn expired_message() -> String {
    format!(
        "{}; still failing 120s after the first failure, so kaws stops retrying until the object changes",
        rejected_with_grace()
    )
}

fn progress(ready: ConditionState, synced: ConditionState, requeue: Option<u64>) -> Progress {
    Progress {
        ready,
        synced,
        requeue: requeue.map(Duration::from_secs),
        event: None,
    }
}

fn available() -> Progress {
    progress(
        ConditionState::yes(reasons::AVAILABLE, "available and matches the spec"),
        ConditionState::yes(reasons::RECONCILE_SUCCESS, "AWS matches the spec"),
        None,
    )
}

fn with_event(mut p: Progress, event: Notice) -> Progress {
    p.event = Some(event);
    p
}

/// This reconcile's outcome, owned so that a case can hold it.
enum Out {
    Applied(Progress),
    Failed(Error),
    Paused { deleting: bool },
    Cleanup(Error),
}

/// What `Ready` must become.
#[derive(Debug, PartialEq)]
enum R {
    Keep,
    Yes(&'static str),
    No(&'static str),
}

struct Want {
    ready: R,
    /// `Synced` status and reason.
    synced: (bool, &'static str),
    /// A fragment the `Synced` message must hold.
    message: &'static str,
    event: Option<(Severity, &'static str)>,
    requeue: Requeue,
    /// `Synced.lastTransitionTime` overridden to this second.
    since: Option<i64>,
    reset_backoff: bool,
    error: Option<&'static str>,
}

/// The usual verdicts, to keep the table about what differs.
fn ok(ready: R, synced_reason: &'static str, requeue: Requeue) -> Want {
    Want {
        ready,
        synced: (true, synced_reason),
        message: "",
        event: None,
        requeue,
        since: None,
        reset_backoff: true,
        error: None,
    }
}

fn terminal(category: &'static str, told: bool) -> Want {
    Want {
        ready: R::No(category),
        synced: (false, category),
        message: "",
        event: (!told).then_some((Severity::Warning, category)),
        requeue: Requeue::AwaitChange,
        since: None,
        reset_backoff: false,
        error: Some(category),
    }
}

fn retrying(ready: R, category: &'static str, requeue: Requeue) -> Want {
    Want {
        ready,
        synced: (false, category),
        message: "",
        event: Some((Severity::Retrying, category)),
        requeue,
        since: None,
        reset_backoff: false,
        error: Some(category),
    }
}

const CAPPED: Requeue = Requeue::Backoff {
    cap: Some(Duration::from_secs(30)),
};
const BACKOFF: Requeue = Requeue::Backoff { cap: None };

struct Case {
    why: &'static str,
    /// The status the object carried (`None`: never reconciled).
    previous: Option<CommonStatus>,
    /// The `kaws.io/reconcile-requested-at` token this reconcile handles.
    token: Option<&'static str>,
    generation: i64,
    now: i64,
    outcome: Out,
    want: Want,
}

fn case(
    why: &'static str,
    previous: Option<CommonStatus>,
    outcome: impl Into<(i64, Option<&'static str>, Out)>,
    want: Want,
) -> Case {
    let (generation, token, outcome) = outcome.into();
    Case {
        why,
        previous,
        token,
        generation,
        now: NOW,
        outcome,
        want,
    }
}

fn cases() -> Vec<Case> {
    use Out::*;
    let ready_before = || Some(carried(ready_ok(1), 1, None));
    vec![
        // --- the apply path finished a step ---------------------------------------------------
        case(
            "in sync: Ready, nothing to do until the resync, backoff starts over",
            ready_before(),
            Applied(available()),
            ok(R::Yes("Available"), "ReconcileSuccess", Requeue::Resync),
        ),
        case(
            "first reconcile that finds AWS matching: same",
            None,
            Applied(available()),
            ok(R::Yes("Available"), "ReconcileSuccess", Requeue::Resync),
        ),
        case(
            "just created: confirm a second later instead of waiting for a watch event",
            None,
            Applied(progress(
                ConditionState::no(reasons::CREATING, "being created"),
                ConditionState::yes(reasons::RECONCILE_SUCCESS, "created"),
                Some(1),
            )),
            ok(
                R::No("Creating"),
                "ReconcileSuccess",
                Requeue::After(Duration::from_secs(1)),
            ),
        ),
        case(
            "AWS busy with the last change: poll on the busy cadence, no write",
            ready_before(),
            Applied(progress(
                ConditionState::no("Modifying", "modifying"),
                ConditionState::yes(reasons::RECONCILE_SUCCESS, "waiting for AWS"),
                Some(5),
            )),
            ok(
                R::No("Modifying"),
                "ReconcileSuccess",
                Requeue::After(Duration::from_secs(5)),
            ),
        ),
        case(
            "a spec change applied: the step's Updated Event is told",
            ready_before(),
            Applied(with_event(
                progress(
                    ConditionState::no(reasons::UPDATING, "updating versioning"),
                    ConditionState::yes(reasons::RECONCILE_SUCCESS, "applied versioning"),
                    Some(1),
                ),
                Notice::normal(reasons::UPDATED, "updated S3 bucket: versioning"),
            )),
            Want {
                event: Some((Severity::Normal, "Updated")),
                ..ok(
                    R::No("Updating"),
                    "ReconcileSuccess",
                    Requeue::After(Duration::from_secs(1)),
                )
            },
        ),
        case(
            "drift corrected: Synced says so and the Event is Normal",
            ready_before(),
            Applied(with_event(
                progress(
                    ConditionState::no(reasons::UPDATING, "updating tags"),
                    ConditionState::yes(reasons::DRIFT_CORRECTED, "applied tags"),
                    Some(1),
                ),
                Notice::normal(reasons::DRIFT_CORRECTED, "corrected drift: tags"),
            )),
            Want {
                event: Some((Severity::Normal, "DriftCorrected")),
                ..ok(
                    R::No("Updating"),
                    "DriftCorrected",
                    Requeue::After(Duration::from_secs(1)),
                )
            },
        ),
        case(
            "a resource failed outside Kubernetes: both False, a Warning, next look at the resync",
            ready_before(),
            Applied(with_event(
                progress(
                    ConditionState::no("InstanceTerminated", "terminated outside"),
                    ConditionState::no("InstanceTerminated", "terminated outside"),
                    None,
                ),
                Notice::warning("InstanceTerminated", "terminated outside"),
            )),
            Want {
                synced: (false, "InstanceTerminated"),
                event: Some((Severity::Warning, "InstanceTerminated")),
                ..ok(R::No("InstanceTerminated"), "", Requeue::Resync)
            },
        ),
        case(
            "held by the update-loop guard: the first hold is told, retried at the resync",
            ready_before(),
            Applied(with_event(
                progress(
                    ConditionState::no(reasons::NOT_CONVERGING, "applied 3 times"),
                    ConditionState::no(reasons::NOT_CONVERGING, "applied 3 times"),
                    None,
                ),
                Notice::warning(reasons::NOT_CONVERGING, "applied 3 times"),
            )),
            Want {
                synced: (false, "NotConverging"),
                event: Some((Severity::Warning, "NotConverging")),
                ..ok(R::No("NotConverging"), "", Requeue::Resync)
            },
        ),
        case(
            "still held: no second Event",
            Some(carried(
                failing("NotConverging", "applied 3 times", 1, 900),
                1,
                None,
            )),
            Applied(progress(
                ConditionState::no(reasons::NOT_CONVERGING, "applied 3 times"),
                ConditionState::no(reasons::NOT_CONVERGING, "applied 3 times"),
                None,
            )),
            Want {
                synced: (false, "NotConverging"),
                ..ok(R::No("NotConverging"), "", Requeue::Resync)
            },
        ),
        case(
            "ObserveOnly and nothing in AWS: not Ready, Synced as observed, no retry storm",
            None,
            Applied(progress(
                ConditionState::no(reasons::NOT_FOUND, "does not exist"),
                ConditionState::yes(reasons::OBSERVED, "ObserveOnly"),
                None,
            )),
            ok(R::No("NotFound"), "Observed", Requeue::Resync),
        ),
        case(
            "success after a terminal failure: replaces both conditions",
            Some(carried(
                failing("InvalidSpec", "invalid spec: x", 1, 900),
                1,
                None,
            )),
            Applied(available()),
            ok(R::Yes("Available"), "ReconcileSuccess", Requeue::Resync),
        ),
        // --- terminal failures: told once, retried only when the object changes ---------------
        case(
            "invalid spec: both False, one Warning, await a change",
            None,
            Failed(Error::InvalidSpec("spec.bucketName is too short".into())),
            Want {
                message: "invalid spec: spec.bucketName is too short",
                ..terminal("InvalidSpec", false)
            },
        ),
        case(
            "the same invalid spec reconciled again (an annotation edit): no second Warning",
            Some(carried(
                failing(
                    "InvalidSpec",
                    "invalid spec: spec.bucketName is too short",
                    1,
                    900,
                ),
                1,
                None,
            )),
            Failed(Error::InvalidSpec("spec.bucketName is too short".into())),
            terminal("InvalidSpec", true),
        ),
        case(
            "another invalid spec: its own Warning",
            Some(carried(
                failing(
                    "InvalidSpec",
                    "invalid spec: spec.bucketName is too short",
                    1,
                    900,
                ),
                2,
                None,
            )),
            Failed(Error::InvalidSpec(
                "spec.region \"mars-1\" is not an AWS region".into(),
            )),
            Want {
                message: "mars-1",
                ..terminal("InvalidSpec", false)
            },
        ),
        case(
            "terminal overrides a Ready=True of the same generation: the resource is not as asked",
            ready_before(),
            Failed(Error::InvalidSpec("x".into())),
            terminal("InvalidSpec", false),
        ),
        case(
            "name taken by a resource nobody owns: tells how to adopt it",
            None,
            Failed(Error::AlreadyExists(WHAT.into())),
            Want {
                message: "kaws.io/adopt",
                ..terminal("AlreadyExists", false)
            },
        ),
        case(
            "owned by another object: never touched, told once",
            None,
            Failed(Error::OwnedByOther {
                resource: WHAT.into(),
                owner: "cluster c, namespace n, object o".into(),
            }),
            terminal("OwnedByOther", false),
        ),
        case(
            "access denied: retrying with the same credentials cannot help",
            None,
            Failed(Error::AccessDenied {
                operation: "CreateBucket".into(),
                message: "not authorized".into(),
            }),
            terminal("AccessDenied", false),
        ),
        case(
            "AWS rejects the request as invalid: AwsError, terminal",
            None,
            Failed(Error::AwsRejected {
                operation: "CreateBucket".into(),
                message: "InvalidBucketName".into(),
            }),
            terminal("AwsError", false),
        ),
        case(
            "a connection Secret owned by another object: refused, told once",
            None,
            Failed(Error::SecretOwnedByOther {
                secret: "db-conn".into(),
                owner: "DBInstance \"other\"".into(),
            }),
            terminal("SecretOwnedByOther", false),
        ),
        // --- transient failures: retried, Ready kept when it describes this generation --------
        case(
            "throttled while Ready: Ready stays, Synced says why, capped backoff",
            ready_before(),
            Failed(Error::Throttled {
                operation: "GetBucketTagging".into(),
            }),
            retrying(R::Keep, "Throttled", CAPPED),
        ),
        case(
            "throttled before anything was ever Ready: Ready=False with the reason",
            None,
            Failed(Error::Throttled {
                operation: "CreateBucket".into(),
            }),
            retrying(R::No("Throttled"), "Throttled", CAPPED),
        ),
        case(
            "throttled right after a spec change: a kept Ready=True would claim the change applied",
            ready_before(),
            Case::generation(
                2,
                Failed(Error::Throttled {
                    operation: "PutBucketVersioning".into(),
                }),
            ),
            retrying(R::No("Throttled"), "Throttled", CAPPED),
        ),
        case(
            "a 5xx or timeout while Ready: AwsError, Ready kept, capped backoff",
            ready_before(),
            Failed(Error::AwsTransient {
                operation: "HeadBucket".into(),
                message: "timeout".into(),
            }),
            retrying(R::Keep, "AwsError", CAPPED),
        ),
        case(
            "AWS busy with another change: fixed short cadence, no exponential backoff",
            ready_before(),
            Failed(Error::Busy {
                operation: "UpdateFunctionConfiguration".into(),
                message: "update in progress".into(),
            }),
            retrying(R::Keep, "Busy", Requeue::After(Duration::from_secs(5))),
        ),
        case(
            "blocked on a person (a non-empty bucket): slow fixed cadence",
            ready_before(),
            Failed(Error::Blocked {
                reason: "BucketNotEmpty",
                message: "the bucket is not empty".into(),
            }),
            retrying(
                R::Keep,
                "BucketNotEmpty",
                Requeue::After(Duration::from_secs(60)),
            ),
        ),
        case(
            "a referenced Secret missing at first: Ready=False, plain backoff (the watch wakes it)",
            None,
            Failed(Error::SecretNotFound {
                name: "db-password".into(),
                key: None,
            }),
            Want {
                message: "Secret \"db-password\" not found",
                ..retrying(R::No("SecretNotFound"), "SecretNotFound", BACKOFF)
            },
        ),
        case(
            "a referenced Secret deleted later: the running resource stays Ready",
            ready_before(),
            Failed(Error::SecretNotFound {
                name: "db-password".into(),
                key: Some("password".into()),
            }),
            Want {
                message: "has no key \"password\"",
                ..retrying(R::Keep, "SecretNotFound", BACKOFF)
            },
        ),
        case(
            "a referenced object not Ready: DependencyNotReady, backoff",
            None,
            Failed(Error::DependencyNotReady(
                "Bucket \"code\" is not Ready".into(),
            )),
            retrying(R::No("DependencyNotReady"), "DependencyNotReady", BACKOFF),
        ),
        case(
            "the same transient failure again: a Retrying Event (Events counts repeats into one)",
            Some(carried(
                failing("Throttled", "throttled by AWS during CreateBucket", 1, 900),
                1,
                None,
            )),
            Failed(Error::Throttled {
                operation: "CreateBucket".into(),
            }),
            retrying(R::Keep, "Throttled", CAPPED),
        ),
        case(
            "a transient failure after Ready=False Creating: that Ready stays",
            Some(carried(
                vec![
                    cond("Ready", false, "Creating", "being created", 1, 990),
                    cond("Synced", true, "ReconcileSuccess", "created", 1, 990),
                ],
                1,
                None,
            )),
            Failed(Error::AwsTransient {
                operation: "HeadBucket".into(),
                message: "connection reset".into(),
            }),
            retrying(R::Keep, "AwsError", CAPPED),
        ),
        case(
            "a Kubernetes API failure: plain backoff",
            ready_before(),
            Failed(Error::Kube(kube::Error::Api(Box::new(
                kube::core::Status::failure("etcdserver: request timed out", "Timeout")
                    .with_code(504),
            )))),
            retrying(R::Keep, "KubernetesError", BACKOFF),
        ),
        // --- failures with a grace period: transient for a while, then terminal ---------------
        case(
            "first failure of a role IAM has not propagated: the grace period starts now",
            None,
            Failed(rejected_with_grace()),
            Want {
                since: Some(NOW),
                ..retrying(R::No("InvalidRole"), "InvalidRole", BACKOFF)
            },
        ),
        case(
            "the same failure within the grace period: measured from the first one",
            Some(carried(failing("InvalidRole", "m", 1, 950), 1, None)),
            Failed(rejected_with_grace()),
            Want {
                since: Some(950),
                ..retrying(R::Keep, "InvalidRole", BACKOFF)
            },
        ),
        case(
            "past the grace period: terminal, the message says since when, one Warning",
            Some(carried(failing("InvalidRole", "m", 1, 800), 1, None)),
            Failed(rejected_with_grace()),
            Want {
                since: Some(800),
                message: "still failing 120s after the first failure",
                ..terminal("InvalidRole", false)
            },
        ),
        case(
            "past the grace period and already told: no second Warning",
            Some(carried(
                failing("InvalidRole", &expired_message(), 1, 800),
                1,
                None,
            )),
            Failed(rejected_with_grace()),
            Want {
                since: Some(800),
                ..terminal("InvalidRole", true)
            },
        ),
        case(
            "exactly at the end of the grace period: expired",
            Some(carried(failing("InvalidRole", "m", 1, NOW - 120), 1, None)),
            Failed(rejected_with_grace()),
            Want {
                since: Some(NOW - 120),
                ..terminal("InvalidRole", false)
            },
        ),
        case(
            "one second before the end: still retried",
            Some(carried(failing("InvalidRole", "m", 1, NOW - 119), 1, None)),
            Failed(rejected_with_grace()),
            Want {
                since: Some(NOW - 119),
                ..retrying(R::Keep, "InvalidRole", BACKOFF)
            },
        ),
        case(
            "a spec change starts a new grace period",
            Some(carried(failing("InvalidRole", "m", 1, 800), 1, None)),
            Case::generation(2, Failed(rejected_with_grace())),
            Want {
                since: Some(NOW),
                ..retrying(R::No("InvalidRole"), "InvalidRole", BACKOFF)
            },
        ),
        case(
            "a new reconcile-requested-at token starts a new grace period",
            Some(carried(failing("InvalidRole", "m", 1, 800), 1, None)),
            Case::token("after-fixing-the-role", Failed(rejected_with_grace())),
            Want {
                since: Some(NOW),
                ..retrying(R::Keep, "InvalidRole", BACKOFF)
            },
        ),
        case(
            "the same token as before keeps the grace period running",
            Some(carried(failing("InvalidRole", "m", 1, 800), 1, Some("t1"))),
            Case::token("t1", Failed(rejected_with_grace())),
            Want {
                since: Some(800),
                ..terminal("InvalidRole", false)
            },
        ),
        case(
            "another failure before this one: the grace period starts now",
            Some(carried(failing("DependencyNotReady", "m", 1, 10), 1, None)),
            Failed(rejected_with_grace()),
            Want {
                since: Some(NOW),
                ..retrying(R::Keep, "InvalidRole", BACKOFF)
            },
        ),
        case(
            "Synced=True before (it worked, then broke): the grace period starts now",
            ready_before(),
            Failed(rejected_with_grace()),
            Want {
                since: Some(NOW),
                ..retrying(R::Keep, "InvalidRole", BACKOFF)
            },
        ),
        // --- paused ---------------------------------------------------------------------------
        case(
            "paused: Synced=False Paused, Ready untouched (nothing observed), await a change",
            ready_before(),
            Paused { deleting: false },
            Want {
                ready: R::Keep,
                synced: (false, "Paused"),
                message: "reconciliation is paused by the annotation kaws.io/paused",
                event: None,
                requeue: Requeue::AwaitChange,
                since: None,
                reset_backoff: false,
                error: None,
            },
        ),
        case(
            "deletion paused: says the finalizer stays",
            ready_before(),
            Paused { deleting: true },
            Want {
                ready: R::Keep,
                synced: (false, "Paused"),
                message: "deletion of S3 bucket \"b\" is paused",
                event: None,
                requeue: Requeue::AwaitChange,
                since: None,
                reset_backoff: false,
                error: None,
            },
        ),
        // --- deletion -------------------------------------------------------------------------
        case(
            "delete accepted, AWS still deleting: not a failure, no Event, poll every 5 s",
            ready_before(),
            Cleanup(Error::StillDeleting(WHAT.into())),
            Want {
                ready: R::No("Deleting"),
                synced: (true, "Deleting"),
                message: "",
                event: None,
                requeue: Requeue::After(Duration::from_secs(5)),
                since: None,
                reset_backoff: false,
                error: None,
            },
        ),
        case(
            "delete blocked by a non-empty bucket: Warning, slow cadence, finalizer stays",
            ready_before(),
            Cleanup(Error::Blocked {
                reason: "BucketNotEmpty",
                message: "the bucket is not empty".into(),
            }),
            Want {
                ready: R::No("BucketNotEmpty"),
                synced: (false, "BucketNotEmpty"),
                message: "not empty",
                event: Some((Severity::Warning, "BucketNotEmpty")),
                requeue: Requeue::After(Duration::from_secs(60)),
                since: None,
                reset_backoff: false,
                error: Some("BucketNotEmpty"),
            },
        ),
        case(
            "delete throttled: Warning, capped backoff",
            ready_before(),
            Cleanup(Error::Throttled {
                operation: "DeleteBucket".into(),
            }),
            Want {
                ready: R::No("Throttled"),
                synced: (false, "Throttled"),
                message: "",
                event: Some((Severity::Warning, "Throttled")),
                requeue: CAPPED,
                since: None,
                reset_backoff: false,
                error: Some("Throttled"),
            },
        ),
        case(
            "delete denied: terminal until the object (or the annotation) changes",
            ready_before(),
            Cleanup(Error::AccessDenied {
                operation: "DeleteBucket".into(),
                message: "not authorized".into(),
            }),
            Want {
                ready: R::No("AccessDenied"),
                synced: (false, "AccessDenied"),
                message: "",
                event: Some((Severity::Warning, "AccessDenied")),
                requeue: Requeue::AwaitChange,
                since: None,
                reset_backoff: false,
                error: Some("AccessDenied"),
            },
        ),
    ]
}

impl Case {
    /// An outcome seen at another generation than the carried status describes.
    fn generation(generation: i64, outcome: Out) -> (i64, Option<&'static str>, Out) {
        (generation, None, outcome)
    }
    /// An outcome of a reconcile that handles a new `kaws.io/reconcile-requested-at` token.
    fn token(token: &'static str, outcome: Out) -> (i64, Option<&'static str>, Out) {
        (1, Some(token), outcome)
    }
}

/// Lets a table row give just an outcome, or an outcome with its generation or token.
impl From<Out> for (i64, Option<&'static str>, Out) {
    fn from(outcome: Out) -> Self {
        (1, None, outcome)
    }
}

#[test]
fn every_case_decides_as_reasoned() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for c in cases {
        let Case {
            why,
            previous,
            token,
            generation,
            now,
            outcome,
            want,
        } = c;
        let mut current = previous.clone().unwrap_or_default();
        if token.is_some() {
            current.last_handled_reconcile_at = token.map(str::to_string);
        }
        let facts = Facts {
            previous: previous.as_ref(),
            current: &current,
            generation: Some(generation),
            now: at(now),
            what: WHAT,
        };
        let outcome = match &outcome {
            Out::Applied(p) => Outcome::Applied(p.clone()),
            Out::Failed(e) => Outcome::ApplyFailed(e),
            Out::Paused { deleting } => Outcome::Paused {
                deleting: *deleting,
            },
            Out::Cleanup(e) => Outcome::CleanupFailed(e),
        };
        let d = decide(&facts, outcome);
        let ready = match &d.ready {
            None => R::Keep,
            Some(s) if s.status => R::Yes(leak(&s.reason)),
            Some(s) => R::No(leak(&s.reason)),
        };
        assert_eq!(ready, want.ready, "{why}: Ready");
        if !want.synced.1.is_empty() {
            assert_eq!(
                (d.synced.status, d.synced.reason.as_str()),
                want.synced,
                "{why}: Synced"
            );
        } else {
            assert!(!d.synced.status, "{why}: Synced");
        }
        assert!(
            d.synced.message.contains(want.message),
            "{why}: Synced message {:?} lacks {:?}",
            d.synced.message,
            want.message
        );
        assert_eq!(
            d.event.as_ref().map(|e| (e.severity, e.reason.as_str())),
            want.event,
            "{why}: Event"
        );
        assert_eq!(d.requeue, want.requeue, "{why}: requeue");
        assert_eq!(d.synced_since, want.since.map(at), "{why}: grace start");
        assert_eq!(d.reset_backoff, want.reset_backoff, "{why}: backoff reset");
        assert_eq!(d.error, want.error, "{why}: error metric");
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[test]
fn errors_that_escape_a_reconcile_retry_by_the_same_rule() {
    let cases: Vec<(Error, Requeue)> = vec![
        (Error::Paused, Requeue::AwaitChange),
        (Error::InvalidSpec("x".into()), Requeue::AwaitChange),
        (
            Error::StillDeleting(WHAT.into()),
            Requeue::After(Duration::from_secs(5)),
        ),
        (
            Error::Throttled {
                operation: "x".into(),
            },
            CAPPED,
        ),
        (rejected_with_grace(), BACKOFF),
    ];
    for (err, want) in cases {
        assert_eq!(retry_after_error(&err), want, "{err}");
    }
}
