//! `Ready` / `Synced` conditions: setting them without losing `lastTransitionTime`.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// One condition as the reconciler decides it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl ConditionState {
    pub fn new(status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
    pub fn yes(reason: &str, message: impl Into<String>) -> Self {
        Self::new(true, reason, message)
    }
    pub fn no(reason: &str, message: impl Into<String>) -> Self {
        Self::new(false, reason, message)
    }
}

/// Sets condition `type_` in `conditions`. `lastTransitionTime` changes only when the status
/// changes, so `kubectl wait` and GitOps health checks see real transitions only.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    state: &ConditionState,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if state.status { "True" } else { "False" }.to_string();
    let message = if state.message.is_empty() {
        state.reason.clone()
    } else {
        state.message.clone()
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = state.reason.clone();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: state.reason.clone(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Whether condition `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn transition_time_is_kept_when_status_does_not_change() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            "Ready",
            &ConditionState::no("Creating", "wait"),
            Some(1),
            at(10),
        );
        set_condition(
            &mut conds,
            "Ready",
            &ConditionState::no("Updating", "still"),
            Some(2),
            at(20),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(at(10)));
        assert_eq!(conds[0].reason, "Updating");
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            "Ready",
            &ConditionState::no("Creating", ""),
            Some(1),
            at(10),
        );
        set_condition(
            &mut conds,
            "Ready",
            &ConditionState::yes("Available", ""),
            Some(1),
            at(30),
        );
        assert_eq!(conds[0].last_transition_time, Time(at(30)));
        assert_eq!(conds[0].status, "True");
        assert_eq!(
            conds[0].message, "Available",
            "empty message falls back to the reason"
        );
        assert!(is_true(&conds, "Ready"));
        assert!(!is_true(&conds, "Synced"));
    }
}
