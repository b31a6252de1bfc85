//! Classification metrics: accuracy, per-route precision / recall / F1, confusion matrix.

use serde::Serialize;

/// Metrics of one classifier on one labelled set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub routes: Vec<String>,
    pub accuracy: f64,
    /// Per route: (precision, recall, F1, support).
    pub per_route: Vec<(f64, f64, f64, usize)>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// Scores predictions against labels (both index `routes`).
pub fn evaluate(routes: &[String], labels: &[usize], predictions: &[usize]) -> Evaluation {
    let n = routes.len();
    let mut confusion = vec![vec![0usize; n]; n];
    for (&y, &p) in labels.iter().zip(predictions) {
        confusion[y][p] += 1;
    }
    let correct: usize = (0..n).map(|i| confusion[i][i]).sum();
    let per_route = (0..n)
        .map(|i| {
            let tp = confusion[i][i] as f64;
            let predicted: usize = (0..n).map(|t| confusion[t][i]).sum();
            let support: usize = confusion[i].iter().sum();
            let precision = if predicted == 0 {
                0.0
            } else {
                tp / predicted as f64
            };
            let recall = if support == 0 {
                0.0
            } else {
                tp / support as f64
            };
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            (precision, recall, f1, support)
        })
        .collect();
    Evaluation {
        routes: routes.to_vec(),
        accuracy: correct as f64 / labels.len().max(1) as f64,
        per_route,
        confusion,
    }
}

impl Evaluation {
    /// A plain-text report: accuracy, the per-route table and the confusion matrix.
    pub fn render(&self, name: &str) -> String {
        let mut out = format!("{name}: accuracy {:.4}\n", self.accuracy);
        out.push_str(&format!(
            "  {:<10} {:>9} {:>9} {:>9} {:>8}\n",
            "route", "precision", "recall", "f1", "support"
        ));
        for (route, (p, r, f, s)) in self.routes.iter().zip(&self.per_route) {
            out.push_str(&format!(
                "  {route:<10} {p:>9.4} {r:>9.4} {f:>9.4} {s:>8}\n"
            ));
        }
        out.push_str("  confusion (rows: true, columns: predicted)\n");
        out.push_str(&format!("  {:<10}", ""));
        for route in &self.routes {
            out.push_str(&format!(" {route:>8}"));
        }
        out.push('\n');
        for (route, row) in self.routes.iter().zip(&self.confusion) {
            out.push_str(&format!("  {route:<10}"));
            for count in row {
                out.push_str(&format!(" {count:>8}"));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_counts() {
        let routes = vec!["a".to_string(), "b".to_string()];
        // true a,a,a,b ; predicted a,b,a,b
        let e = evaluate(&routes, &[0, 0, 0, 1], &[0, 1, 0, 1]);
        assert_eq!(e.accuracy, 0.75);
        assert_eq!(e.confusion, vec![vec![2, 1], vec![0, 1]]);
        let (p, r, f, s) = e.per_route[1];
        assert_eq!((p, r, s), (0.5, 1.0, 1));
        assert!((f - 2.0 / 3.0).abs() < 1e-12);
        assert!(e.render("x").contains("accuracy 0.7500"));
    }
}
