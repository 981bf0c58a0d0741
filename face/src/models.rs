//! Finding and loading the model set from a directory of manifests.

use std::path::{Path, PathBuf};

use crate::error::ModelError;
use crate::manifest::{Manifest, ModelKind};

/// The detector and embedder manifests a pipeline is built from.
#[derive(Debug, Clone)]
pub struct ModelSet {
    pub detector: Manifest,
    pub embedder: Manifest,
}

impl ModelSet {
    /// Reads every `*.toml` manifest in `dir` and picks the detector and the
    /// embedder: by id when given, else the only one of its kind.
    pub fn discover(dir: &Path, detector: Option<&str>, embedder: Option<&str>) -> Result<Self, ModelError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Read { path: dir.to_path_buf(), source })?;
        let mut manifests = Vec::new();
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            manifests.push(Manifest::load(&path)?);
        }
        let pick = |kind: ModelKind, id: Option<&str>| -> Result<Manifest, ModelError> {
            let of_kind: Vec<&Manifest> =
                manifests.iter().filter(|m| m.kind == kind && id.is_none_or(|id| m.id == id)).collect();
            match of_kind.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(ModelError::NotFound {
                    dir: dir.to_path_buf(),
                    wanted: match id {
                        Some(id) => format!("a {kind} with id {id:?}"),
                        None => format!("a {kind}"),
                    },
                }),
                several => Err(ModelError::Invalid {
                    path: dir.to_path_buf(),
                    message: format!(
                        "several {kind}s ({}); name one in the configuration",
                        several.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }),
            }
        };
        Ok(Self { detector: pick(ModelKind::Detector, detector)?, embedder: pick(ModelKind::Embedder, embedder)? })
    }
}

/// Where the models are when nothing says otherwise: `env_value` (the
/// `FACEGATE_MODELS` variable, read by the caller), then the installed copy,
/// then the source tree this binary was built from.
pub fn default_models_dir(env_value: Option<&str>) -> PathBuf {
    if let Some(dir) = env_value.filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let installed = PathBuf::from(INSTALLED_MODELS_DIR);
    if installed.is_dir() {
        return installed;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

/// Where packages (the Yocto recipe, say) install the models.
pub const INSTALLED_MODELS_DIR: &str = "/usr/share/facegate/models";
