//! A visit's progress through its site's funnels: how many steps of each
//! it has reached, in order. This module owns the one rule of a step: step
//! n counts once a hit reaches its goal after an earlier hit of the same
//! visit reached step n − 1; a hit reaching a later step out of order
//! counts nothing, one hit moves a funnel on by one step at most, and no
//! step counts twice in a visit. Progress is a number per funnel, kept
//! with the visit in memory (`sessions`); only "one more visit reached
//! step n" leaves, never which pages or in what order. Pure: no I/O, no
//! clock.

use crate::goal::{Funnel, Goal};

/// Moves `progress` (steps reached, one per funnel, in the order of
/// `funnels`) on for a hit named `event` on `page`, and calls `reached`
/// with (funnel index, step number from 1) for each step newly reached.
pub fn advance(
    progress: &mut [u8],
    funnels: &[Funnel],
    goals: &[Goal],
    event: &str,
    page: &str,
    mut reached: impl FnMut(usize, u8),
) {
    for (i, (done, funnel)) in progress.iter_mut().zip(funnels).enumerate() {
        let Some(&next) = funnel.steps.get(usize::from(*done)) else {
            continue;
        };
        if goals.get(next).is_some_and(|g| g.is_reached(event, page)) {
            *done += 1;
            reached(i, *done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goal::PAGEVIEW;

    /// Goals: 0 = page /a*, 1 = event Signup, 2 = page /merci; one funnel
    /// a → Signup → merci, and another merci → a.
    fn site() -> (Vec<Goal>, Vec<Funnel>) {
        let goals = vec![
            Goal::page("/a*", None).unwrap(),
            Goal::event("Signup", None).unwrap(),
            Goal::page("/merci", None).unwrap(),
        ];
        let funnels = vec![
            Funnel {
                name: "f".into(),
                steps: vec![0, 1, 2],
            },
            Funnel {
                name: "g".into(),
                steps: vec![2, 0],
            },
        ];
        (goals, funnels)
    }

    /// Feeds one visit's hits (event, page); returns the steps reached as
    /// (funnel, step), in order.
    fn check(hits: &[(&str, &str)], expected: &[(usize, u8)]) {
        let (goals, funnels) = site();
        let mut progress = vec![0u8; funnels.len()];
        let mut out = Vec::new();
        for (event, page) in hits {
            advance(&mut progress, &funnels, &goals, event, page, |f, s| {
                out.push((f, s))
            });
        }
        assert_eq!(out, expected, "{hits:?}");
    }

    #[test]
    fn steps_count_in_order() {
        check(
            &[(PAGEVIEW, "/a/1"), ("Signup", "/a/1"), (PAGEVIEW, "/merci")],
            &[(0, 1), (0, 2), (0, 3), (1, 1)],
        );
    }

    #[test]
    fn a_later_step_reached_out_of_order_counts_nothing() {
        // Signup before /a: not step 2; /merci starts funnel g only.
        check(
            &[("Signup", "/"), (PAGEVIEW, "/merci"), (PAGEVIEW, "/a")],
            &[(1, 1), (0, 1), (1, 2)],
        );
        // Signup again after /a counts then.
        check(
            &[("Signup", "/"), (PAGEVIEW, "/a"), ("Signup", "/a")],
            &[(0, 1), (0, 2)],
        );
    }

    #[test]
    fn each_step_counts_once_per_visit() {
        check(
            &[
                (PAGEVIEW, "/a"),
                (PAGEVIEW, "/a"),
                ("Signup", "/a"),
                ("Signup", "/a"),
                (PAGEVIEW, "/a"),
            ],
            &[(0, 1), (0, 2)],
        );
    }

    #[test]
    fn one_hit_moves_a_funnel_one_step_at_most() {
        // Two consecutive steps reached by the same pageview.
        let goals = vec![
            Goal::page("/a*", None).unwrap(),
            Goal::page("/ab", None).unwrap(),
        ];
        let funnels = vec![Funnel {
            name: "f".into(),
            steps: vec![0, 1],
        }];
        let mut progress = vec![0u8];
        let mut out = Vec::new();
        for page in ["/ab", "/ab", "/ab"] {
            advance(&mut progress, &funnels, &goals, PAGEVIEW, page, |f, s| {
                out.push((f, s))
            });
        }
        assert_eq!(out, [(0, 1), (0, 2)]);
    }

    #[test]
    fn engagement_and_other_events_reach_nothing() {
        check(&[("", "/a"), ("Other", "/a"), (PAGEVIEW, "/b")], &[]);
    }
}
