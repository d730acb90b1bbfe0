//! Summaries of repeated measurements: every figure the report shows is the median of its
//! runs, shown with their min and max; the samples themselves go into the JSON.

use serde::Serialize;

/// The runs of one measurement, and their median, min and max.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every run's figure, in the order they ran.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples` (at least one; NaNs are not expected and sort last).
    ///
    /// # Panics
    /// On an empty slice: a figure without a run must never be reported.
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "a figure needs at least one run");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            samples: samples.to_vec(),
        }
    }

    pub fn runs(&self) -> usize {
        self.samples.len()
    }

    /// `median (min–max)` with `decimals` digits after the point.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }

    /// The same summary with every sample scaled by `factor` (e.g. fractions to percent).
    pub fn scaled(&self, factor: f64) -> Summary {
        Summary::of(&self.samples.iter().map(|s| s * factor).collect::<Vec<_>>())
    }
}

/// Element-wise `a - b` of two sample lists taken in the same runs (run `i` of each).
pub fn paired_difference(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// Element-wise `a / b` of two sample lists taken in the same runs.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_number_of_runs_is_the_middle_one() {
        let s = Summary::of(&[9.0, 1.0, 5.0, 7.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (5.0, 1.0, 9.0));
        assert_eq!(s.samples, vec![9.0, 1.0, 5.0, 7.0, 3.0]);
        assert_eq!(s.runs(), 5);
    }

    #[test]
    fn the_median_of_an_even_number_of_runs_is_the_mean_of_the_middle_two() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn one_run_is_its_own_median_min_and_max() {
        let s = Summary::of(&[42.0]);
        assert_eq!((s.median, s.min, s.max), (42.0, 42.0, 42.0));
    }

    #[test]
    #[should_panic(expected = "at least one run")]
    fn no_run_is_no_figure() {
        Summary::of(&[]);
    }

    #[test]
    fn paired_figures_are_taken_run_by_run() {
        assert_eq!(
            paired_difference(&[10.0, 12.0], &[4.0, 3.0]),
            vec![6.0, 9.0]
        );
        assert_eq!(paired_ratio(&[10.0, 12.0], &[4.0, 3.0]), vec![2.5, 4.0]);
        let net = Summary::of(&paired_difference(&[10.0, 12.0, 11.0], &[4.0, 3.0, 6.0]));
        assert_eq!((net.median, net.min, net.max), (6.0, 5.0, 9.0));
    }

    #[test]
    fn shown_as_median_then_range() {
        assert_eq!(Summary::of(&[1.234, 2.0, 0.5]).show(1), "1.2 (0.5–2.0)");
        assert_eq!(
            Summary::of(&[0.25, 0.5]).scaled(100.0).show(0),
            "38 (25–50)"
        );
    }
}
