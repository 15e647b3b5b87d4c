//! The non-INVITE client transaction of RFC 3261 §17.1.2 (figure 6) as a pure state machine.
//!
//! Time is a parameter: `now` is any monotonic [`Duration`] (the binding passes the time since
//! its own epoch; tests pass a simulated clock). The caller asks [`NonInviteClient::deadline`]
//! when to call [`NonInviteClient::on_timer`] next, and feeds every matching response's status
//! code to [`NonInviteClient::on_response`].

use std::time::Duration;

/// RFC 3261 §17.1.2.2 / table 4 timer values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Cap of the retransmit interval, 4 s by default.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s (Timer K on unreliable transports).
    pub t4: Duration,
    /// Transaction timeout, 64·T1 by default.
    pub timer_f: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        let t1 = Duration::from_millis(500);
        Self {
            t1,
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_f: t1 * 64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What the transaction asks its user (the transport and the TU) to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the request again (Timer E).
    Retransmit,
    /// Pass a provisional response up (the TU may reset nothing; it is informational).
    Provisional(u16),
    /// Pass the final response up: the transaction's result.
    Final(u16),
    /// Timer F fired: the request timed out (treat as 408, §8.1.3.1).
    Timeout,
}

/// One non-INVITE client transaction.
#[derive(Clone, Debug)]
pub struct NonInviteClient {
    state: State,
    reliable: bool,
    timers: Timers,
    /// When Timer E fires next, and its current interval.
    timer_e: Option<(Duration, Duration)>,
    timer_f: Duration,
    timer_k: Option<Duration>,
    retransmissions: u32,
}

impl NonInviteClient {
    /// Starts the transaction at `now`; the caller has just sent the request once.
    pub fn new(reliable: bool, timers: Timers, now: Duration) -> Self {
        Self {
            state: State::Trying,
            reliable,
            timers,
            // §17.1.2.2: "If an unreliable transport is in use, the client transaction MUST set
            // timer E to fire in T1 seconds."
            timer_e: (!reliable).then(|| (now + timers.t1, timers.t1)),
            timer_f: now + timers.timer_f,
            timer_k: None,
            retransmissions: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn retransmissions(&self) -> u32 {
        self.retransmissions
    }

    /// The earliest time at which [`Self::on_timer`] has something to do, or `None` once
    /// terminated.
    pub fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Trying | State::Proceeding => Some(match self.timer_e {
                Some((e, _)) => e.min(self.timer_f),
                None => self.timer_f,
            }),
            State::Completed => self.timer_k,
            State::Terminated => None,
        }
    }

    /// Fires every timer due at `now`. Returns at most one action (Timer F wins over E).
    pub fn on_timer(&mut self, now: Duration) -> Option<Action> {
        match self.state {
            State::Trying | State::Proceeding => {
                if now >= self.timer_f {
                    self.state = State::Terminated;
                    return Some(Action::Timeout);
                }
                let (due, interval) = self.timer_e?;
                if now < due {
                    return None;
                }
                // Trying: double up to T2. Proceeding: fire every T2 (§17.1.2.2).
                let next = match self.state {
                    State::Trying => (interval * 2).min(self.timers.t2),
                    _ => self.timers.t2,
                };
                self.timer_e = Some((now + next, next));
                self.retransmissions += 1;
                Some(Action::Retransmit)
            }
            State::Completed => {
                if self.timer_k.is_some_and(|k| now >= k) {
                    self.state = State::Terminated;
                }
                None
            }
            State::Terminated => None,
        }
    }

    /// A response matching this transaction (§17.1.3) arrived. `None`: absorbed (duplicates in
    /// Completed, anything after termination).
    pub fn on_response(&mut self, status: u16, now: Duration) -> Option<Action> {
        match self.state {
            State::Trying | State::Proceeding if (100..200).contains(&status) => {
                // Figure 6: the pending Timer E still fires; from then on it uses T2.
                self.state = State::Proceeding;
                Some(Action::Provisional(status))
            }
            State::Trying | State::Proceeding if (200..700).contains(&status) => {
                self.timer_e = None;
                if self.reliable {
                    // Timer K is zero for reliable transports.
                    self.state = State::Terminated;
                } else {
                    self.state = State::Completed;
                    self.timer_k = Some(now + self.timers.t4);
                }
                Some(Action::Final(status))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives the machine with a simulated clock to Timer F; returns retransmission times.
    fn run_to_timeout(reliable: bool, timers: Timers) -> (Vec<u64>, u64) {
        let mut tx = NonInviteClient::new(reliable, timers, ms(0));
        let mut sent = Vec::new();
        for _ in 0..1000 {
            let Some(d) = tx.deadline() else { break };
            match tx.on_timer(d) {
                Some(Action::Retransmit) => sent.push(d.as_millis() as u64),
                Some(Action::Timeout) => return (sent, d.as_millis() as u64),
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no timeout")
    }

    #[test]
    fn udp_retransmits_at_rfc_intervals_then_times_out() {
        let (sent, timeout) = run_to_timeout(false, Timers::default());
        // E: 500, +1000, +2000, +4000, then every 4000 until F = 32000 (§17.1.2.2).
        assert_eq!(
            sent,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(timeout, 32000);
    }

    #[test]
    fn reliable_never_retransmits() {
        let (sent, timeout) = run_to_timeout(true, Timers::default());
        assert!(sent.is_empty());
        assert_eq!(timeout, 32000);
    }

    #[test]
    fn provisional_switches_to_t2_interval() {
        let mut tx = NonInviteClient::new(false, Timers::default(), ms(0));
        assert_eq!(tx.on_timer(ms(500)), Some(Action::Retransmit));
        assert_eq!(tx.on_response(100, ms(600)), Some(Action::Provisional(100)));
        assert_eq!(tx.state(), State::Proceeding);
        // The pending E (at 1500) still fires, then every T2 = 4000.
        assert_eq!(tx.deadline(), Some(ms(1500)));
        assert_eq!(tx.on_timer(ms(1500)), Some(Action::Retransmit));
        assert_eq!(tx.deadline(), Some(ms(5500)));
        assert_eq!(tx.on_timer(ms(5000)), None, "not yet due");
        assert_eq!(tx.on_response(200, ms(5200)), Some(Action::Final(200)));
        assert_eq!(tx.state(), State::Completed);
        // Duplicates of the final response are absorbed in Completed.
        assert_eq!(tx.on_response(200, ms(5300)), None);
        assert_eq!(tx.on_response(100, ms(5300)), None);
        assert_eq!(tx.deadline(), Some(ms(10200)), "Timer K = T4");
        assert_eq!(tx.on_timer(ms(10200)), None);
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.deadline(), None);
        assert_eq!(tx.retransmissions(), 2);
    }

    #[test]
    fn final_over_reliable_terminates_at_once() {
        let mut tx = NonInviteClient::new(true, Timers::default(), ms(0));
        assert_eq!(tx.on_response(404, ms(10)), Some(Action::Final(404)));
        assert_eq!(tx.state(), State::Terminated);
        assert_eq!(tx.on_timer(ms(40000)), None);
    }

    #[test]
    fn short_configured_timers() {
        let t = Timers {
            t1: ms(20),
            t2: ms(80),
            t4: ms(100),
            timer_f: ms(300),
        };
        let (sent, timeout) = run_to_timeout(false, t);
        assert_eq!(sent, vec![20, 60, 140, 220]);
        assert_eq!(timeout, 300);
    }
}
