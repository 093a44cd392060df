//! The step search over offered rates: grow geometrically while probes pass,
//! then bisect (geometrically) between the best pass and the lowest failure
//! until they are close enough or the probe budget is spent.
//!
//! Pure: the caller runs each probe and records its verdict, so the search is
//! unit-tested without a system under test.

/// Where a search stands.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSearch {
    /// First rate probed.
    start: f64,
    /// Factor between successive rates while every probe passes.
    growth: f64,
    /// Stop once the lowest failure is within this ratio above the best pass
    /// (e.g. 0.1: within 10%).
    precision: f64,
    /// Probes allowed in all.
    max_probes: usize,
    /// Lowest rate worth probing: below it the search gives up.
    min_rate: f64,
    probes: usize,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
}

impl StepSearch {
    /// A search starting at `start` reports/s, multiplying by `growth` (> 1)
    /// while probes pass, with at most `max_probes` probes.
    pub fn new(start: f64, growth: f64, precision: f64, max_probes: usize) -> StepSearch {
        StepSearch {
            start: start.max(1.0),
            growth: growth.max(1.01),
            precision: precision.max(0.001),
            max_probes,
            min_rate: (start / 64.0).max(1.0),
            probes: 0,
            best_pass: None,
            lowest_fail: None,
        }
    }

    /// The next rate to probe, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.probes >= self.max_probes {
            return None;
        }
        match (self.best_pass, self.lowest_fail) {
            (None, None) => Some(self.start),
            (Some(pass), None) => Some(pass * self.growth),
            (None, Some(fail)) => {
                let lower = fail / self.growth;
                (lower >= self.min_rate).then_some(lower)
            }
            (Some(pass), Some(fail)) => {
                (fail > pass * (1.0 + self.precision)).then(|| (pass * fail).sqrt())
            }
        }
    }

    /// Records the verdict of a probe at `rate`.
    ///
    /// Measurements are noisy: a pass above an earlier failure discards that
    /// failure (and a failure below an earlier pass discards the pass), so the
    /// search follows the latest evidence instead of stopping on a
    /// contradiction.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.probes += 1;
        if passed {
            self.best_pass = Some(self.best_pass.map_or(rate, |p| p.max(rate)));
            if self.lowest_fail.is_some_and(|f| f <= rate) {
                self.lowest_fail = None;
            }
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |f| f.min(rate)));
            if self.best_pass.is_some_and(|p| p >= rate) {
                self.best_pass = None;
            }
        }
    }

    /// The highest rate that passed, once the search is over (or so far).
    pub fn best(&self) -> Option<f64> {
        self.best_pass
    }

    /// The lowest rate that failed, if any did.
    pub fn lowest_failure(&self) -> Option<f64> {
        self.lowest_fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a system that passes every rate up to `limit`.
    fn search(mut s: StepSearch, limit: f64) -> (StepSearch, Vec<f64>) {
        let mut probed = Vec::new();
        while let Some(rate) = s.next_rate() {
            probed.push(rate);
            s.record(rate, rate <= limit);
        }
        (s, probed)
    }

    #[test]
    fn grows_then_bisects_to_the_limit() {
        let (s, probed) = search(StepSearch::new(1000.0, 2.0, 0.05, 20), 5000.0);
        assert_eq!(&probed[..4], &[1000.0, 2000.0, 4000.0, 8000.0]);
        let best = s.best().unwrap();
        let fail = s.lowest_failure().unwrap();
        assert!(best <= 5000.0 && best > 5000.0 / 1.05, "{best}");
        assert!(fail > 5000.0 && fail <= best * 1.05, "{fail}");
    }

    #[test]
    fn shrinks_when_the_first_probe_fails() {
        let (s, probed) = search(StepSearch::new(1000.0, 2.0, 0.05, 20), 300.0);
        assert_eq!(&probed[..3], &[1000.0, 500.0, 250.0]);
        let best = s.best().unwrap();
        assert!(best <= 300.0 && best > 300.0 / 1.05, "{best}");
    }

    #[test]
    fn respects_the_probe_budget() {
        let (s, probed) = search(StepSearch::new(1000.0, 2.0, 0.01, 3), 1e9);
        assert_eq!(probed, vec![1000.0, 2000.0, 4000.0]);
        assert_eq!(s.best(), Some(4000.0));
        assert_eq!(s.lowest_failure(), None);
    }

    #[test]
    fn gives_up_when_nothing_passes() {
        let (s, probed) = search(StepSearch::new(1000.0, 2.0, 0.05, 100), 0.0);
        assert_eq!(s.best(), None);
        assert!(probed.len() <= 8, "{probed:?}");
    }

    #[test]
    fn a_contradicting_pass_reopens_the_search() {
        let mut s = StepSearch::new(1000.0, 2.0, 0.05, 10);
        s.record(1000.0, true);
        s.record(2000.0, false);
        s.record(2500.0, true);
        assert_eq!(s.lowest_failure(), None);
        assert_eq!(s.next_rate(), Some(5000.0));
    }
}
