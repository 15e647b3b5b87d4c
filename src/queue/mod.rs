//! The queue: decides what happens to a push after each attempt, and runs the dispatcher that
//! leases due pushes and hands them to bindings.
//!
//! Only this module decides about retries and records them (DESIGN §3). Bindings classify; the
//! queue turns a classification into the next state with [`decide`] (pure, unit-tested).

use std::time::Duration;

use crate::{
    binding::{BindingKind, DeviceBinding, Outcome},
    store::{Claimed, Next},
};

pub mod backoff;
pub mod dispatcher;

pub use dispatcher::{Dispatcher, DispatcherConfig};

pub use crate::domain::now_ms;

/// Which binding (and address) an attempt uses, or why there is none.
pub fn pick_binding(
    push: &Claimed,
    available: impl Fn(BindingKind) -> bool,
) -> Result<(u32, &DeviceBinding), String> {
    match push.binding_choice {
        Some(kind) => push
            .bindings
            .iter()
            .position(|b| b.kind() == kind)
            .map(|i| (i as u32, &push.bindings[i]))
            .ok_or_else(|| format!("target has no {kind} binding")),
        None => {
            let start = push.binding_index as usize;
            push.bindings
                .iter()
                .enumerate()
                .skip(start)
                .find(|(_, b)| available(b.kind()))
                .map(|(i, b)| (i as u32, b))
                .ok_or_else(|| "no configured binding left for this target".to_owned())
        }
    }
}

/// Parameters of [`decide`].
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

