//! Choosing a node: pure functions over what the client knows of each
//! node (may its breaker take a call, calls in flight, weight).
//!
//! Why not tower's `balance::p2c`: it drops a service whose `poll_ready`
//! fails and only knows "least loaded of two at random"; a node whose
//! breaker is open must stay in the set (it comes back half-open), and
//! round robin and weights are asked for too. With a handful of nodes an
//! exact minimum costs nothing.

/// One node as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<L = usize> {
    /// Its breaker would let a call through now.
    pub eligible: bool,
    /// Calls in flight.
    pub load: L,
    pub weight: u32,
}

/// The first eligible node at or after `turn` (mod n).
pub fn round_robin<L>(c: &[Candidate<L>], turn: usize) -> Option<usize> {
    let n = c.len();
    (0..n).map(|k| (turn + k) % n).find(|&i| c.get(i).is_some_and(|c| c.eligible))
}

/// The eligible node with the fewest calls in flight; ties go to the first
/// at or after `turn`, so equal nodes share the traffic.
pub fn least_outstanding<L: Ord + Copy>(c: &[Candidate<L>], turn: usize) -> Option<usize> {
    let n = c.len();
    (0..n).map(|k| (turn + k) % n).filter(|&i| c.get(i).is_some_and(|c| c.eligible)).min_by_key(|&i| c.get(i).map(|c| c.load))
}

/// Smooth weighted round robin (nginx's): each eligible node gains its
/// weight, the richest is chosen and pays the total. `current` keeps the
/// running credits between calls. Weight 0 nodes get traffic only when
/// no weighted node is eligible.
pub fn weighted<L>(c: &[Candidate<L>], current: &mut Vec<i64>, turn: usize) -> Option<usize> {
    current.resize(c.len(), 0);
    let total: i64 = c.iter().filter(|c| c.eligible).map(|c| i64::from(c.weight)).sum();
    if total == 0 {
        return round_robin(c, turn);
    }
    let mut best: Option<(usize, i64)> = None;
    for (i, (cand, cur)) in c.iter().zip(current.iter_mut()).enumerate() {
        if !cand.eligible || cand.weight == 0 {
            continue;
        }
        *cur += i64::from(cand.weight);
        if best.is_none_or(|(_, b)| *cur > b) {
            best = Some((i, *cur));
        }
    }
    let (i, _) = best?;
    if let Some(cur) = current.get_mut(i) {
        *cur -= total;
    }
    Some(i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cands(e: &[bool], load: &[usize], w: &[u32]) -> Vec<Candidate> {
        e.iter().zip(load).zip(w).map(|((&eligible, &load), &weight)| Candidate { eligible, load, weight }).collect()
    }

    #[test]
    fn round_robin_skips_refusing_nodes() {
        let c = cands(&[true, false, true], &[0; 3], &[1; 3]);
        let picks: Vec<_> = (0..6).map(|t| round_robin(&c, t).unwrap()).collect();
        assert_eq!(picks, [0, 2, 2, 0, 2, 2]);
        assert_eq!(round_robin(&cands(&[false; 2], &[0; 2], &[1; 2]), 0), None);
        assert_eq!(round_robin::<usize>(&[], 3), None);
    }

    #[test]
    fn least_outstanding_takes_the_minimum_and_rotates_ties() {
        let c = cands(&[true, true, true], &[5, 2, 9], &[1; 3]);
        assert_eq!(least_outstanding(&c, 0), Some(1));
        let c = cands(&[true, false, true], &[3, 0, 3], &[1; 3]);
        assert_eq!(least_outstanding(&c, 0), Some(0));
        assert_eq!(least_outstanding(&c, 1), Some(2));
    }

    #[test]
    fn weighted_shares_follow_weights_and_spread_out() {
        let c = cands(&[true, true, true], &[0; 3], &[5, 1, 1]);
        let mut cur = Vec::new();
        let picks: Vec<_> = (0..7).map(|t| weighted(&c, &mut cur, t).unwrap()).collect();
        // nginx's example sequence for 5/1/1.
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for t in 0..700 {
            counts[weighted(&c, &mut cur, t).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
        // A refused node's share goes to the others.
        let c = cands(&[false, true, true], &[0; 3], &[5, 1, 3]);
        let mut counts = [0; 3];
        for t in 0..400 {
            counts[weighted(&c, &mut cur, t).unwrap()] += 1;
        }
        assert_eq!(counts, [0, 100, 300]);
        // Only weight-0 nodes left: in turn.
        let c = cands(&[false, true, true], &[0; 3], &[5, 0, 0]);
        assert!(weighted(&c, &mut cur, 0).is_some());
    }
}
