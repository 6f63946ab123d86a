//! `hearth crds`: every CRD as multi-document YAML, the content of `crds/`.

use crate::api::check::all_crds;

/// The YAML of every Hearth CRD, each document starting with `---`.
pub fn render() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// File name under `crds/` for a CRD (`hearth.dev_imagebuilds.yaml`).
pub fn file_name(plural: &str) -> String {
    format!("hearth.dev_{plural}.yaml")
}
