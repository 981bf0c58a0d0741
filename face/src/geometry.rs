//! Points, boxes and the five-point landmark set, in image pixel coordinates.

use serde::{Deserialize, Serialize};

/// A point in image pixels (x right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    pub fn distance(self, other: Point) -> f32 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    pub fn midpoint(self, other: Point) -> Point {
        Point::new((self.x + other.x) * 0.5, (self.y + other.y) * 0.5)
    }
}

/// An axis-aligned box: top-left corner and size, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BoundingBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

impl BoundingBox {
    pub fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    pub fn center(&self) -> Point {
        Point::new(self.x + self.width * 0.5, self.y + self.height * 0.5)
    }

    /// Intersection over union; 0 for disjoint or degenerate boxes.
    pub fn iou(&self, other: &BoundingBox) -> f32 {
        let left = self.x.max(other.x);
        let top = self.y.max(other.y);
        let right = (self.x + self.width).min(other.x + other.width);
        let bottom = (self.y + self.height).min(other.y + other.height);
        let intersection = (right - left).max(0.0) * (bottom - top).max(0.0);
        let union = self.area() + other.area() - intersection;
        if union <= 0.0 { 0.0 } else { intersection / union }
    }

    /// The box scaled by `factor` about the origin (undoing a resize).
    pub fn scaled(&self, factor: f32) -> BoundingBox {
        BoundingBox { x: self.x * factor, y: self.y * factor, width: self.width * factor, height: self.height * factor }
    }
}

/// The five facial landmarks, image-left first: eye, eye, nose tip, mouth
/// corner, mouth corner. "Left" is the left of the image (the subject's right).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Landmarks(pub [Point; 5]);

impl Landmarks {
    pub const EYE_LEFT: usize = 0;
    pub const EYE_RIGHT: usize = 1;
    pub const NOSE: usize = 2;
    pub const MOUTH_LEFT: usize = 3;
    pub const MOUTH_RIGHT: usize = 4;

    pub fn eye_left(&self) -> Point {
        self.0[Self::EYE_LEFT]
    }
    pub fn eye_right(&self) -> Point {
        self.0[Self::EYE_RIGHT]
    }
    pub fn nose(&self) -> Point {
        self.0[Self::NOSE]
    }
    pub fn mouth_left(&self) -> Point {
        self.0[Self::MOUTH_LEFT]
    }
    pub fn mouth_right(&self) -> Point {
        self.0[Self::MOUTH_RIGHT]
    }

    /// Distance between the eye centres, the usual measure of face size.
    pub fn eye_distance(&self) -> f32 {
        self.eye_left().distance(self.eye_right())
    }

    /// The landmarks scaled by `factor` about the origin.
    pub fn scaled(&self, factor: f32) -> Landmarks {
        Landmarks(self.0.map(|p| Point::new(p.x * factor, p.y * factor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_boxes_is_one_and_of_disjoint_boxes_zero() {
        let a = BoundingBox { x: 10.0, y: 10.0, width: 20.0, height: 20.0 };
        let b = BoundingBox { x: 100.0, ..a };
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&b), 0.0);
        let half = BoundingBox { x: 20.0, ..a };
        assert!((a.iou(&half) - 200.0 / 600.0).abs() < 1e-6);
    }

    #[test]
    fn degenerate_box_has_zero_iou() {
        let a = BoundingBox { x: 0.0, y: 0.0, width: 0.0, height: 0.0 };
        assert_eq!(a.iou(&a), 0.0);
    }
}