/// The next state after `outcome` of attempt `push.attempt` on the binding at `index`.
pub fn decide(
    push: &Claimed,
    index: u32,
    outcome: &Outcome,
    now_ms: i64,
    policy: RetryPolicy,
    jitter: f64,
) -> (Next, String) {
    let fallback = |reason: &str| {
        let next = index + 1;
        if push.binding_choice.is_none() && (next as usize) < push.bindings.len() {
            let kind = push.bindings[next as usize].kind();
            (
                Next::Fallback {
                    binding_index: next,
                },
                format!("{reason}; falling back to {kind}"),
            )
        } else {
            (Next::Failed, reason.to_owned())
        }
    };
    match outcome {
        Outcome::Delivered { detail } => (Next::Delivered, detail.clone()),
        Outcome::Accepted { detail, refs } => {
            (Next::Accepted { refs: refs.clone() }, detail.clone())
        }
        Outcome::Permanent { reason } | Outcome::Unsupported { reason } => fallback(reason),
        // A suspended route is not a failure: fall back under `auto` when another binding is
        // left, otherwise wait without counting the attempt (DESIGN §10.4).
        Outcome::Deferred {
            reason,
            retry_after,
        } => {
            let (next, detail) = fallback(reason);
            if matches!(next, Next::Fallback { .. }) {
                return (next, detail);
            }
            let at = now_ms + retry_after.as_millis() as i64;
            if at >= push.expires_at_ms {
                (
                    Next::Expired,
                    format!("{reason}; ttl passes before the next attempt"),
                )
            } else {
                (
                    Next::Defer { at_ms: at },
                    format!("{reason}; waiting {} ms", retry_after.as_millis()),
                )
            }
        }
        Outcome::Transient {
            reason,
            retry_after,
        } => {
            if push.attempt >= push.max_attempts {
                return fallback(&format!("{reason}; attempts exhausted ({})", push.attempt));
            }
            let mut delay = backoff::delay(push.attempt, policy.base, policy.max, jitter);
            if let Some(ra) = retry_after {
                delay = delay.max(*ra);
            }
            let at = now_ms + delay.as_millis() as i64;
            if at >= push.expires_at_ms {
                (
                    Next::Expired,
                    format!("{reason}; ttl passes before the next attempt"),
                )
            } else {
                (
                    Next::RetryAt { at_ms: at },
                    format!("{reason}; retry in {} ms", delay.as_millis()),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{ContentType, WapBearer};

    fn push(choice: Option<BindingKind>, attempt: u32) -> Claimed {
        Claimed {
            id: "p".into(),
            tenant: "t".into(),
            device_id: None,
            bindings: vec![
                DeviceBinding::Sip {
                    uri: "sip:a@b".parse().unwrap(),
                    gruu: None,
                },
                DeviceBinding::Wap {
                    msisdn: Some("+447700900123".parse().unwrap()),
                    bearer: WapBearer::Sms,
                    address: None,
                    secure: false,
                },
            ],
            binding_choice: choice,
            binding_index: 0,
            content_type: ContentType::DmXml,
            body: vec![],
            attempt,
            max_attempts: 3,
            created_at_ms: 0,
            expires_at_ms: 100_000,
            callback_url: None,
            bootstrap: None,
            taken_over_from: None,
        }
    }

    const P: RetryPolicy = RetryPolicy {
        base: Duration::from_millis(1000),
        max: Duration::from_secs(60),
    };

    #[test]
    fn deferred_waits_uncounted_or_falls_back_under_auto_never_fails() {
        let d = Outcome::Deferred {
            reason: "smsc a suspended".into(),
            retry_after: Duration::from_secs(5),
        };
        // Explicit binding: waits, even with every attempt used up.
        assert_eq!(
            decide(&push(Some(BindingKind::Sip), 3), 0, &d, 0, P, 0.0).0,
            Next::Defer { at_ms: 5000 }
        );
        // Under auto with a binding left: falls back.
        assert_eq!(
            decide(&push(None, 1), 0, &d, 0, P, 0.0).0,
            Next::Fallback { binding_index: 1 }
        );
        // Under auto on the last binding: waits.
        assert_eq!(
            decide(&push(None, 1), 1, &d, 0, P, 0.0).0,
            Next::Defer { at_ms: 5000 }
        );
        // Only the TTL ends the wait.
        assert_eq!(
            decide(&push(Some(BindingKind::Sip), 1), 0, &d, 96_000, P, 0.0).0,
            Next::Expired
        );
    }

    #[test]
    fn transient_retries_then_fails_or_falls_back() {
        let t = Outcome::Transient {
            reason: "HTTP 503".into(),
            retry_after: None,
        };
        assert_eq!(
            decide(&push(None, 1), 0, &t, 0, P, 0.0).0,
            Next::RetryAt { at_ms: 500 }
        );
        let ra = Outcome::Transient {
            reason: "x".into(),
            retry_after: Some(Duration::from_secs(5)),
        };
        assert_eq!(
            decide(&push(None, 1), 0, &ra, 0, P, 0.0).0,
            Next::RetryAt { at_ms: 5000 }
        );
        assert_eq!(
            decide(&push(None, 3), 0, &t, 0, P, 0.0).0,
            Next::Fallback { binding_index: 1 }
        );
        assert_eq!(
            decide(&push(Some(BindingKind::Sip), 3), 0, &t, 0, P, 0.0).0,
            Next::Failed
        );
        assert_eq!(
            decide(&push(None, 1), 0, &t, 99_900, P, 0.0).0,
            Next::Expired
        );
    }

    #[test]
    fn permanent_falls_back_only_under_auto() {
        let p = Outcome::Permanent {
            reason: "404".into(),
        };
        assert_eq!(
            decide(&push(None, 1), 0, &p, 0, P, 0.0).0,
            Next::Fallback { binding_index: 1 }
        );
        assert_eq!(decide(&push(None, 1), 1, &p, 0, P, 0.0).0, Next::Failed);
        assert_eq!(
            decide(&push(Some(BindingKind::Sip), 1), 0, &p, 0, P, 0.0).0,
            Next::Failed
        );
    }

    #[test]
    fn pick_respects_choice_and_availability() {
        let p = push(Some(BindingKind::Wap), 1);
        assert_eq!(pick_binding(&p, |_| true).unwrap().0, 1);
        let p = push(None, 1);
        assert_eq!(pick_binding(&p, |k| k == BindingKind::Wap).unwrap().0, 1);
        assert!(pick_binding(&p, |_| false).is_err());
        assert!(pick_binding(&push(Some(BindingKind::Http), 1), |_| true).is_err());
    }
}
