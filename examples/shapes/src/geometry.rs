//! Shapes and the trait they share.

/// Anything with an area and a name.
pub trait Shape {
    fn area(&self) -> f64;
    fn name(&self) -> &str;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Circle {
    pub radius: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rect {
    pub width: f64,
    pub height: f64,
}

impl Circle {
    pub fn new(radius: f64) -> Self {
        Circle { radius }
    }
}

impl Shape for Circle {
    fn area(&self) -> f64 {
        std::f64::consts::PI * self.radius * self.radius
    }
    fn name(&self) -> &str {
        "circle"
    }
}

impl Shape for Rect {
    fn area(&self) -> f64 {
        self.width * self.height
    }
    fn name(&self) -> &str {
        "rect"
    }
}

/// Sum of the areas of all shapes.
pub fn total_area(shapes: &[Box<dyn Shape>]) -> f64 {
    shapes.iter().map(|s| s.area()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circle_area() {
        assert!((Circle::new(1.0).area() - std::f64::consts::PI).abs() < 1e-9);
    }
}
