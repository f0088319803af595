//! Which message goes to which stage next: the micro-batch schedule of one step, with no I/O.
//!
//! The driver tells the plan what came back ([`StepPlan::forward_answered`],
//! [`StepPlan::backward_answered`]) and sends what [`StepPlan::next_actions`] says. A stage
//! handles its messages in the order they arrive, so holding a message back here is how a
//! schedule decides what a stage does next.

use std::collections::VecDeque;

/// The order of forward and backward passes within a step. Both are synchronous (every
/// micro-batch's gradient goes into the same step), so both give the same weights; they
/// differ in how many micro-batches a stage holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// GPipe: every micro-batch forward through every stage, then every one backward. A stage
    /// holds all `M` micro-batches' inputs at the flush.
    GPipe,
    /// One forward, one backward (PipeDream-Flush): stage `s` of `S` runs at most `S - s`
    /// micro-batches ahead of its backward passes, so it holds at most that many inputs, and
    /// the last stage alternates forward and backward. The bubble is GPipe's,
    /// `(S - 1) / (M + S - 1)`.
    OneFOneB,
}

impl Schedule {
    /// The name the command line uses: `gpipe` or `1f1b`.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::GPipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        match s {
            "gpipe" => Ok(Schedule::GPipe),
            "1f1b" => Ok(Schedule::OneFOneB),
            _ => Err(format!("{s:?}: expected gpipe or 1f1b")),
        }
    }
}

/// What to send next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Micro-batch `micro`'s input to `stage`.
    Forward { stage: usize, micro: usize },
    /// Micro-batch `micro`'s output gradient (targets, for the last stage) to `stage`.
    Backward { stage: usize, micro: usize },
    /// The end of the step to `stage`: every backward pass has been sent to it.
    Step { stage: usize },
}

#[derive(Debug, Default)]
struct StagePlan {
    /// Micro-batches whose input (or output gradient) is here and not yet sent.
    forward_ready: VecDeque<usize>,
    backward_ready: VecDeque<usize>,
    /// Sent and not yet answered, in the order sent (a stage answers in that order).
    forward_owed: VecDeque<usize>,
    backward_owed: VecDeque<usize>,
    forwards_sent: usize,
    forwards_answered: usize,
    backwards_sent: usize,
    step_sent: bool,
}

/// One step's schedule over `stages` stages and `micro_batches` micro-batches.
#[derive(Debug)]
pub(crate) struct StepPlan {
    schedule: Schedule,
    micro_batches: usize,
    stages: Vec<StagePlan>,
    backwards_done: usize,
}

impl StepPlan {
    pub(crate) fn new(schedule: Schedule, stages: usize, micro_batches: usize) -> StepPlan {
        let mut plans: Vec<StagePlan> = (0..stages).map(|_| StagePlan::default()).collect();
        plans[0].forward_ready = (0..micro_batches).collect();
        StepPlan {
            schedule,
            micro_batches,
            stages: plans,
            backwards_done: 0,
        }
    }

    /// What may be sent now; each action is taken as sent.
    pub(crate) fn next_actions(&mut self) -> Vec<Action> {
        let count = self.stages.len();
        let mut actions = Vec::new();
        for (stage, plan) in self.stages.iter_mut().enumerate() {
            // GPipe's flush: no backward pass until the last stage has every forward done.
            let backward_open = match self.schedule {
                Schedule::GPipe => {
                    stage + 1 < count || plan.forwards_answered == self.micro_batches
                }
                Schedule::OneFOneB => true,
            };
            if backward_open {
                while let Some(micro) = plan.backward_ready.pop_front() {
                    plan.backward_owed.push_back(micro);
                    plan.backwards_sent += 1;
                    actions.push(Action::Backward { stage, micro });
                }
            }
            let ahead = match self.schedule {
                Schedule::GPipe => self.micro_batches,
                Schedule::OneFOneB => count - stage,
            };
            while plan.forwards_sent - plan.backwards_sent < ahead {
                let Some(micro) = plan.forward_ready.pop_front() else {
                    break;
                };
                plan.forward_owed.push_back(micro);
                plan.forwards_sent += 1;
                actions.push(Action::Forward { stage, micro });
            }
            if plan.backwards_sent == self.micro_batches && !plan.step_sent {
                plan.step_sent = true;
                actions.push(Action::Step { stage });
            }
        }
        actions
    }

