//! Summaries of a collection of shapes.
//! Deliberate error: `HashMap` is used without being imported (E0433/E0412).

use crate::geometry::{total_area, Shape};

/// Number of shapes per shape name.
pub fn count_by_name(shapes: &[Box<dyn Shape>]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for s in shapes {
        *counts.entry(s.name().to_string()).or_insert(0) += 1;
    }
    counts
}

/// One line per shape name, sorted, then the total area.
pub fn summary(shapes: &[Box<dyn Shape>]) -> String {
    let counts = count_by_name(shapes);
    let mut names: Vec<_> = counts.keys().cloned().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        out.push_str(&format!("{}: {}\n", name, counts[&name]));
    }
    out.push_str(&format!("total area: {:.2}\n", total_area(shapes)));
    out
}
