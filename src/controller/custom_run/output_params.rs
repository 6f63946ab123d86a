//! The custom task's params for what goes beyond the image itself: extra tags, annotations,
//! attestations and registry caches (`TAGS`, `ANNOTATIONS`, `SBOM`, `PROVENANCE`,
//! `CACHE_FROM`, `CACHE_TO`, `CACHE_TO_MODE`), read into the ImageBuild spec.

use super::{Params, Refusal};
use crate::api::{ExportMode, ImageBuildSpec, ProvenanceMode, RegistryCache, RegistryExport};

impl Params {
    pub(super) fn apply_output(&self, spec: &mut ImageBuildSpec) -> Result<(), Refusal> {
        let tags = self.array("TAGS")?;
        if !tags.is_empty() {
            spec.output.tags = tags;
        }
        for a in self.array("ANNOTATIONS")? {
            let Some((k, v)) = a.split_once('=') else {
                return Err(Refusal::invalid(
                    "ANNOTATIONS",
                    format!("{a:?} is not [LEVEL:]KEY=VALUE"),
                ));
            };
            spec.output.annotations.insert(k.to_string(), v.to_string());
        }
        if let Some(sbom) = self.string("SBOM")? {
            spec.output.attestations.sbom = match sbom.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(Refusal::invalid(
                        "SBOM",
                        format!("{sbom:?}: expected true or false"),
                    ))
                }
            };
        }
        if let Some(mode) = self.string("PROVENANCE")? {
            spec.output.attestations.provenance.mode = match mode.as_str() {
                "min" => ProvenanceMode::Min,
                "max" => ProvenanceMode::Max,
                "disabled" => ProvenanceMode::Disabled,
                _ => {
                    return Err(Refusal::invalid(
                        "PROVENANCE",
                        format!("{mode:?}: expected min, max or disabled"),
                    ))
                }
            };
        }
        let mut registry = spec.cache.registry.clone().unwrap_or_default();
        let import_from = self.array("CACHE_FROM")?;
        if !import_from.is_empty() {
            registry.import_from = import_from;
        }
        let mode = match self.string("CACHE_TO_MODE")?.as_deref() {
            None | Some("min") => ExportMode::Min,
            Some("max") => ExportMode::Max,
            Some(other) => {
                return Err(Refusal::invalid(
                    "CACHE_TO_MODE",
                    format!("{other:?}: expected min or max"),
                ))
            }
        };
        if let Some(reference) = self.string("CACHE_TO")? {
            registry.export_to = Some(RegistryExport { reference, mode });
        }
        if registry != RegistryCache::default() {
            spec.cache.registry = Some(registry);
        }
        Ok(())
    }
}