    /// `stage` answered its oldest forward pass; returns the micro-batch.
    pub(crate) fn forward_answered(&mut self, stage: usize) -> Option<usize> {
        let micro = self.stages[stage].forward_owed.pop_front()?;
        self.stages[stage].forwards_answered += 1;
        match self.stages.get_mut(stage + 1) {
            Some(next) => next.forward_ready.push_back(micro),
            None => self.stages[stage].backward_ready.push_back(micro),
        }
        Some(micro)
    }

    /// `stage` answered its oldest backward pass; returns the micro-batch.
    pub(crate) fn backward_answered(&mut self, stage: usize) -> Option<usize> {
        let micro = self.stages[stage].backward_owed.pop_front()?;
        match stage.checked_sub(1) {
            Some(previous) => self.stages[previous].backward_ready.push_back(micro),
            None => self.backwards_done += 1,
        }
        Some(micro)
    }

    /// Passes `stage` has been sent and not answered.
    pub(crate) fn owed(&self, stage: usize) -> usize {
        let plan = &self.stages[stage];
        plan.forward_owed.len() + plan.backward_owed.len()
    }

    /// Whether every micro-batch has come back through the first stage.
    pub(crate) fn backwards_done(&self) -> bool {
        self.backwards_done == self.micro_batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a plan to the end with every stage answering at once, in order; returns what
    /// each stage was sent, as `F3`, `B3` and `S`.
    fn trace(schedule: Schedule, stages: usize, micro: usize) -> Vec<Vec<String>> {
        let mut plan = StepPlan::new(schedule, stages, micro);
        let mut seen = vec![Vec::new(); stages];
        let mut queue = VecDeque::new();
        loop {
            for action in plan.next_actions() {
                queue.push_back(action);
            }
            let Some(action) = queue.pop_front() else {
                break;
            };
            match action {
                Action::Forward { stage, micro } => {
                    seen[stage].push(format!("F{micro}"));
                    assert_eq!(plan.forward_answered(stage), Some(micro));
                }
                Action::Backward { stage, micro } => {
                    seen[stage].push(format!("B{micro}"));
                    assert_eq!(plan.backward_answered(stage), Some(micro));
                }
                Action::Step { stage } => seen[stage].push("S".into()),
            }
        }
        assert!(plan.backwards_done());
        seen
    }

    #[test]
    fn gpipe_runs_every_forward_before_any_backward() {
        let seen = trace(Schedule::GPipe, 3, 4);
        for stage in &seen {
            assert_eq!(
                stage.join(" "),
                "F0 F1 F2 F3 B0 B1 B2 B3 S",
                "every stage: all forwards, then all backwards in order"
            );
        }
    }

    #[test]
    fn one_f_one_b_keeps_each_stage_at_most_stages_minus_s_ahead() {
        let seen = trace(Schedule::OneFOneB, 3, 4);
        assert_eq!(seen[2].join(" "), "F0 B0 F1 B1 F2 B2 F3 B3 S");
        for (s, stage) in seen.iter().enumerate() {
            let mut ahead = 0i32;
            for m in stage {
                ahead += match &m[..1] {
                    "F" => 1,
                    "B" => -1,
                    _ => 0,
                };
                assert!(ahead <= (3 - s) as i32, "stage {s}: {stage:?}");
            }
            assert_eq!(stage.last().map(String::as_str), Some("S"));
        }
    }

    #[test]
    fn schedule_names_parse_back() {
        for s in [Schedule::GPipe, Schedule::OneFOneB] {
            assert_eq!(s.name().parse::<Schedule>(), Ok(s));
        }
        assert!("pipedream".parse::<Schedule>().is_err());
    }
}
