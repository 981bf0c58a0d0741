//! Templates: L2-normalised embeddings tagged with the model that made them.

use serde::{Deserialize, Serialize};

use crate::error::FaceError;

/// A face template. `vector` has unit length; `model_id` names the embedder
/// (templates of different models are never compared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub model_id: String,
    pub vector: Vec<f32>,
}

impl Template {
    /// Normalises `vector` to unit length. `None` for a zero or non-finite vector.
    pub fn from_embedding(model_id: impl Into<String>, mut vector: Vec<f32>) -> Option<Self> {
        normalize(&mut vector).then(|| Self { model_id: model_id.into(), vector })
    }

    /// Cosine similarity in [-1, 1]; higher means more alike.
    pub fn similarity(&self, other: &Template) -> Result<f32, FaceError> {
        if self.model_id != other.model_id {
            return Err(FaceError::ModelMismatch { left: self.model_id.clone(), right: other.model_id.clone() });
        }
        if self.vector.len() != other.vector.len() {
            return Err(FaceError::Dimension {
                model: self.model_id.clone(),
                expected: self.vector.len(),
                actual: other.vector.len(),
            });
        }
        Ok(crate::matcher::dot(&self.vector, &other.vector))
    }

    /// Euclidean distance between the unit vectors (dlib's measure).
    pub fn distance(&self, other: &Template) -> Result<f32, FaceError> {
        self.similarity(other).map(similarity_to_distance)
    }

    /// Little-endian f32 bytes of the vector (for storage and the wire).
    pub fn vector_bytes(&self) -> Vec<u8> {
        self.vector.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Rebuilds a template from `vector_bytes`; refuses wrong lengths and
    /// vectors that are not unit length.
    pub fn from_vector_bytes(model_id: impl Into<String>, bytes: &[u8], dim: usize) -> Result<Self, FaceError> {
        let model_id = model_id.into();
        if bytes.len() != dim * 4 {
            return Err(FaceError::Dimension { model: model_id, expected: dim, actual: bytes.len() / 4 });
        }
        let vector: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let norm = crate::matcher::dot(&vector, &vector);
        if !(norm.is_finite() && (norm - 1.0).abs() < 1e-3) {
            return Err(FaceError::Dimension { model: model_id, expected: dim, actual: 0 });
        }
        Ok(Self { model_id, vector })
    }
}

/// Scales `v` to unit length; false when that is impossible.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = crate::matcher::dot(v, v).sqrt();
    if !(norm.is_finite() && norm > 1e-12) {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// Euclidean distance between unit vectors with cosine similarity `s`.
pub fn similarity_to_distance(s: f32) -> f32 {
    (2.0 - 2.0 * s).max(0.0).sqrt()
}

/// Cosine similarity of unit vectors at Euclidean distance `d`.
pub fn distance_to_similarity(d: f32) -> f32 {
    1.0 - d * d * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_of_different_models_are_not_compared() {
        let a = Template::from_embedding("m1", vec![1.0, 0.0]).unwrap();
        let b = Template::from_embedding("m2", vec![1.0, 0.0]).unwrap();
        assert!(matches!(a.similarity(&b), Err(FaceError::ModelMismatch { .. })));
    }

    #[test]
    fn similarity_and_distance_agree() {
        let a = Template::from_embedding("m", vec![3.0, 4.0]).unwrap();
        let b = Template::from_embedding("m", vec![4.0, 3.0]).unwrap();
        let s = a.similarity(&b).unwrap();
        assert!((s - 0.96).abs() < 1e-6);
        let d = a.distance(&b).unwrap();
        assert!((distance_to_similarity(d) - s).abs() < 1e-6);
    }

    #[test]
    fn zero_vector_is_not_a_template() {
        assert!(Template::from_embedding("m", vec![0.0; 8]).is_none());
        assert!(Template::from_embedding("m", vec![f32::NAN; 8]).is_none());
    }

    #[test]
    fn vector_bytes_round_trip_and_reject_garbage() {
        let t = Template::from_embedding("m", vec![1.0, 2.0, 3.0]).unwrap();
        let back = Template::from_vector_bytes("m", &t.vector_bytes(), 3).unwrap();
        assert_eq!(t, back);
        assert!(Template::from_vector_bytes("m", &[0u8; 11], 3).is_err());
        assert!(Template::from_vector_bytes("m", &[0u8; 12], 3).is_err());
    }
}
