//! The few fields of Tekton's `tekton.dev/v1beta1` CustomRun that Hearth reads and writes.
//! Tekton owns the CRD: these types are never printed by `hearth crds` (schema disabled), and
//! fields Hearth does not model are ignored on read and left alone on write (status is merge
//! patched).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What Tekton asks of the custom task (the fields Hearth uses).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "tekton.dev",
    version = "v1beta1",
    kind = "CustomRun",
    plural = "customruns",
    namespaced,
    status = "RunStatus",
    derive = "Default",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct CustomRunSpec {
    /// The custom task by type: `apiVersion: hearth.dev/v1alpha1`, `kind: ImageBuild`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_ref: Option<CustomRef>,
    /// The custom task embedded (a Pipeline's `taskSpec`): its `spec` is an ImageBuild spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_spec: Option<EmbeddedSpec>,
    /// Params: each a string, an array of strings or an object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    /// `RunCancelled` when Tekton cancels the run (a user, or the PipelineRun's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why it was cancelled, in Tekton's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Longest the run may take (a Go duration, `1h0m0s`); unset or `0s` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `spec.customRef`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomRef {
    /// API version of the custom task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the custom task type.
    #[serde(default)]
    pub kind: String,
    /// A named object of that kind (not supported by Hearth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `spec.customSpec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedSpec {
    /// API version of the custom task type.
    #[serde(default)]
    pub api_version: String,
    /// Kind of the custom task type.
    #[serde(default)]
    pub kind: String,
    /// The embedded spec.
    #[serde(default)]
    pub spec: Value,
}

/// One param.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its value: a string, an array of strings, or an object.
    pub value: Value,
}

/// What Hearth reports on a CustomRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The `Succeeded` condition (knative style).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RunCondition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When Hearth started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `IMAGE_URL` and `IMAGE_DIGEST` once the image is built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RunResult>,
    /// The ImageBuild's name, phase, warmth, node and cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_fields: Option<Value>,
}

impl RunStatus {
    /// The value of a result, by name.
    pub fn result(&self, name: &str) -> Option<&str> {
        self.results
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.value.as_str())
    }
}

/// A knative condition, as Tekton reads it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunCondition {
    /// Always `Succeeded` here.
    #[serde(rename = "type")]
    pub type_: String,
    /// `Unknown` while running, then `True` or `False`.
    pub status: String,
    /// One word, CamelCase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// One result.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RunResult {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}
