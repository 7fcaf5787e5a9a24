//! The database back out as a config repository: each stored resource as the YAML document
//! that would produce it, at the path the layout gives its kind.
//!
//! Pure. The round trip (export → validate → plan) giving zero changes is what makes this
//! trustworthy; the CLI tests check exactly that.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::apply::{LABEL_GIT_COMMIT, LABEL_MANAGED_BY, LABEL_TARGET};
use crate::model::API_VERSION;
use crate::store::StoredResource;

/// The labels the author wrote, without the ones a sync adds to every row.
pub fn authored_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| {
            ![LABEL_MANAGED_BY, LABEL_GIT_COMMIT, LABEL_TARGET].contains(&key.as_str())
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The path, relative to the repository root, that `resource` is exported to.
pub fn export_path(resource: &StoredResource) -> String {
    format!("{}/{}.yaml", resource.kind.directory(), resource.name)
}

/// The YAML document for `resource`.
pub fn export_document(resource: &StoredResource) -> Result<String, serde_saphyr::ser::Error> {
    let labels = authored_labels(&resource.labels);
    let mut metadata = json!({ "name": resource.name });
    if !labels.is_empty() {
        metadata["labels"] = json!(labels);
    }
    let document: Value = json!({
        "apiVersion": API_VERSION,
        "kind": resource.kind.as_str(),
        "metadata": metadata,
        "spec": resource.spec,
    });
    serde_saphyr::to_string(&document)
}
